"""The other dense sources: ``fashion_scenes`` (items pasted from Fashion-MNIST, test items only in test) and
``mask_folder`` (images + masks on disk, broken pairs quarantined with the reason)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from components.data.errors import DataError
from components.data.shards import read_split, write_dataset
from components.data.sources import fashion_scenes, load_source, mask_folder
from components.data.types import RawDataset, RawSplit


@pytest.fixture(scope="module")
def items():
    """A stand-in for Fashion-MNIST with official splits: every item a filled block whose grey level says
    which split and row it came from (train rows 1..40 light, test rows dark), class = row % 10."""
    def split(n, first):
        images = np.zeros((n, 28, 28, 1), np.uint8)
        for i in range(n):
            images[i, 4:24, 6:22] = first + i
        return RawSplit(images, (np.arange(n) % 10).astype(np.int64))
    return RawDataset("fake_fashion", tuple(f"c{i}" for i in range(10)),
                      {"train": split(40, 100), "test": split(20, 30)}, "memory", "a" * 64)


def test_fashion_scenes_masks_boxes_and_sources(items):
    raw = fashion_scenes(num_images=60, image_size=64, seed=2, source=items)
    assert raw.classes == items.classes and raw.shape == (64, 64, 1) and raw.premade
    assert {k: len(v) for k, v in raw.splits.items()} == {"train": 48, "val": 6, "test": 6}
    levels = {name: set(np.unique(s.images[s.masks > 0])) for name, s in raw.splits.items()}
    # test pastes only test items (30..49), train the first half of train (100..119), val the second half
    assert levels["test"] <= set(range(30, 50)) and levels["train"] <= set(range(100, 120))
    assert levels["val"] <= set(range(120, 140))
    for split in raw.splits.values():
        assert np.array_equal(split.masks > 0, split.images[..., 0] > 0)  # masks are the items' pixels
        # the class in the mask is the class of the item whose grey level shows there
        shown = split.images[..., 0][split.masks > 0].astype(int)
        assert np.array_equal(split.masks[split.masks > 0] - 1, (shown - np.where(shown >= 100, 100, 30)) % 10)
        for mask, boxes, labels in zip(split.masks, split.boxes, split.box_labels):
            for (x1, y1, x2, y2), label in zip(boxes.astype(int), labels):
                if label >= 0:
                    inside = mask[y1:y2, x1:x2] == label + 1
                    assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    again = fashion_scenes(num_images=60, image_size=64, seed=2, source=items)
    assert again.fingerprint == raw.fingerprint
    assert fashion_scenes(num_images=60, image_size=64, seed=3, source=items).fingerprint != raw.fingerprint
    with pytest.raises(DataError, match="image_size"):
        fashion_scenes(num_images=60, image_size=20, source=items)


def _png(path, array, mode=None):
    Image.fromarray(array, mode).save(path) if mode is None else Image.fromarray(array).convert(mode).save(path)


def test_mask_folder_reads_pairs_and_quarantines_broken_ones(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # good pairs: a square of class 1 or 2 on background, 255 border
        image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        mask = np.zeros((20, 30), np.uint8)
        mask[4:14, 6:16] = 1 + i % 2
        mask[0] = 255
        Image.fromarray(image).save(tmp_path / "images" / f"ok{i}.{'png' if i % 2 else 'jpg'}")
        if i == 5:  # a palette PNG: its indices are the ids
            palette = Image.fromarray(mask, "L").convert("P")
            palette.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * (3 * 253))
            palette.save(tmp_path / "masks" / f"ok{i}.png")
        else:
            Image.fromarray(mask, "L").save(tmp_path / "masks" / f"ok{i}.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / "no_mask.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / "small_mask.png")
    Image.fromarray(np.zeros((10, 30), np.uint8), "L").save(tmp_path / "masks" / "small_mask.png")
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG not really")
    Image.fromarray(np.zeros((20, 30), np.uint8), "L").save(tmp_path / "masks" / "broken.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / "rgb_mask.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "masks" / "rgb_mask.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / "bad_id.png")
    Image.fromarray(np.full((20, 30), 7, np.uint8), "L").save(tmp_path / "masks" / "bad_id.png")
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")

    raw = mask_folder(tmp_path, image_size=16, channels=3)
    assert raw.classes == ("cat", "dog")
    split = raw.splits["all"]
    assert split.images.shape == (6, 16, 16, 3) and split.masks.shape == (6, 16, 16)
    assert set(np.unique(split.masks)) == {0, 1, 2, 255}  # nearest-neighbour resize keeps ids, 255 stays void
    assert split.labels.tolist() == [0, 1, 0, 1, 0, 1]  # the largest region's class: cat, dog, ...
    reasons = {q.path.rsplit("/", 1)[1]: q.reason for q in raw.quarantine}
    assert set(reasons) == {"no_mask.png", "small_mask.png", "broken.png", "rgb_mask.png", "bad_id.png"}
    assert "no mask" in reasons["no_mask.png"] and "30x10" in reasons["small_mask.png"]
    assert "decod" in reasons["broken.png"] and "RGB" in reasons["rgb_mask.png"]
    assert "class id 7" in reasons["bad_id.png"]
    manifest = write_dataset(raw, tmp_path / "data", seed=0, val_fraction=0.2, test_fraction=0.2)
    assert len(manifest.quarantine) == 5 and manifest.targets == {"mask": True}
    back = [read_split(manifest, s) for s in ("train", "val", "test")]
    assert sum(len(b) for b in back) == 6 and all(b.masks is not None for b in back)

    (tmp_path / "classes.txt").unlink()  # without names: the ids found are numbered
    assert load_source("mask_folder", path=tmp_path, image_size=16, channels=1).classes == ("class_1", "class_2", "class_3",
                                                                                          "class_4", "class_5",
                                                                                          "class_6", "class_7")


def test_mask_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="images/ and a masks/"):
        mask_folder(tmp_path, 16, 3)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="no usable image/mask pair"):
        mask_folder(tmp_path, 16, 3)
