"""Captioned images built from Fashion-MNIST (course notes §10, image captioning): a 56x56 canvas holding a
2x2 grid of 28x28 cells, one to four of them filled with a Fashion-MNIST item, and a caption that names each
item with its cell in reading order.

    from components.data.sources import fashion_grid

    data = fashion_grid("train", n=10_000, seed=0)       # reads Fashion-MNIST via fashion_mnist()
    data.images.shape                                     # (10000, 56, 56, 1) uint8
    data.captions[0]        # e.g. "a bag in the top left, a coat in the top right and a shirt in the bottom left"
    data.items[0]           # [8, 4, 6, -1]: class id per cell, -1 for an empty cell

A small, checkable stand-in for COCO: every caption is a function of ``items`` (``caption_for``), so a generated
caption can be scored on what it *says* (``components.text_metrics.parse_mentions`` + ``mention_f1``) as well
as by BLEU.  Splits never share a source image: "train" and "val" draw from disjoint halves of Fashion-MNIST's
train images (first and second 30,000; the file is already class-shuffled), "test" from its test images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from components.data.errors import DataError
from components.data.sources.fashion_mnist import FASHION_MNIST_CLASSES, fashion_mnist
from components.data.types import RawDataset

__all__ = ["CELLS", "CLASS_NAMES", "GRID_SPLITS", "CaptionedImages", "caption_for", "class_phrase",
           "fashion_grid", "item_mentions"]

CELLS = ("top left", "top right", "bottom left", "bottom right")
GRID_SPLITS = ("train", "val", "test")


def class_phrase(name: str) -> str:
    """How a caption names a class: lower case, the first of slash alternatives ("T-shirt/top" -> "t-shirt")."""
    return name.split("/")[0].strip().lower()


#: The ten Fashion-MNIST classes as captions name them ("t-shirt", ..., "ankle boot").
CLASS_NAMES = tuple(class_phrase(c) for c in FASHION_MNIST_CLASSES)


@dataclass(frozen=True)
class CaptionedImages:
    """Images with one caption each. ``items`` (N, 4) is the class id per cell (-1 empty), the ground truth
    that mention F1 compares against; ``source_index`` (N, 4) the index of each cell's image in the
    Fashion-MNIST split it came from (train for train/val, test for test), -1 empty: provenance, for audits."""

    images: np.ndarray
    captions: tuple[str, ...]
    items: np.ndarray
    source_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.captions) != n or len(self.items) != n:
            raise DataError(f"CaptionedImages has {n} images, {len(self.captions)} captions "
                            f"and {len(self.items)} item rows; they must match.")

    def __len__(self) -> int:
        return len(self.images)


def caption_for(items_row: Sequence[int], class_names: Sequence[str] = CLASS_NAMES) -> str:
    """The caption of one grid: "a X in the <cell>" per filled cell in reading order, joined by ", " with
    " and " before the last (no Oxford comma); "an" before a vowel. An empty grid gives ""."""
    parts = []
    for cell, cls in enumerate(items_row):
        if cls >= 0:
            name = class_names[int(cls)]
            parts.append(f"{'an' if name[0] in 'aeiou' else 'a'} {name} in the {CELLS[cell]}")
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def item_mentions(items_row: Sequence[int]) -> set[tuple[int, int]]:
    """The (cell, class id) pairs a correct caption of this grid mentions: what ``mention_f1`` scores against."""
    return {(cell, int(cls)) for cell, cls in enumerate(items_row) if cls >= 0}


def fashion_grid(split: str, n: int, seed: int = 0, source: RawDataset | None = None) -> CaptionedImages:
    """``n`` captioned 2x2 grids for ``split`` ("train", "val" or "test"), reproducible from ``seed``.

    Per image: the number of items is uniform in 1..4, the filled cells a uniform subset of that size, each
    item a uniform draw (with replacement) from the split's pool of source images.  ``source`` is a
    ``RawDataset`` with official train/test splits (default ``fashion_mnist()``); its class names, through
    ``class_phrase``, are the caption words, and its cell size sets the canvas (2H x 2W).
    """
    if split not in GRID_SPLITS:
        raise DataError(f"fashion_grid split must be one of {', '.join(GRID_SPLITS)}, got {split!r}.")
    if n < 0:
        raise DataError(f"fashion_grid needs a non-negative number of images, got n={n}.")
    source = fashion_mnist() if source is None else source
    if not source.has_official_test:
        raise DataError(f"fashion_grid needs a source with train and test splits; {source.name!r} has only 'all'.")
    raw = source.splits["test" if split == "test" else "train"]
    half = len(raw) // 2
    pool = {"train": np.arange(half), "val": np.arange(half, len(raw)), "test": np.arange(len(raw))}[split]
    if len(pool) == 0:
        raise DataError(f"fashion_grid split {split!r} has no source images in {source.name!r}.")

    # The split is part of the seed, so train and val with the same seed do not share layouts either.
    rng = np.random.default_rng([seed, GRID_SPLITS.index(split)])
    counts = rng.integers(1, 5, size=n)
    # A uniform random subset of `count` cells: the cells whose random key ranks below count.
    ranks = np.argsort(np.argsort(rng.random((n, 4)), axis=1), axis=1)
    filled = ranks < counts[:, None]
    picks = pool[rng.integers(0, len(pool), size=(n, 4))]
    source_index = np.where(filled, picks, -1).astype(np.int64)
    items = np.where(filled, raw.labels[picks], -1).astype(np.int64)

    h, w, c = raw.shape
    cells = np.where(filled[:, :, None, None, None], raw.images[picks], 0).astype(np.uint8)  # (n, 4, h, w, c)
    # (n, row, col, h, w, c) -> (n, row, h, col, w, c): cell rows stacked over pixel rows.
    images = np.ascontiguousarray(cells.reshape(n, 2, 2, h, w, c).transpose(0, 1, 3, 2, 4, 5)).reshape(
        n, 2 * h, 2 * w, c)
    names = tuple(class_phrase(cl) for cl in source.classes)
    captions = tuple(caption_for(row, names) for row in items)
    return CaptionedImages(images=images, captions=captions, items=items, source_index=source_index)
