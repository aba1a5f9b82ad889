"""Augmentation that moves the targets with the pixels (course notes §11): a mirrored or shifted scene is
still a scene, but only if its mask and boxes are mirrored and shifted with it.

Each function takes a float batch ``x`` (N, C, H, W), the masks (N, H, W) (or None), the boxes (N, K, 4)
``x1, y1, x2, y2`` in pixels and their labels (N, K), -1 marking padding rows (or None), and an explicit
``torch.Generator``; it draws one decision per image and applies it to all of them alike, vectorised over
the batch (the style of ``components.augment``)::

    from components.augment import generator_for
    from components.dense_augment import DenseAugment

    augment = DenseAugment(flip=True, crop_padding=4)
    x, masks, boxes, labels = augment(x, masks, boxes, labels, generator_for(0, epoch, 0, step))

A crop pads by ``padding`` pixels and cuts a random H×W window: pixels come from zero padding where the
window leaves the image, their mask pixels are 255 (ignored by the loss and the metrics: nothing is known
there), and boxes are shifted, clipped to the window and dropped (label -1, zeros) when nothing is left.
Photometric jitter needs no target logic: ``components.augment.color_jitter`` applies to ``x`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from components.augment import _randint, _uniform, color_jitter, generator_for

__all__ = ["DenseAugment", "crop_dense", "flip_dense"]

IGNORE = 255
Targets = tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]


def flip_dense(x: Tensor, masks: Tensor | None, boxes: Tensor | None, labels: Tensor | None,
               gen: torch.Generator, p: float = 0.5) -> Targets:
    """Mirror each image left-right with probability ``p``, its mask and boxes with it."""
    n, w = x.shape[0], x.shape[-1]
    flip = _uniform(n, gen, x.device) < p
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if masks is not None:
        masks = torch.where(flip[:, None, None], masks.flip(-1), masks)
    if boxes is not None and labels is not None:
        mirrored = torch.stack([w - boxes[..., 2], boxes[..., 1], w - boxes[..., 0], boxes[..., 3]], -1)
        present = (labels >= 0)[..., None]
        boxes = torch.where(flip[:, None, None] & present, mirrored, boxes)
    return x, masks, boxes, labels


def crop_dense(x: Tensor, masks: Tensor | None, boxes: Tensor | None, labels: Tensor | None, padding: int,
               gen: torch.Generator) -> Targets:
    """Pad by ``padding`` and crop a random window of the original size per image, targets alike."""
    if padding == 0:
        return x, masks, boxes, labels
    n, _, h, w = x.shape
    dy = _randint(0, 2 * padding + 1, n, gen, x.device)
    dx = _randint(0, 2 * padding + 1, n, gen, x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1) in padded coordinates
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    x = F.pad(x, (padding,) * 4).permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
    if masks is not None:
        masks = F.pad(masks, (padding,) * 4, value=IGNORE)[batch, rows, cols]
    if boxes is not None and labels is not None:
        # the window's top-left corner sits at (dx - padding, dy - padding) of the original image
        shift = torch.stack([dx, dy, dx, dy], -1).to(boxes.dtype)[:, None, :] - padding
        limit = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        moved = torch.minimum((boxes - shift).clamp(min=0), limit)
        keep = (labels >= 0) & (moved[..., 2] > moved[..., 0]) & (moved[..., 3] > moved[..., 1])
        boxes = torch.where(keep[..., None], moved, torch.zeros_like(moved))
        labels = torch.where(keep, labels, torch.full_like(labels, -1))
    return x, masks, boxes, labels


@dataclass(frozen=True)
class DenseAugment:
    """Crop then flip, each switched on by its field; all off is the identity."""

    crop_padding: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")

    @property
    def enabled(self) -> bool:
        return bool(self.crop_padding or self.flip)

    def __call__(self, x: Tensor, masks: Tensor | None, boxes: Tensor | None, labels: Tensor | None,
                 gen: torch.Generator) -> Targets:
        if self.crop_padding:
            x, masks, boxes, labels = crop_dense(x, masks, boxes, labels, self.crop_padding, gen)
        if self.flip:
            x, masks, boxes, labels = flip_dense(x, masks, boxes, labels, gen)
        return x, masks, boxes, labels


def augment_batch(x: Tensor, masks: Tensor | None, boxes: Tensor | None, labels: Tensor | None, augment: Any,
                  seed: int, epoch: int, idx: Any = None) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """A dense task's batch augmentation: flips and crops moving masks and boxes with the pixels, then colour
    jitter on the pixels alone; seeded by (seed, epoch, the batch's first row id) as classification's is.
    ``augment`` is the data section's AugmentConfig (None or disabled: the batch unchanged)."""
    if augment is None or not augment.enabled:
        return x, masks, boxes, labels
    first = int(idx[0]) if idx is not None and len(idx) else 0
    gen = generator_for(seed, epoch, 0, first)
    x, masks, boxes, labels = DenseAugment(crop_padding=augment.crop_padding, flip=augment.flip)(
        x, masks, boxes, labels, gen)
    if augment.brightness or augment.contrast:
        x = color_jitter(x, augment.brightness, augment.contrast, gen)
    return x, masks, boxes, labels
