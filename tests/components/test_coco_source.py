"""The coco source (components.data.sources.coco) on a small COCO-format set the test writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data.errors import DataError
from components.data.sources import load_source


def write_coco(root: Path, n: int = 8, size: tuple[int, int] = (40, 30)) -> Path:
    """``n`` W×H images, each a red square (category 7 "square") and a blue bar (category 3 "bar"); image 0
    has a box outside it, image 1 is missing, image 2 is not an image, image 3 has a crowd region, image 4
    has no objects."""
    (root / "imgs").mkdir(parents=True)
    w, h = size
    doc = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "square"}, {"id": 3, "name": "bar"}]}
    for i in range(n):
        pixels = np.zeros((h, w, 3), np.uint8)
        x = 2 + i % 10
        pixels[4:14, x:x + 10] = (220, 30, 30)
        pixels[20:24, 5:35] = (30, 30, 220)
        if i != 1:
            Image.fromarray(pixels).save(root / "imgs" / f"{i}.png")
        doc["images"].append({"id": 100 + i, "file_name": f"{i}.png", "width": w, "height": h})
        if i == 4:
            continue
        doc["annotations"] += [{"id": 10 * i, "image_id": 100 + i, "category_id": 7, "bbox": [x, 4, 10, 10]},
                               {"id": 10 * i + 1, "image_id": 100 + i, "category_id": 3, "bbox": [5, 20, 30, 4]}]
    (root / "imgs" / "2.png").write_bytes(b"not a png at all")
    doc["annotations"].append({"id": 999, "image_id": 100, "category_id": 3, "bbox": [30, 20, 25, 4]})  # to x=55 > 40
    doc["annotations"].append({"id": 998, "image_id": 103, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1})
    path = root / "annotations" / "instances_tiny.json"
    path.parent.mkdir()
    path.write_text(json.dumps(doc))
    return path


def test_coco_boxes_scale_with_the_images_and_bad_images_are_quarantined(tmp_path):
    path = write_coco(tmp_path)
    raw = load_source("coco", path=path, image_root=tmp_path / "imgs", image_size=20, channels=3)
    assert raw.classes == ("bar", "square")  # category-id order: 3, 7
    reasons = {Path(q.path).name: q.reason for q in raw.quarantine}
    assert set(reasons) == {"0.png", "1.png", "2.png"}
    assert "outside the 40x30 image" in reasons["0.png"] and "999" in reasons["0.png"]
    assert reasons["1.png"] == "file not found"
    assert "not a decodable" in reasons["2.png"]
    split = raw.splits["all"]
    assert split.images.shape == (5, 20, 20, 3) and split.boxes.shape == (5, 2, 4)
    # image 3: the crowd region is left out; its square at x=5 → (2.5, 2.67, 7.5, 9.33) in the 20x20 image
    np.testing.assert_allclose(split.boxes[0, 0], [2.5, 4 * 20 / 30, 7.5, 14 * 20 / 30], rtol=1e-6)
    assert split.box_labels[0].tolist() == [1, 0]
    assert split.box_labels[1].tolist() == [-1, -1] and split.labels[1] == 0  # image 4: a negative, kept
    # the boxes cover the red pixels of the resized image (bilinear edges aside)
    red = (split.images[0, ..., 0] > 150) & (split.images[0, ..., 2] < 100)
    ys, xs = np.nonzero(red)
    x1, y1, x2, y2 = split.boxes[0, 0]
    assert x1 - 1 <= xs.min() and xs.max() + 1 <= x2 + 1 and y1 - 1 <= ys.min() and ys.max() + 1 <= y2 + 1
    again = load_source("coco", path=path, image_root=tmp_path / "imgs", image_size=20, channels=3)
    assert again.fingerprint == raw.fingerprint


def test_coco_images_default_to_the_annotation_folder_and_bad_files_name_themselves(tmp_path):
    path = write_coco(tmp_path)
    with pytest.raises(DataError, match="images folder"):
        load_source("coco", path=tmp_path / "imgs" / "x.json", image_root=tmp_path / "nowhere")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [], "annotations": [{"image_id": 1}], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DataError, match="bad.json is malformed: annotations\\[0\\]"):
        load_source("coco", path=bad, image_root=tmp_path)
    with pytest.raises(DataError, match="gave no usable image"):  # the images are not beside the file
        load_source("coco", path=path, image_size=16)


def test_coco_ingests_into_shards_with_boxes(tmp_path):
    from components.data.shards import read_split, write_dataset

    raw = load_source("coco", path=write_coco(tmp_path, n=12), image_root=tmp_path / "imgs", image_size=16)
    manifest = write_dataset(raw, tmp_path / "data", seed=0, val_fraction=0.2, test_fraction=0.2)
    assert manifest.targets["boxes"] and len(manifest.quarantine) == 3
    total = sum(len(read_split(manifest, s)) for s in ("train", "val", "test"))
    assert total == 9
    train = read_split(manifest, "train")
    assert train.boxes.shape[1:] == (2, 4) and set(train.box_labels.ravel().tolist()) <= {-1, 0, 1}
