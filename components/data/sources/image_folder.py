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
only the PNG and JPEG decoders are ever run on them. Everything else found is listed in
``raw.skipped`` with its reason (other formats, hidden files, symlinks leaving the folder, ...).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from components.data.errors import DataError
from components.data.types import Quarantined, RawDataset, RawSplit

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "image_folder", "scan_image_folder"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
#: Images of other formats: skipped with a reason that names the format (Pillow's other decoders are
#: never run on user files, see _DECODERS)
OTHER_IMAGE_EXTENSIONS = frozenset({".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".ppm",
                                    ".pgm", ".pbm", ".ico", ".jp2", ".svg"})
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


def scan_image_folder(root: str | Path) -> tuple[list[tuple[str, list[Path]]], list[Quarantined]]:
    """The classes of ``root`` and the PNG/JPEG files of each, plus every entry skipped and why.

    Reads directory entries only (no image is opened), so the CLI runs it before anything starts: a
    folder that is not one, with no class folders, a class without images or a class name that is
    not UTF-8 raises DataError naming it. Skipped, each listed with its reason: hidden files and
    folders, other formats (.gif, .webp, .bmp, ...), symlinks that leave ``root`` (a linked file or
    class folder outside it must not become training data), symlink loops, devices, FIFOs and
    sockets, unreadable folders, files beside the class folders.
    """
    root = Path(root).expanduser()
    if root.is_file():
        raise DataError(f"data.path {root} is a file; data=image_folder needs a folder with one sub-folder "
                        f"per class.")
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a directory.")
    real_root = root.resolve()
    skipped: list[Quarantined] = []
    classes: list[tuple[str, list[Path]]] = []
    for entry in _entries(root, skipped):
        reason = _outside(entry, real_root) or _hidden(entry)
        if reason or not entry.is_dir():
            skipped.append(Quarantined(shown(entry), reason or "a file beside the class folders, not inside one"))
            continue
        name = shown(Path(entry.name))
        if name != entry.name:
            raise DataError(f"Class folder {shown(entry)} has a name that is not valid UTF-8; rename it (class "
                            f"names are stored as text).")
        files: list[Path] = []
        _walk(entry, real_root, files, skipped, {entry.resolve()})
        if not files:
            raise DataError(f"Class {name!r} in {root} has no usable images: it contains no .png/.jpg/.jpeg "
                            f"files.")
        classes.append((name, sorted(files)))
    if not classes:
        raise DataError(f"Image folder {root} has no class sub-folders (expected one folder per class).")
    return classes, skipped


def shown(path: Path) -> str:
    """``path`` as text that can be written anywhere: bytes that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _entries(folder: Path, skipped: list[Quarantined]) -> list[Path]:
    try:
        return sorted(folder.iterdir(), key=lambda p: os.fsencode(p.name))
    except OSError as err:
        skipped.append(Quarantined(shown(folder), f"unreadable folder ({type(err).__name__}: {err.strerror})"))
        return []


def _outside(path: Path, real_root: Path) -> str:
    if not path.is_symlink():
        return ""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop on older Pythons
        return f"broken or looping symlink ({type(err).__name__})"
    if not target.is_relative_to(real_root):
        return f"symlink to {shown(target)}, outside the dataset folder"
    return ""


def _hidden(path: Path) -> str:
    return f"hidden {'folder' if path.is_dir() else 'file'}" if path.name.startswith(".") else ""


def _walk(folder: Path, real_root: Path, files: list[Path], skipped: list[Quarantined], seen: set[Path]) -> None:
    for entry in _entries(folder, skipped):
        reason = _outside(entry, real_root) or _hidden(entry)
        if not reason and entry.is_dir():
            real = entry.resolve()
            if real in seen:
                reason = f"symlink loop (back to {shown(real)})"
            else:
                _walk(entry, real_root, files, skipped, seen | {real})
                continue
        if not reason:
            reason = _not_an_image(entry)
        if reason:
            skipped.append(Quarantined(shown(entry), reason))
        else:
            files.append(entry)


def _not_an_image(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError as err:
        return f"cannot read file ({type(err).__name__}: {err.strerror})"
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        return f"{kind}, not an image file"
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return ""
    if suffix in OTHER_IMAGE_EXTENSIONS:
        return f"a {suffix[1:].upper()} image: only PNG and JPEG are read (convert it)"
    return "not a .png/.jpg/.jpeg file"


def image_folder(
    root: str | Path,
    image_size: int,
    channels: int,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> RawDataset:
    """Images in ``root/<class>/...`` resized to ``image_size`` squared with ``channels`` (1 or 3).

    Classes are the sorted sub-folder names; files with a .png/.jpg/.jpeg extension are read
    recursively (:func:`scan_image_folder`: what is skipped, and why, is listed in ``skipped``).
    Unusable files (empty, undecodable, truncated, over ``max_bytes`` or ``max_pixels``) are not
    fatal: they are listed in ``quarantine`` with a reason.  Returns ``{"all": ...}``.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}.")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}.")
    root = Path(root).expanduser()
    classes, skipped = scan_image_folder(root)

    # The output depends on the resize settings as well as the bytes, so they are part of
    # the fingerprint: changing image_size must produce a new dataset version.
    fingerprint = hashlib.sha256(f"image_folder:v1:{image_size}:{channels}:bilinear:".encode())
    images: list[np.ndarray] = []
    labels: list[int] = []
    quarantine: list[Quarantined] = []
    for label, (name, files) in enumerate(classes):
        usable = 0
        first_reason = ""
        for file in files:
            # os.fsencode: a name that is not UTF-8 is still a name (its bytes), not a crash
            fingerprint.update(os.fsencode(file.relative_to(root).as_posix()) + b"\0")
            result = _read_and_decode(file, image_size, channels, max_bytes, max_pixels, fingerprint)
            if isinstance(result, str):
                quarantine.append(Quarantined(path=shown(file), reason=result))
                first_reason = first_reason or result
            else:
                images.append(result)
                labels.append(label)
                usable += 1
        if usable == 0:
            raise DataError(f"Class {name!r} in {root} has no usable images: all {len(files)} image files were "
                            f"quarantined, e.g. {first_reason}.")
    split = RawSplit(images=np.stack(images), labels=np.asarray(labels, dtype=np.int64))
    return RawDataset(
        name="image_folder",
        classes=tuple(name for name, _ in classes),
        splits={"all": split},
        source=str(root.resolve()),
        fingerprint=fingerprint.hexdigest(),
        quarantine=tuple(quarantine),
        skipped=tuple(skipped),
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
