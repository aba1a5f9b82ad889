"""COCO-format detection files (``instances_val2017.json`` and anything laid out like it) with their image
folder, for users who have them on disk: images resized to a square, boxes scaled with them.

    from components.data.sources import coco

    raw = coco("~/coco/annotations/instances_val2017.json", "~/coco/val2017", image_size=128)
    split = raw.splits["all"]           # the shard writer carves train/val/test out of it
    split.boxes[0], split.box_labels[0] # (K, 4) x1 y1 x2 y2 pixels of the resized image; (K,), -1 padding
    raw.classes                         # category names, in category-id order
    raw.quarantine                      # [Quarantined(path, reason), ...]: not fatal

The annotation file is ``{"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "category_id",
"bbox": [x, y, w, h], "iscrowd"?}], "categories": [{"id", "name"}]}``. Files decode as ``image_folder``
decodes them (PNG/JPEG, size and pixel limits, bilinear resize to a square; boxes are scaled by the file's
own width and height). Crowd regions (``iscrowd: 1``) are left out, as COCO's evaluation ignores them. An
image is quarantined with its reason when its file is missing, unreadable or undecodable, or when one of
its boxes lies outside it (beyond a pixel of rounding, which is clipped) or has no area: its objects would
be wrong, and training on a half-labelled image teaches the detector to miss what it shows. An image
without objects is kept (a negative). A malformed annotation file raises ``DataError`` naming it.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path, PurePosixPath

import numpy as np

from components.data.errors import DataError
from components.data.sources.image_folder import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    _read_and_decode,
)
from components.data.types import Quarantined, RawDataset, RawSplit

__all__ = ["coco"]

#: How far (pixels of the original image) a box may stick out before it counts as outside: COCO's own
#: boxes overshoot by a fraction of a pixel from polygon rounding.
EDGE_TOLERANCE = 1.0


def _load(path: Path) -> tuple[list[dict], dict[int, list[dict]], list[tuple[int, str]]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"COCO annotation file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"COCO annotation file {path} is not readable JSON ({err}).") from err

    def malformed(what: str) -> DataError:
        return DataError(f"COCO annotation file {path} is malformed: {what}.")

    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations",
                                                                                   "categories")):
        raise malformed('expected an object with "images", "annotations" and "categories" lists')
    categories = []
    for i, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise malformed(f'categories[{i}] needs an integer "id" and a string "name"')
        categories.append((c["id"], c["name"]))
    if len({c for c, _ in categories}) != len(categories) or len(categories) < 1:
        raise malformed("category ids must be unique, and there must be at least one")
    for i, entry in enumerate(doc["images"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) \
                or not isinstance(entry.get("file_name"), str):
            raise malformed(f'images[{i}] needs an integer "id" and a string "file_name"')
    objects: dict[int, list[dict]] = {}
    for i, a in enumerate(doc["annotations"]):
        box = a.get("bbox") if isinstance(a, dict) else None
        if not isinstance(a, dict) or not isinstance(a.get("image_id"), int) or not isinstance(a.get("category_id"), int) \
                or not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise malformed(f'annotations[{i}] needs an integer "image_id" and "category_id" and a "bbox" of 4 numbers')
        objects.setdefault(a["image_id"], []).append(a)
    return doc["images"], objects, sorted(categories)


def _original_size(file: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(file.read_bytes())) as img:  # the header only
        return img.size


def _boxes(objects: list[dict], index: dict[int, int], width: int, height: int, scale: float | tuple[float, float]
           ) -> tuple[np.ndarray, np.ndarray] | str:
    """Each non-crowd object's box in resized pixels and its class, or why the image cannot be used."""
    sx, sy = scale
    boxes, labels = [], []
    for a in objects:
        if a.get("iscrowd"):
            continue
        if a["category_id"] not in index:
            return f"annotation {a.get('id', '?')} has category {a['category_id']}, which is not in categories"
        x, y, w, h = (float(v) for v in a["bbox"])
        if w <= 0 or h <= 0:
            return f"annotation {a.get('id', '?')} has a box of no area {a['bbox']}"
        if x < -EDGE_TOLERANCE or y < -EDGE_TOLERANCE or x + w > width + EDGE_TOLERANCE \
                or y + h > height + EDGE_TOLERANCE:
            return f"annotation {a.get('id', '?')} has a box {a['bbox']} outside the {width}x{height} image"
        x1, y1 = max(x, 0.0), max(y, 0.0)
        x2, y2 = min(x + w, float(width)), min(y + h, float(height))
        boxes.append([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
        labels.append(index[a["category_id"]])
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def coco(annotations_json: str | Path, images_dir: str | Path | None, image_size: int, channels: int = 3, *,
         max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> RawDataset:
    """The detection set of a COCO-format ``annotations_json``; ``file_name``s are relative to ``images_dir``
    (None: the annotation file's folder). Images resized to ``image_size`` squared with ``channels``."""
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"image_size must be an integer >= 8, got {image_size!r}.")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}.")
    annotations_json = Path(annotations_json).expanduser()
    images_dir = Path(images_dir).expanduser() if images_dir else annotations_json.parent
    if not images_dir.is_dir():
        raise DataError(f"COCO images folder {images_dir} does not exist or is not a directory.")
    entries, objects, categories = _load(annotations_json)
    index = {cid: k for k, (cid, _) in enumerate(categories)}
    fingerprint = hashlib.sha256(f"coco:v1:{image_size}:{channels}:bilinear:".encode())
    fingerprint.update(json.dumps(categories).encode())
    images, all_boxes, all_labels, quarantine = [], [], [], []
    for entry in entries:
        file_name = entry["file_name"]
        file = images_dir / file_name
        name = PurePosixPath(file_name.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts:  # a name from the file may not leave images_dir
            quarantine.append(Quarantined(str(file), "file name points outside the images folder"))
            continue
        if not file.is_file():
            quarantine.append(Quarantined(str(file), "file not found"))
            continue
        mine = objects.get(entry["id"], [])
        fingerprint.update(file_name.encode() + b"\0" + json.dumps(
            [[a["category_id"], a["bbox"], bool(a.get("iscrowd"))] for a in mine]).encode())
        pixels = _read_and_decode(file, image_size, channels, max_bytes, max_pixels, fingerprint)
        if isinstance(pixels, str):
            quarantine.append(Quarantined(str(file), pixels))
            continue
        width, height = _original_size(file)
        found = _boxes(mine, index, width, height, (image_size / width, image_size / height))
        if isinstance(found, str):
            quarantine.append(Quarantined(str(file), found))
            continue
        images.append(pixels)
        all_boxes.append(found[0])
        all_labels.append(found[1])
    if not images:
        raise DataError(f"COCO annotation file {annotations_json} gave no usable image "
                        f"({len(quarantine)} quarantined).")
    k = max(1, max(len(b) for b in all_labels))
    boxes = np.zeros((len(images), k, 4), np.float32)
    labels = np.full((len(images), k), -1, np.int64)
    for i, (b, c) in enumerate(zip(all_boxes, all_labels)):
        boxes[i, :len(c)], labels[i, :len(c)] = b, c
    # The image-level label (stratifies the split): the class of its largest object, 0 for an empty image.
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]) * (labels >= 0)
    main = np.where(labels.max(1) >= 0, labels[np.arange(len(labels)), area.argmax(1)], 0)
    split = RawSplit(np.stack(images), main.astype(np.int64), boxes=boxes, box_labels=labels)
    return RawDataset(name="coco", classes=tuple(n for _, n in categories), splits={"all": split},
                      source=str(annotations_json), fingerprint=fingerprint.hexdigest(),
                      quarantine=tuple(quarantine))
