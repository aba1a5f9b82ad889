"""Your own images: ``root/<class>/...`` PNG or JPEG files of any size, one sub-folder per class,
resized to ``image_size`` squared with 1 (greyscale) or 3 (RGB) channels.

    from components.data.sources import image_folder

    raw = image_folder("/data/pets", image_size=64, channels=3)
    raw.classes                     # the sorted sub-folder names, e.g. ("cat", "dog")
    raw.splits["all"].images.shape  # (N, 64, 64, 3); the shard writer splits train/val/test
    raw.quarantine                  # the files that could not be used, each with its reason

or from the command line: ``visionray run train data=image_folder data.path=~/photos``
(``data.image_size`` and ``data.channels`` default to 32 and 3).  Unusable files (empty,
truncated, undecodable, over ``max_bytes`` or ``max_pixels``) are quarantined, not fatal;
only the PNG and JPEG decoders are ever run on them.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from components.data.errors import DataError
from components.data.types import Quarantined, RawDataset, RawSplit

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "image_folder"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000
# Only these decoders are ever run on user files: smaller attack surface than "anything
# Pillow can open" (some formats shell out to external programs).
_DECODERS = ("PNG", "JPEG")


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to L (channels=1) or RGB (channels=3)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: Pillow's convert("L") clips at 255 (mostly white); keep the top byte.
        arr = np.asarray(img).astype(np.int64).clip(0, 65535) >> 8
        img = Image.fromarray(arr.astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.asarray(img).clip(0, 255).astype(np.uint8), "L")
    # Alpha is dropped (Pillow's default), not composited.
    return img.convert("L" if channels == 1 else "RGB")


def _load_image(data: bytes, image_size: int, channels: int, max_pixels: int) -> np.ndarray | str:
    """Decoded, converted, resized HxWxC uint8 array, or the reason the file is unusable."""
    # Truncated files must fail, not be padded with grey; set here so an import elsewhere
    # that flips the global cannot make us accept them.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            # We enforce our own (lower) pixel limit below; Pillow's warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_DECODERS) as img:
                width, height = img.size  # header only: nothing decoded yet
                if width * height > max_pixels:
                    pixels = width * height
                    return f"image is {width}x{height} = {pixels} pixels, over the {max_pixels}-pixel limit"
                img.load()
                out = ImageOps.exif_transpose(img) or img  # honour camera rotation
                out = _to_mode(out, channels)
                out = out.resize((image_size, image_size), Image.Resampling.BILINEAR)
                arr = np.asarray(out, dtype=np.uint8)
    except Image.DecompressionBombError as err:
        return f"image exceeds Pillow's decompression-bomb limit ({err})"
    except Image.UnidentifiedImageError:
        return "not a decodable PNG or JPEG image"
    except Exception as err:  # decoders raise many types; none of them may kill the run
        return f"cannot decode image ({type(err).__name__}: {err})"
    return arr[..., np.newaxis] if arr.ndim == 2 else arr


def image_folder(
    root: str | Path,
    image_size: int,
    channels: int,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> RawDataset:
    """Images in ``root/<class>/...`` resized to ``image_size`` squared with ``channels`` (1 or 3).

    Classes are the sorted sub-folder names (hidden folders skipped); files with a
    .png/.jpg/.jpeg extension are read recursively, other files are ignored.  Unusable
    files (empty, undecodable, truncated, over ``max_bytes`` or ``max_pixels``) are not
    fatal: they are listed in ``quarantine`` with a reason.  Returns ``{"all": ...}``.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}.")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a directory.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"Image folder {root} has no class sub-folders (expected one folder per class).")

    # The output depends on the resize settings as well as the bytes, so they are part of
    # the fingerprint: changing image_size must produce a new dataset version.
    fingerprint = hashlib.sha256(f"image_folder:v1:{image_size}:{channels}:bilinear:".encode())
    images: list[np.ndarray] = []
    labels: list[int] = []
    quarantine: list[Quarantined] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
            and p.is_file()
        )
        usable = 0
        first_reason = ""
        for file in files:
            fingerprint.update(file.relative_to(root).as_posix().encode() + b"\0")
            result = _read_and_decode(file, image_size, channels, max_bytes, max_pixels, fingerprint)
            if isinstance(result, str):
                quarantine.append(Quarantined(path=str(file), reason=result))
                first_reason = first_reason or result
            else:
                images.append(result)
                labels.append(label)
                usable += 1
        if usable == 0:
            detail = (
                f"all {len(files)} image files were quarantined, e.g. {first_reason}"
                if files
                else "it contains no .png/.jpg/.jpeg files"
            )
            raise DataError(f"Class {class_dir.name!r} in {root} has no usable images: {detail}.")
    split = RawSplit(images=np.stack(images), labels=np.asarray(labels, dtype=np.int64))
    return RawDataset(
        name="image_folder",
        classes=tuple(p.name for p in class_dirs),
        splits={"all": split},
        source=str(root.resolve()),
        fingerprint=fingerprint.hexdigest(),
        quarantine=tuple(quarantine),
    )


def _read_and_decode(
    file: Path, image_size: int, channels: int, max_bytes: int, max_pixels: int, fingerprint: Any
) -> np.ndarray | str:
    try:
        size = file.stat().st_size
    except OSError as err:
        return f"cannot read file ({err})"
    fingerprint.update(str(size).encode() + b"\0")
    if size == 0:
        return "empty file (0 bytes)"
    if size > max_bytes:
        # Not read at all: the size check protects memory, so the size stands in for content.
        return f"file is {size} bytes, over the {max_bytes}-byte limit"
    try:
        data = file.read_bytes()
    except OSError as err:
        return f"cannot read file ({err})"
    fingerprint.update(hashlib.sha256(data).digest())
    return _load_image(data, image_size, channels, max_pixels)
