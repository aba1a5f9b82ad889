"""Procedural scenes for segmentation and detection (course notes §11): 1–4 filled circles, axis-aligned
squares and upright triangles on a plain background, with a semantic mask, instance boxes and labels.

    from components.data.sources import shapes

    raw = shapes(num_images=10_000, image_size=64, seed=0)    # train/val/test drawn from disjoint seeds
    split = raw.splits["train"]
    split.images.shape        # (8000, 64, 64, 3) uint8
    split.masks[0]            # (64, 64) uint8: 0 background, 1 circle, 2 square, 3 triangle
    split.boxes[0]            # (4, 4) float32 x1, y1, x2, y2 of each visible object (zero rows: none)
    split.box_labels[0]       # (4,) int64: 0 circle, 1 square, 2 triangle; -1 on the padding rows
    split.labels[0]           # the class of the largest visible object (classification on the same data)

Per image: a background colour, then 1–4 objects (uniform count), each of a uniform class, a side (the
circle's diameter) uniform in 8–28 px (scaled down for images smaller than 64 px), fully inside the image,
in a colour far enough from the background and from the objects before it to be told apart. Later objects
occlude earlier ones; a box covers the *visible* part of its object, and an object left fully hidden is
dropped. A pixel belongs to a shape when its centre does, so masks and boxes agree exactly.

Each split has its own random stream, seeded by (seed, split): train, val and test never share a scene,
and a split does not change when another one's size does. Nothing is read or downloaded.
"""

from __future__ import annotations

import hashlib

import numpy as np

from components.data.errors import DataError
from components.data.types import RawDataset, RawSplit

__all__ = ["MAX_OBJECTS", "SHAPE_CLASSES", "draw_scenes", "shapes", "split_sizes"]

SHAPE_CLASSES = ("circle", "square", "triangle")
MAX_OBJECTS = 4
SIZE_RANGE = (8, 28)  # object side in pixels on a 64 px image
#: Smallest summed |RGB difference| between an object and the background or an earlier object: about a
#: third of the way across one channel's range, so no object is invisible against what it covers.
MIN_CONTRAST = 96
GENERATOR_VERSION = 1  # part of the fingerprint: a change to the drawing makes a new dataset version
_SPLITS = ("train", "val", "test")
_STREAM = 0x5AA9E5  # keeps these streams apart from any other source seeded with the same number


def split_sizes(num_images: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """How many of ``num_images`` scenes each split gets (val and test rounded, at least one each)."""
    n_val = max(1, int(round(num_images * val_fraction)))
    n_test = max(1, int(round(num_images * test_fraction)))
    n_train = num_images - n_val - n_test
    if n_train < 1:
        raise DataError(f"data.num_images={num_images} leaves no training scene after val ({n_val}) "
                        f"and test ({n_test}); raise data.num_images.")
    return {"train": n_train, "val": n_val, "test": n_test}


def _colour(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    for _ in range(64):
        c = rng.integers(0, 256, 3)
        if all(np.abs(c - a).sum() >= MIN_CONTRAST for a in avoid):
            return c
    return 255 - avoid[0]  # practically never reached: the background's complement is always far enough


def _footprint(cls: int, side: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Which pixels of a ``side`` x ``side`` window (pixel centres ``ys``, ``xs`` from the window's
    corner) a shape of class ``cls`` fills."""
    if cls == 0:  # circle inscribed in the window
        r = side / 2
        return (ys - r) ** 2 + (xs - r) ** 2 <= r * r
    if cls == 1:  # square filling the window
        return np.ones((side, side), dtype=bool)
    # upright triangle: apex at the top centre, base along the bottom edge
    return np.abs(xs - side / 2) <= ys / 2


def draw_scenes(n: int, image_size: int, rng: np.random.Generator) -> RawSplit:
    """``n`` scenes of ``image_size`` px from ``rng``: images, masks, boxes, box labels and labels."""
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    masks = np.zeros((n, image_size, image_size), dtype=np.uint8)
    boxes = np.zeros((n, MAX_OBJECTS, 4), dtype=np.float32)
    box_labels = np.full((n, MAX_OBJECTS), -1, dtype=np.int64)
    labels = np.zeros(n, dtype=np.int64)
    scale = min(1.0, image_size / 64)
    lo, hi = max(3, int(round(SIZE_RANGE[0] * scale))), max(4, int(round(SIZE_RANGE[1] * scale)))
    hi = min(hi, image_size)
    for i in range(n):
        background = rng.integers(0, 256, 3)
        image = np.broadcast_to(background.astype(np.uint8), (image_size, image_size, 3)).copy()
        instance = np.zeros((image_size, image_size), dtype=np.int64)  # which object each pixel shows (0: none)
        colours, classes = [background], []
        for k in range(int(rng.integers(1, MAX_OBJECTS + 1))):
            cls = int(rng.integers(0, len(SHAPE_CLASSES)))
            side = int(rng.integers(lo, hi + 1))
            y0, x0 = (int(v) for v in rng.integers(0, image_size - side + 1, 2))
            colour = _colour(rng, colours)
            centres = np.arange(side) + 0.5
            inside = _footprint(cls, side, centres[:, None], centres[None, :])
            window = (slice(y0, y0 + side), slice(x0, x0 + side))
            image[window][inside] = colour
            instance[window][inside] = k + 1
            colours.append(colour)
            classes.append(cls)
        labels[i] = visible_targets(instance, classes, masks[i], boxes[i], box_labels[i])
        images[i] = image
    return RawSplit(images=images, labels=labels, masks=masks, boxes=boxes, box_labels=box_labels)


def visible_targets(instance: np.ndarray, classes, mask: np.ndarray, boxes: np.ndarray,
                    box_labels: np.ndarray) -> int:
    """One scene's targets from its instance map (object k's pixels are k + 1, later objects drawn over
    earlier ones), written in place: class + 1 into ``mask``, a box (x2, y2 one past the last pixel) and
    class per visible object; an object fully hidden gets none. Returns the class of the largest one."""
    slot, largest, label = 0, -1, 0
    for k, cls in enumerate(classes):
        ys, xs = np.nonzero(instance == k + 1)
        if len(ys) == 0:  # fully hidden by later objects
            continue
        mask[ys, xs] = cls + 1
        boxes[slot] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        box_labels[slot] = cls
        if len(ys) > largest:
            largest, label = len(ys), int(cls)
        slot += 1
    return label


def shapes(num_images: int = 10_000, image_size: int = 64, seed: int = 0, val_fraction: float = 0.1,
           test_fraction: float = 0.1) -> RawDataset:
    """``num_images`` scenes split into train/val/test by the fractions, each split from its own seeds."""
    if image_size < 16:
        raise DataError(f"data.image_size={image_size} is too small for shapes scenes; use at least 16.")
    if num_images < 3:
        raise DataError(f"data.num_images={num_images}: shapes needs at least 3 scenes (train, val, test).")
    sizes = split_sizes(num_images, val_fraction, test_fraction)
    splits = {name: draw_scenes(sizes[name], image_size, np.random.default_rng([_STREAM, seed, i]))
              for i, name in enumerate(_SPLITS)}
    digest = hashlib.sha256(f"shapes-v{GENERATOR_VERSION}".encode())
    for name in _SPLITS:
        s = splits[name]
        for array in (s.images, s.masks, s.boxes, s.box_labels, s.labels):
            digest.update(np.ascontiguousarray(array).tobytes())
    return RawDataset(name="shapes", classes=SHAPE_CLASSES, splits=splits,
                      source=f"generated: {num_images} scenes, {image_size} px, seed {seed}",
                      fingerprint=digest.hexdigest())
