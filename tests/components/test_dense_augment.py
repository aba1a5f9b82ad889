"""Augmentation that moves targets with pixels: a flipped or cropped mask is the mask of the flipped or
cropped image, and boxes likewise (components.dense_augment)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.augment import generator_for
from components.data.sources.shapes import draw_scenes
from components.dense_augment import DenseAugment, crop_dense, flip_dense

#: A colour per class id: the image *is* its mask, painted, so the mask of any image can be read back.
PAINT = torch.tensor([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.float32) / 255


def painted(masks: torch.Tensor) -> torch.Tensor:
    return PAINT[masks.long()].permute(0, 3, 1, 2).contiguous()


def mask_of(x: torch.Tensor) -> torch.Tensor:
    """The class id each pixel's colour paints (the inverse of ``painted``)."""
    distance = ((x.permute(0, 2, 3, 1)[:, :, :, None, :] - PAINT) ** 2).sum(-1)
    return distance.argmin(-1)


def tight_boxes(instances: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k, 4) x1, y1, x2, y2 of the pixels of instance 1..k in each (N, H, W) map; zeros when absent."""
    out = torch.zeros(instances.shape[0], k, 4)
    for i, inst in enumerate(instances):
        for j in range(k):
            ys, xs = torch.nonzero(inst == j + 1, as_tuple=True)
            if len(ys):
                out[i, j] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    return out


@pytest.fixture(scope="module")
def scenes():
    split = draw_scenes(24, 40, np.random.default_rng(5))
    return (torch.from_numpy(split.masks.astype(np.int64)), torch.from_numpy(split.boxes),
            torch.from_numpy(split.box_labels))


def test_a_flipped_mask_is_the_mask_of_the_flipped_image(scenes):
    masks, boxes, labels = scenes
    x = painted(masks)
    fx, fmasks, fboxes, flabels = flip_dense(x, masks, boxes, labels, generator_for(0, 0, 0, 1))
    flipped = torch.all(fx == x.flip(-1), dim=(1, 2, 3))
    assert 0 < int(flipped.sum()) < len(x)  # some flipped, some not: the decision is per image
    assert torch.equal(mask_of(fx), fmasks)
    assert torch.equal(flabels, labels)
    # boxes: the mirrored box of a flipped image bounds the same object's pixels in the flipped mask
    for i in range(len(x)):
        for (x1, y1, x2, y2), label in zip(fboxes[i].int().tolist(), flabels[i].tolist()):
            if label < 0:
                continue
            inside = fmasks[i, y1:y2, x1:x2] == label + 1
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    assert torch.equal(fboxes[~flipped], boxes[~flipped])


def test_a_cropped_mask_is_the_mask_of_the_cropped_image_and_boxes_clip_to_it():
    # Rectangles, one per 8-row band (none hides another), with instance ids: the box of a clipped
    # rectangle is the box of its visible pixels.
    n, size, k = 16, 24, 3
    rng = np.random.default_rng(1)
    instances = torch.zeros(n, size, size, dtype=torch.long)
    boxes = torch.zeros(n, k, 4)
    for i in range(n):
        for j in range(k):
            x1, y1 = rng.integers(0, size - 4), 8 * j + rng.integers(0, 4)
            x2, y2 = min(x1 + rng.integers(2, 8), size), y1 + rng.integers(2, 5)
            instances[i, y1:y2, x1:x2] = j + 1
        boxes[i] = tight_boxes(instances[i:i + 1], k)[0]
    labels = torch.where(boxes[..., 2] > 0, torch.arange(k).expand(n, k), torch.full((n, k), -1))
    masks = torch.where(instances > 0, (instances - 1) % 3 + 1, 0)
    x = painted(masks)
    gen = generator_for(0, 2, 0, 7)
    cx, cmasks, cboxes, clabels = crop_dense(x, masks, boxes, labels, 6, gen)
    # the same crop applied to the instance map: every box equals the visible part of its rectangle
    _, cinst, _, _ = crop_dense(x, instances, None, None, 6, generator_for(0, 2, 0, 7))
    known = cmasks != 255
    assert (~known).any()  # pixels that came from the padding are ignored, not called background
    assert torch.equal(mask_of(cx)[known], cmasks[known])
    assert torch.all(cx.permute(0, 2, 3, 1)[~known] == 0)
    want = tight_boxes(torch.where(cinst == 255, 0, cinst), k)
    assert torch.equal(cboxes, want)
    assert torch.equal(clabels >= 0, want[..., 2] > 0)  # a rectangle cropped away entirely loses its box


def test_the_batch_augment_composes_and_is_reproducible(scenes):
    masks, boxes, labels = scenes
    x = painted(masks)
    augment = DenseAugment(crop_padding=4, flip=True)
    a = augment(x, masks, boxes, labels, generator_for(3, 1, 0, 0))
    b = augment(x, masks, boxes, labels, generator_for(3, 1, 0, 0))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    known = a[1] != 255
    assert torch.equal(mask_of(a[0])[known], a[1][known])
    assert not DenseAugment().enabled
    assert DenseAugment()(x, masks, None, None, generator_for(0, 0, 0, 0))[0] is x
    with pytest.raises(ValueError):
        DenseAugment(crop_padding=-1)
