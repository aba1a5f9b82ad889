"""COCO-format caption files (``captions_train2014.json`` and anything laid out like it: Flickr8k/30k
conversions, nocaps, your own), for users who have them on disk.

    from components.data.sources import coco_captions

    data, quarantine = coco_captions("~/coco/annotations/captions_val2014.json", "~/coco/val2014",
                                     image_size=64, channels=3, limit=5000)
    data.images.shape          # (5000, 64, 64, 3) uint8
    data.captions[0]           # all of that image's captions, e.g. ("A man riding a wave.", ...): BLEU's references
    quarantine                 # [Quarantined(path, reason), ...]: missing or undecodable files, not fatal

The annotation file is ``{"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "caption"}, ...]}``;
images keep the file's order and each keeps every caption given for it (whitespace collapsed).  Files are
decoded exactly as ``image_folder`` decodes them (PNG/JPEG only, size and pixel limits, EXIF rotation, bilinear
resize to a square); a file that is missing, unreadable or undecodable, or an image without a caption, is
quarantined with its reason.  A malformed annotation file raises ``DataError`` naming it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from components.data.errors import DataError
from components.data.sources.image_folder import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    _read_and_decode,
)
from components.data.types import Quarantined

__all__ = ["CocoCaptions", "coco_captions"]


@dataclass(frozen=True)
class CocoCaptions:
    """Decoded images (N, S, S, C) uint8, every caption of each, their COCO ids and file names, and a sha256
    of the content (pixels' source bytes, captions, resize settings) to version a dataset built from them."""

    images: np.ndarray
    captions: tuple[tuple[str, ...], ...]
    image_ids: np.ndarray
    file_names: tuple[str, ...]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.images)


def _load_annotations(path: Path) -> tuple[list[tuple[int, str]], dict[int, list[str]]]:
    """[(image id, file name)] in file order and {image id: [captions]}, or a DataError naming ``path``."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"Caption annotation file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"Caption annotation file {path} is not readable JSON ({err}).") from err

    def malformed(what: str) -> DataError:
        return DataError(f"Caption annotation file {path} is malformed: {what}.")

    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("annotations"), list):
        raise malformed('expected an object with "images" and "annotations" lists')
    images: list[tuple[int, str]] = []
    seen: set[int] = set()
    for i, entry in enumerate(doc["images"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) \
                or not isinstance(entry.get("file_name"), str):
            raise malformed(f'images[{i}] needs an integer "id" and a string "file_name"')
        if entry["id"] in seen:
            raise malformed(f"image id {entry['id']} appears twice in images")
        seen.add(entry["id"])
        images.append((entry["id"], entry["file_name"]))
    captions: dict[int, list[str]] = {}
    for i, entry in enumerate(doc["annotations"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("image_id"), int) \
                or not isinstance(entry.get("caption"), str):
            raise malformed(f'annotations[{i}] needs an integer "image_id" and a string "caption"')
        captions.setdefault(entry["image_id"], []).append(" ".join(entry["caption"].split()))
    return images, captions


def coco_captions(annotations_json: str | Path, images_dir: str | Path, image_size: int, channels: int = 3,
                  limit: int = 0, *, max_bytes: int = DEFAULT_MAX_BYTES,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[CocoCaptions, list[Quarantined]]:
    """The captioned images of a COCO-format ``annotations_json`` whose ``file_name``s are relative to
    ``images_dir``, resized to ``image_size`` squared with ``channels`` (1 or 3); at most ``limit`` usable
    images (0: all).  Returns the data and the quarantined files."""
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}.")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}.")
    annotations_json, images_dir = Path(annotations_json).expanduser(), Path(images_dir).expanduser()
    if not images_dir.is_dir():
        raise DataError(f"Caption images folder {images_dir} does not exist or is not a directory.")
    entries, captions_of = _load_annotations(annotations_json)

    fingerprint = hashlib.sha256(f"coco_captions:v1:{image_size}:{channels}:bilinear:".encode())
    images: list[np.ndarray] = []
    kept: list[tuple[int, str, tuple[str, ...]]] = []
    quarantine: list[Quarantined] = []
    for image_id, file_name in entries:
        if limit and len(kept) >= limit:
            break
        file = images_dir / file_name
        # A file name is data from the annotation file: it may name sub-folders but never leave images_dir.
        # Checked on the name, not the resolved path, so an images folder of symlinks still works.
        name = PurePosixPath(file_name.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts:
            quarantine.append(Quarantined(path=str(file), reason="file name points outside the images folder"))
            continue
        captions = tuple(captions_of.get(image_id, ()))
        if not captions:
            quarantine.append(Quarantined(path=str(file), reason=f"image id {image_id} has no caption"))
            continue
        if not file.is_file():
            quarantine.append(Quarantined(path=str(file), reason="file not found"))
            continue
        fingerprint.update(file_name.encode() + b"\0" + "\0".join(captions).encode() + b"\0")
        result = _read_and_decode(file, image_size, channels, max_bytes, max_pixels, fingerprint)
        if isinstance(result, str):
            quarantine.append(Quarantined(path=str(file), reason=result))
            continue
        images.append(result)
        kept.append((image_id, file_name, captions))
    data = CocoCaptions(
        images=np.stack(images) if images else np.zeros((0, image_size, image_size, channels), np.uint8),
        captions=tuple(c for _, _, c in kept),
        image_ids=np.array([i for i, _, _ in kept], dtype=np.int64),
        file_names=tuple(f for _, f, _ in kept),
        fingerprint=fingerprint.hexdigest(),
    )
    return data, quarantine
