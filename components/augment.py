"""Batch data augmentation as small pure tensor functions.

Every function takes a float batch ``x`` of shape (N, C, H, W) with values in
[0, 1] and an explicit ``torch.Generator``, returns a new batch of the same
shape, dtype and device, and never sees the labels (none of these change the
class). Work is vectorised over the batch, in the style of hlb-CIFAR10 and
airbench (``batch_flip_lr``, ``batch_crop``), so augmentation costs little next
to the forward pass, on CPU or GPU.

Random numbers are drawn on the generator's device and then moved to ``x``'s,
so a CPU generator gives the same augmentation for a batch on any device.

    >>> import torch
    >>> from components.augment import Augment, generator_for
    >>> augment = Augment(crop_padding=4, flip=True, cutout=8)
    >>> x = torch.rand(128, 3, 32, 32)
    >>> gen = generator_for(seed=0, epoch=3, rank=1, step=17)  # distinct per worker and step
    >>> x_aug = augment(x, gen)
    >>> x_aug.shape
    torch.Size([128, 3, 32, 32])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PaddingMode",
    "random_crop",
    "random_flip",
    "color_jitter",
    "cutout_mask",
    "cutout",
    "Augment",
    "generator_for",
]

PaddingMode = Literal["zeros", "reflect"]


def _check_batch(x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected a batch of shape (N, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a float batch in [0, 1], got dtype {x.dtype}")


def _uniform(n: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """n samples of U[0, 1) drawn from ``gen`` on its own device, moved to ``device``."""
    return torch.rand(n, generator=gen, device=gen.device).to(device)


def _randint(low: int, high: int, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """n integers in [low, high) drawn from ``gen`` on its own device, moved to ``device``."""
    return torch.randint(low, high, (n,), generator=gen, device=gen.device).to(device)


def random_crop(
    x: Tensor, padding: int, gen: torch.Generator, mode: PaddingMode = "zeros"
) -> Tensor:
    """Pad each side by ``padding`` then crop a random H x W window per sample.

    ``mode="zeros"`` is the He et al. (2016) CIFAR recipe; ``"reflect"`` is the
    airbench one. One gather over index grids does the whole batch. With
    ``padding=0`` the input is returned unchanged.
    """
    _check_batch(x)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0:
        return x
    n, _, h, w = x.shape
    if mode == "zeros":
        padded = F.pad(x, (padding,) * 4)
    elif mode == "reflect":
        if padding >= min(h, w):
            raise ValueError(f"reflect padding {padding} must be smaller than the image ({h}x{w})")
        padded = F.pad(x, (padding,) * 4, mode="reflect")
    else:
        raise ValueError(f"unknown padding mode {mode!r}; expected 'zeros' or 'reflect'")
    dy = _randint(0, 2 * padding + 1, n, gen, x.device)
    dx = _randint(0, 2 * padding + 1, n, gen, x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Indexing the channels-last view with three broadcast index tensors gives
    # (N, H, W, C) in one gather; permute back to channels-first.
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols]
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: Tensor, gen: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror each sample left-right with probability ``p``."""
    _check_batch(x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    flip = _uniform(x.shape[0], gen, x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def color_jitter(x: Tensor, brightness: float, contrast: float, gen: torch.Generator) -> Tensor:
    """Scale brightness and contrast by per-sample factors, then clamp to [0, 1].

    Brightness multiplies the image by ``b ~ U[1 - brightness, 1 + brightness]``;
    contrast scales the deviation from the sample's mean intensity by
    ``c ~ U[1 - contrast, 1 + contrast]`` (as torchvision's ColorJitter, with
    the mean over all channels rather than a grayscale conversion).
    """
    _check_batch(x)
    if not (0.0 <= brightness <= 1.0 and 0.0 <= contrast <= 1.0):
        raise ValueError(f"brightness and contrast must be in [0, 1], got {brightness}, {contrast}")
    n = x.shape[0]
    out = x
    if brightness > 0:
        b = 1.0 + brightness * (2.0 * _uniform(n, gen, x.device) - 1.0)
        out = out * b.to(x.dtype)[:, None, None, None]
    if contrast > 0:
        c = 1.0 + contrast * (2.0 * _uniform(n, gen, x.device) - 1.0)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * c.to(x.dtype)[:, None, None, None] + mean
    return out.clamp(0.0, 1.0) if out is not x else x


def cutout_mask(n: int, height: int, width: int, size: int, gen: torch.Generator,
                device: torch.device | str = "cpu") -> Tensor:
    """Boolean (N, 1, H, W) mask with one ``size`` x ``size`` square per sample.

    Squares lie fully inside the image (as in hlb-CIFAR10), so each sample has
    exactly ``size**2`` masked pixels.
    """
    if not 0 < size <= min(height, width):
        raise ValueError(f"cutout size must be in [1, {min(height, width)}], got {size}")
    device = torch.device(device)
    top = _randint(0, height - size + 1, n, gen, device)
    left = _randint(0, width - size + 1, n, gen, device)
    ys = torch.arange(height, device=device)[None, :]
    xs = torch.arange(width, device=device)[None, :]
    in_rows = (ys >= top[:, None]) & (ys < top[:, None] + size)  # (N, H)
    in_cols = (xs >= left[:, None]) & (xs < left[:, None] + size)  # (N, W)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def cutout(x: Tensor, size: int, gen: torch.Generator, fill: float | None = None) -> Tensor:
    """Replace one ``size`` x ``size`` square per sample (DeVries & Taylor 2017).

    ``fill=None`` uses the batch's per-channel mean, which after input
    normalisation is ~0, i.e. the original paper's zeroed patch; pass a number
    (e.g. 0.0 or 0.5) for a constant fill.
    """
    _check_batch(x)
    if size == 0:
        return x
    n, _, h, w = x.shape
    mask = cutout_mask(n, h, w, size, gen, x.device)
    if fill is None:
        value = x.mean(dim=(0, 2, 3), keepdim=True)
    else:
        value = torch.tensor(fill, dtype=x.dtype, device=x.device)
    return torch.where(mask, value, x)


@dataclass(frozen=True)
class Augment:
    """The enabled augmentations, applied in the order crop, flip, jitter, cutout.

    All fields off (the default) is the identity. Calling it returns only the
    augmented images: labels never pass through augmentation.
    """

    crop_padding: int = 0
    flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    cutout: int = 0
    crop_mode: PaddingMode = "zeros"

    def __post_init__(self) -> None:
        if self.crop_padding < 0 or self.cutout < 0:
            raise ValueError("crop_padding and cutout must be >= 0")
        if not (0.0 <= self.brightness <= 1.0 and 0.0 <= self.contrast <= 1.0):
            raise ValueError("brightness and contrast must be in [0, 1]")
        if self.crop_mode not in ("zeros", "reflect"):
            raise ValueError(f"crop_mode must be 'zeros' or 'reflect', got {self.crop_mode!r}")

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is switched on."""
        return bool(self.crop_padding or self.flip or self.brightness or self.contrast or self.cutout)

    def __call__(self, x: Tensor, gen: torch.Generator) -> Tensor:
        _check_batch(x)
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, gen, mode=self.crop_mode)
        if self.flip:
            x = random_flip(x, gen)
        if self.brightness or self.contrast:
            x = color_jitter(x, self.brightness, self.contrast, gen)
        if self.cutout:
            x = cutout(x, self.cutout, gen)
        return x


def generator_for(
    seed: int, epoch: int, rank: int, step: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator seeded distinctly and reproducibly for (seed, epoch, rank, step).

    NumPy's SeedSequence hashes the four numbers together, so nearby tuples
    (e.g. rank 0 step 1 vs rank 1 step 0) give unrelated streams, unlike
    ``seed + rank + step`` arithmetic.
    """
    if min(seed, epoch, rank, step) < 0:
        raise ValueError(f"seed, epoch, rank and step must be >= 0, got {(seed, epoch, rank, step)}")
    state = np.random.SeedSequence([seed, epoch, rank, step]).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator(device=device)
    # torch takes seeds below 2**64 as Python ints; keep 63 bits so it stays a
    # valid int64 wherever it is logged or passed on.
    gen.manual_seed(int(state) & ((1 << 63) - 1))
    return gen
