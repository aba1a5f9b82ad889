"""Your own segmentation data in the common on-disk layout: ``images/NAME.png|jpg`` with ``masks/NAME.png``
beside them, resized to ``image_size`` squared (images bilinearly, masks by nearest neighbour).

    root/images/0001.jpg   root/masks/0001.png      # the mask: one class id per pixel
    root/images/0002.png   root/masks/0002.png
    root/classes.txt                                # optional: one name per line, for ids 0, 1, 2, ...

    from components.data.sources import mask_folder

    raw = mask_folder("/data/streets", image_size=64, channels=3)
    raw.classes                    # the names of ids 1.. (id 0 is background), e.g. ("road", "car")
    raw.splits["all"].masks[0]     # (64, 64) uint8 class ids; 255 (void) is kept and ignored by the metrics
    raw.quarantine                 # pairs that could not be used, each with its reason

or ``visionray run segment data=mask_folder data.path=/data/streets``. A mask is a palette PNG (its indices
are the ids, as Pascal VOC ships them) or a greyscale PNG whose grey levels are the ids; an RGB mask is
ambiguous and quarantined. Without ``classes.txt`` the ids found are named ``class_1``, ``class_2``, ...
Pairs that cannot be used are quarantined, not fatal: an image without a mask, a mask whose size differs
from its image's, an undecodable file, or ids beyond ``classes.txt``. ``labels`` is the class of the
largest region (0 for an all-background mask), so the shard writer can stratify the split.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from components.data.errors import DataError
from components.data.sources.image_folder import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    _load_image,
)
from components.data.types import IGNORE_INDEX, Quarantined, RawDataset, RawSplit

__all__ = ["mask_folder", "read_mask"]


def read_mask(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray | str:
    """A palette or greyscale PNG → (H, W) uint8 class ids at its own size, or why it cannot be used."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=("PNG",)) as img:
                if img.size[0] * img.size[1] > max_pixels:
                    return f"mask is {img.size[0]}x{img.size[1]} pixels, over the {max_pixels}-pixel limit"
                img.load()
                if img.mode not in ("P", "L"):
                    return f"mask is a {img.mode} image; expected a palette or greyscale PNG of class ids"
                return np.asarray(img, dtype=np.uint8).copy()  # a P image's array holds its palette indices
    except Image.UnidentifiedImageError:
        return "mask is not a decodable PNG"
    except Exception as err:  # decoders raise many types; none may kill the run
        return f"cannot decode mask ({type(err).__name__}: {err})"


def _image_size_of(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as img:
            return img.size
    except Exception:
        return None


def _class_names(root: Path) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path} cannot be read as UTF-8 text ({err}).") from err
    if len(names) < 2:
        raise DataError(f"{path} names {len(names)} class(es); it needs background (id 0) and at least one more.")
    return names


def mask_folder(root: str | Path, image_size: int, channels: int) -> RawDataset:
    """Image/mask pairs under ``root`` resized to ``image_size`` with ``channels`` (1 or 3); ``{"all": ...}``."""
    root = Path(root).expanduser()
    if not (root / "images").is_dir() or not (root / "masks").is_dir():
        raise DataError(f"Mask folder {root} needs an images/ and a masks/ sub-folder.")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}.")
    names = _class_names(root)
    files = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    fingerprint = hashlib.sha256(f"mask_folder:v1:{image_size}:{channels}:{names}".encode())
    images, masks, quarantine = [], [], []
    for file in files:
        mask_file = root / "masks" / f"{file.stem}.png"
        if not mask_file.is_file():
            quarantine.append(Quarantined(str(file), f"no mask {mask_file.relative_to(root)}"))
            continue
        try:
            data, mask_data = file.read_bytes(), mask_file.read_bytes()
        except OSError as err:
            quarantine.append(Quarantined(str(file), f"cannot read the pair ({err})"))
            continue
        fingerprint.update(file.name.encode() + b"\0" + hashlib.sha256(data).digest()
                           + hashlib.sha256(mask_data).digest())
        image = _load_image(data, image_size, channels, DEFAULT_MAX_PIXELS) if data else "empty file (0 bytes)"
        mask = read_mask(mask_data)
        reason = image if isinstance(image, str) else mask if isinstance(mask, str) else None
        if reason is None and _image_size_of(data) != (mask.shape[1], mask.shape[0]):
            reason = f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {'x'.join(map(str, _image_size_of(data)))}"
        if reason is None and names is not None:
            ids = np.unique(mask)
            beyond = ids[(ids >= len(names)) & (ids != IGNORE_INDEX)]
            if len(beyond):
                reason = f"mask has class id {int(beyond[0])}, beyond the {len(names)} names of classes.txt"
        if reason is not None:
            quarantine.append(Quarantined(str(file), reason))
            continue
        resized = Image.fromarray(mask).resize((image_size, image_size), Image.Resampling.NEAREST)
        images.append(image)
        masks.append(np.asarray(resized, dtype=np.uint8))
    if not images:
        first = f", e.g. {quarantine[0].path}: {quarantine[0].reason}" if quarantine else ""
        raise DataError(f"Mask folder {root} has no usable image/mask pair{first}.")
    mask_array = np.stack(masks)
    if names is None:
        found = mask_array[mask_array != IGNORE_INDEX]
        names = ["background"] + [f"class_{k}" for k in range(1, max(int(found.max(initial=0)), 1) + 1)]
    # label: the class of the largest region (ids 1..K-1 → 0..K-2), so the split can stratify
    counts = np.stack([(mask_array == k).sum((1, 2)) for k in range(1, len(names))], 1)
    labels = np.where(counts.max(1) > 0, counts.argmax(1), 0).astype(np.int64)
    split = RawSplit(images=np.stack(images), labels=labels, masks=mask_array)
    return RawDataset(name="mask_folder", classes=tuple(names[1:]), splits={"all": split},
                      source=str(root.resolve()), fingerprint=fingerprint.hexdigest(), quarantine=tuple(quarantine))
