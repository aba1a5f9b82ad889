"""The ``shapes`` source and the dense-target columns of the shards: determinism, disjoint splits, masks
and boxes that agree, and a Parquet round trip that gives back what was written."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.data.errors import DataError
from components.data.shards import (
    decode_targets,
    read_split,
    split_dataset,
    write_dataset,
)
from components.data.sources import SHAPE_CLASSES, load_source, shapes
from components.data.subsets import subset_classes
from components.data.types import RawDataset, RawSplit


@pytest.fixture(scope="module")
def small():
    return shapes(num_images=120, image_size=48, seed=3)


def test_same_seed_same_scenes_other_seed_other_scenes(small):
    again = shapes(num_images=120, image_size=48, seed=3)
    assert again.fingerprint == small.fingerprint
    for name in ("train", "val", "test"):
        a, b = small.splits[name], again.splits[name]
        assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.box_labels, b.box_labels)
    other = shapes(num_images=120, image_size=48, seed=4)
    assert other.fingerprint != small.fingerprint
    assert not np.array_equal(other.splits["train"].images, small.splits["train"].images)


def test_splits_are_sized_by_the_fractions_and_share_no_scene(small):
    sizes = {k: len(v) for k, v in small.splits.items()}
    assert sizes == {"train": 96, "val": 12, "test": 12}
    seen = {name: {img.tobytes() for img in split.images} for name, split in small.splits.items()}
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    # a split is drawn from its own stream: growing train leaves test as it was
    bigger = shapes(num_images=240, image_size=48, seed=3, val_fraction=0.05, test_fraction=0.05)
    assert len(bigger.splits["test"]) == 12
    assert np.array_equal(bigger.splits["test"].images, small.splits["test"].images)


def test_scene_contents(small):
    split = small.splits["train"]
    assert split.images.shape == (96, 48, 48, 3) and split.masks.shape == (96, 48, 48)
    assert split.boxes.shape == (96, 4, 4) and split.box_labels.shape == (96, 4)
    present = split.box_labels >= 0
    assert present.any(1).all()  # the last object drawn is always visible
    assert set(np.unique(split.masks)) == {0, 1, 2, 3}
    assert set(np.unique(split.box_labels[present])) == {0, 1, 2}
    assert np.all(split.boxes[~present] == 0)
    # every class appears as the image label, and the label is the class of one of the image's objects
    assert set(split.labels) == set(range(len(SHAPE_CLASSES)))
    assert all(label in row[row >= 0] for label, row in zip(split.labels, split.box_labels))


def test_masks_and_boxes_agree(small):
    for split in small.splits.values():
        for mask, boxes, labels in zip(split.masks, split.boxes, split.box_labels):
            covered = np.zeros_like(mask, dtype=bool)
            for (x1, y1, x2, y2), label in zip(boxes.astype(int), labels):
                if label < 0:
                    continue
                assert 0 <= x1 < x2 <= mask.shape[1] and 0 <= y1 < y2 <= mask.shape[0]
                inside = mask[y1:y2, x1:x2] == label + 1
                # tight: the object's visible pixels touch all four edges of its box
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
                covered[y1:y2, x1:x2] |= inside
            # every object pixel of the mask lies in a box of its class
            assert np.array_equal(covered, mask > 0)


def test_objects_differ_from_the_background(small):
    split = small.splits["val"]
    for image, mask in zip(split.images, split.masks):
        background = image[mask == 0]
        objects = image[mask > 0].astype(int)
        colour = background[0].astype(int)
        assert np.all(background == background[0])  # one plain background colour
        assert np.all(np.abs(objects - colour).sum(1) >= 96)


def test_write_and_read_back_keep_the_targets(small, tmp_path):
    manifest = write_dataset(small, tmp_path, seed=0, val_fraction=0.1, test_fraction=0.1, rows_per_shard=50)
    assert manifest.targets == {"mask": True, "boxes": True, "max_boxes": 4}
    assert {k: v["rows"] for k, v in manifest.splits.items()} == {"train": 96, "val": 12, "test": 12}
    for name in ("train", "val", "test"):
        back = read_split(manifest, name)
        want = small.splits[name]
        assert np.array_equal(back.images, want.images) and np.array_equal(back.labels, want.labels)
        assert np.array_equal(back.masks, want.masks)
        assert np.array_equal(back.boxes, want.boxes) and np.array_equal(back.box_labels, want.box_labels)
    # a batch that is a slice of a shard (what Ray Data hands a map_batches) decodes to the same rows
    table = pq.read_table(manifest.files("train")[1]).slice(7, 9)
    dense = decode_targets(table, manifest.shape, manifest.targets)
    assert np.array_equal(dense["mask"], small.splits["train"].masks[57:66])
    assert np.array_equal(dense["boxes"], small.splits["train"].boxes[57:66])
    assert np.array_equal(dense["box_labels"], small.splits["train"].box_labels[57:66])
    assert write_dataset(small, tmp_path, seed=0, val_fraction=0.1, test_fraction=0.1).cached


def test_a_dataset_with_fewer_objects_pads_to_its_own_most(tmp_path):
    images = np.zeros((4, 8, 8, 3), np.uint8)
    boxes = np.zeros((4, 3, 4), np.float32)
    labels = np.full((4, 3), -1, np.int64)
    boxes[0, :2] = [[0, 0, 2, 2], [1, 1, 8, 8]]
    labels[0, :2] = [1, 0]
    boxes[2, 0], labels[2, 0] = [3, 4, 5, 6], 1
    split = RawSplit(images, np.zeros(4, np.int64), boxes=boxes, box_labels=labels)
    raw = RawDataset("boxes-only", ("a", "b"), {"train": split, "val": split.take(np.arange(1)),
                                                "test": split.take(np.arange(2))}, "memory", "f" * 64)
    manifest = write_dataset(raw, tmp_path, seed=0, val_fraction=0.1, test_fraction=0.1)
    assert manifest.targets == {"boxes": True, "max_boxes": 2}
    back = read_split(manifest, "train")
    assert back.masks is None and back.boxes.shape == (4, 2, 4)
    assert np.array_equal(back.boxes[0], boxes[0, :2]) and np.array_equal(back.box_labels[2], [1, -1])
    assert np.array_equal(back.box_labels[1], [-1, -1]) and np.all(back.boxes[1] == 0)


def test_premade_splits_are_kept_and_targets_are_checked(small):
    assert split_dataset(small, seed=9, val_fraction=0.3, test_fraction=0.3)["val"] is small.splits["val"]
    with pytest.raises(DataError, match="masks"):
        RawSplit(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int64), masks=np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(DataError, match="together"):
        RawSplit(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int64), boxes=np.zeros((2, 1, 4), np.float32))
    with pytest.raises(DataError, match="cannot be subset"):
        subset_classes(small, ["circle", "square"])


def test_load_source_and_bad_sizes():
    raw = load_source("shapes", num_images=30, image_size=32, seed=1)
    assert raw.shape == (32, 32, 3) and raw.premade
    with pytest.raises(DataError, match="num_images"):
        shapes(num_images=2)
    with pytest.raises(DataError, match="image_size"):
        shapes(num_images=30, image_size=8)
