"""Tests for components.augment: determinism, invariants and the Augment pipeline."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import Tensor

from components.augment import (
    Augment,
    color_jitter,
    cutout,
    cutout_mask,
    generator_for,
    random_crop,
    random_flip,
)


def _batch(seed: int = 0, shape: tuple[int, int, int, int] = (16, 3, 12, 12)) -> Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


AUGMENTATIONS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "crop_zeros": lambda x, g: random_crop(x, 3, g),
    "crop_reflect": lambda x, g: random_crop(x, 3, g, mode="reflect"),
    "flip": lambda x, g: random_flip(x, g),
    "jitter": lambda x, g: color_jitter(x, 0.4, 0.4, g),
    "cutout": lambda x, g: cutout(x, 5, g),
    "all": Augment(crop_padding=2, flip=True, brightness=0.2, contrast=0.2, cutout=4),
}


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_same_seed_same_output_different_seed_different(name: str) -> None:
    fn = AUGMENTATIONS[name]
    x = _batch()
    a = fn(x, _gen(1))
    assert torch.equal(a, fn(x, _gen(1)))
    assert not torch.equal(a, fn(x, _gen(2)))


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
@pytest.mark.parametrize("shape", [(8, 1, 28, 28), (8, 3, 32, 32), (8, 1, 8, 8)])
def test_shape_dtype_range_preserved(name: str, shape: tuple[int, int, int, int]) -> None:
    x = _batch(shape=shape)
    out = AUGMENTATIONS[name](x, _gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_inputs_not_modified() -> None:
    x = _batch()
    before = x.clone()
    for fn in AUGMENTATIONS.values():
        fn(x, _gen(0))
    assert torch.equal(x, before)


def test_flip_twice_is_identity() -> None:
    x = _batch()
    once = random_flip(x, _gen(3))
    assert torch.equal(random_flip(once, _gen(3)), x)
    # p=1 flips every sample, p=0 none.
    assert torch.equal(random_flip(x, _gen(0), p=1.0), x.flip(-1))
    assert torch.equal(random_flip(x, _gen(0), p=0.0), x)
    flipped = (once != x).flatten(1).any(dim=1)
    assert 0 < int(flipped.sum()) < len(x)


def test_crop_padding_zero_is_identity() -> None:
    x = _batch()
    assert torch.equal(random_crop(x, 0, _gen(0)), x)


def test_crop_is_a_shifted_window() -> None:
    x = _batch(shape=(32, 2, 10, 10))
    pad = 2
    out = random_crop(x, pad, _gen(5), mode="zeros")
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 10, dx : dx + 10])
        ]
        assert matches, f"sample {i} is not a window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 1  # offsets vary across the batch


def test_color_jitter_zero_is_identity_and_factors_per_sample() -> None:
    x = _batch()
    assert torch.equal(color_jitter(x, 0.0, 0.0, _gen(0)), x)
    flat = torch.full((4, 1, 5, 5), 0.5)
    bright = color_jitter(flat, 0.5, 0.0, _gen(0))
    per_sample = bright.flatten(1)
    # A constant image stays constant; brightness differs between samples.
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample))
    assert per_sample[:, 0].unique().numel() > 1


def test_cutout_masks_exactly_size_squared_pixels() -> None:
    x = torch.ones(20, 3, 16, 16)
    out = cutout(x, 5, _gen(0), fill=0.0)
    zeros = (out == 0).all(dim=1).flatten(1).sum(dim=1)  # pixels zeroed in all channels
    assert torch.equal(zeros, torch.full((20,), 25))
    assert int((out == 0).sum()) == 20 * 3 * 25
    mask = cutout_mask(20, 16, 16, 5, _gen(0))
    assert mask.shape == (20, 1, 16, 16)
    assert torch.equal(mask.expand_as(out), out == 0)


def test_cutout_default_fill_is_channel_mean() -> None:
    x = _batch()
    out = cutout(x, 4, _gen(0))
    mask = cutout_mask(x.shape[0], 12, 12, 4, _gen(0)).expand_as(x)
    fill = x.mean(dim=(0, 2, 3), keepdim=True).expand_as(x)
    assert torch.equal(out[mask], fill[mask])
    assert torch.equal(out[~mask], x[~mask])


def test_augment_dataclass() -> None:
    x = _batch()
    off = Augment()
    assert not off.enabled
    assert torch.equal(off(x, _gen(0)), x)
    on = Augment(crop_padding=2, flip=True)
    assert on.enabled
    out = on(x, _gen(0))
    # The API never receives labels and returns only the images.
    assert isinstance(out, Tensor) and out.shape == x.shape
    with pytest.raises(Exception):
        on.flip = False  # type: ignore[misc]  # frozen
    with pytest.raises(ValueError):
        Augment(crop_padding=-1)
    with pytest.raises(ValueError):
        Augment(brightness=1.5)


def test_augment_applies_in_documented_order() -> None:
    x = _batch()
    aug = Augment(crop_padding=2, flip=True, cutout=3)
    g = _gen(7)
    expected = cutout(random_flip(random_crop(x, 2, g), g), 3, g)
    assert torch.equal(aug(x, _gen(7)), expected)


def test_generator_for_is_deterministic_and_distinct() -> None:
    def draw(*key: int) -> Tensor:
        return torch.rand(4, generator=generator_for(*key))

    assert torch.equal(draw(0, 1, 2, 3), draw(0, 1, 2, 3))
    keys = [(0, 0, 0, 1), (0, 0, 1, 0), (0, 1, 0, 0), (1, 0, 0, 0), (0, 0, 0, 0)]
    draws = [draw(*k) for k in keys]
    for i in range(len(draws)):
        for j in range(i + 1, len(draws)):
            assert not torch.equal(draws[i], draws[j])
    with pytest.raises(ValueError):
        generator_for(-1, 0, 0, 0)
