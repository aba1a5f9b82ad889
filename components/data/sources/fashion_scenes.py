"""Scenes of Fashion-MNIST items for segmentation and detection (course notes §11): 1–4 items (28×28) pasted
on a black canvas of ``image_size`` px (64 by default, 64–96 intended), ten classes.

    from components.data.sources import fashion_scenes

    raw = fashion_scenes(num_images=10_000, image_size=64, seed=0)   # reads Fashion-MNIST via fashion_mnist()
    split = raw.splits["test"]
    split.images.shape      # (1000, 64, 64, 1) uint8
    split.masks[0]          # 0 background, k the class FASHION_MNIST_CLASSES[k - 1] (item pixels only)
    split.boxes[0]          # x1, y1, x2, y2 of each visible item; split.box_labels[0] its class, -1 padding

Masks come from the items' own pixels (brighter than ``FOREGROUND``: Fashion-MNIST's background is
black, its faint halo not part of the garment), boxes from where each item was placed, bounding its
visible pixels (a later item covers an earlier one; an item left with no visible pixel is dropped, as
in ``shapes``). ``labels`` is the class of the largest visible item.

Splits never share a source image: train and val paste from the first and second halves of Fashion-MNIST's
training images, test from its test images only; each split's layouts come from its own seeds (seed, split).
"""

from __future__ import annotations

import hashlib

import numpy as np

from components.data.errors import DataError
from components.data.sources.fashion_mnist import fashion_mnist
from components.data.sources.shapes import MAX_OBJECTS, split_sizes, visible_targets
from components.data.types import RawDataset, RawSplit

__all__ = ["FOREGROUND", "fashion_scenes", "paste_scenes"]

#: Item pixels at or below this grey level are background: Fashion-MNIST items sit on exact black, with a
#: dim anti-aliased rim that belongs to neither item nor background when scored.
FOREGROUND = 24
GENERATOR_VERSION = 1
_SPLITS = ("train", "val", "test")
_STREAM = 0xFA5C


def paste_scenes(n: int, image_size: int, items: np.ndarray, item_labels: np.ndarray,
                 rng: np.random.Generator) -> RawSplit:
    """``n`` scenes of ``image_size`` px pasted from ``items`` (M, h, w, 1) with classes ``item_labels``."""
    _, h, w, _ = items.shape
    if image_size < max(h, w):
        raise DataError(f"data.image_size={image_size} is smaller than a Fashion-MNIST item ({h}x{w}).")
    images = np.zeros((n, image_size, image_size, 1), dtype=np.uint8)
    masks = np.zeros((n, image_size, image_size), dtype=np.uint8)
    boxes = np.zeros((n, MAX_OBJECTS, 4), dtype=np.float32)
    box_labels = np.full((n, MAX_OBJECTS), -1, dtype=np.int64)
    labels = np.zeros(n, dtype=np.int64)
    counts = rng.integers(1, MAX_OBJECTS + 1, size=n)
    picks = rng.integers(0, len(items), size=(n, MAX_OBJECTS))
    corners = rng.integers(0, image_size - max(h, w) + 1, size=(n, MAX_OBJECTS, 2))
    for i in range(n):
        instance = np.zeros((image_size, image_size), dtype=np.int64)
        for k in range(int(counts[i])):
            item = items[picks[i, k], :, :, 0]
            y0, x0 = corners[i, k]
            fg = item > FOREGROUND
            window = (slice(y0, y0 + h), slice(x0, x0 + w))
            images[i][window][fg, 0] = item[fg]
            instance[window][fg] = k + 1
        classes = [int(item_labels[picks[i, k]]) for k in range(int(counts[i]))]
        labels[i] = visible_targets(instance, classes, masks[i], boxes[i], box_labels[i])
    return RawSplit(images=images, labels=labels, masks=masks, boxes=boxes, box_labels=box_labels)


def fashion_scenes(num_images: int = 10_000, image_size: int = 64, seed: int = 0, val_fraction: float = 0.1,
                   test_fraction: float = 0.1, source: RawDataset | None = None, path: str | None = None,
                   allow_download: bool = False) -> RawDataset:
    """``num_images`` scenes split by the fractions; ``source`` (default ``fashion_mnist(path)``) gives the items."""
    source = fashion_mnist(path, allow_download=allow_download) if source is None else source
    if not source.has_official_test:
        raise DataError(f"fashion_scenes needs a source with train and test splits; {source.name!r} has only 'all'.")
    train = source.splits["train"]
    half = len(train) // 2
    pools = {"train": (train.images[:half], train.labels[:half]), "val": (train.images[half:], train.labels[half:]),
             "test": (source.splits["test"].images, source.splits["test"].labels)}
    sizes = split_sizes(num_images, val_fraction, test_fraction)
    splits = {name: paste_scenes(sizes[name], image_size, *pools[name], np.random.default_rng([_STREAM, seed, i]))
              for i, name in enumerate(_SPLITS)}
    digest = hashlib.sha256(f"fashion_scenes-v{GENERATOR_VERSION}:{source.fingerprint}".encode())
    for name in _SPLITS:
        s = splits[name]
        for array in (s.images, s.masks, s.boxes, s.box_labels, s.labels):
            digest.update(np.ascontiguousarray(array).tobytes())
    return RawDataset(name="fashion_scenes", classes=tuple(source.classes), splits=splits,
                      source=f"generated from {source.source}: {num_images} scenes, {image_size} px, seed {seed}",
                      fingerprint=digest.hexdigest())
