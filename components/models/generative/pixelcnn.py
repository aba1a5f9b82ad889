"""PixelCNN (van den Oord et al. 2016): an exact autoregressive likelihood from masked convolutions.

    net = PixelCNN(in_channels=1, image_size=28, levels=256, width=32, depth=5)
    out = net(x)                     # bits_per_dim: -log2 p(x) / (C·H·W), exact, in one forward pass
    net.generate([0, 1, 2])          # pixel by pixel, each image from its own seed

p(x) = Π_i p(x_i | x_<i) in raster order (row by row, left to right; within a pixel, channel by channel).
A masked convolution zeroes the kernel weights that would let output i see input i or later: type A (the
first layer) also hides the centre pixel's own value, type B (every later layer) lets a position see its
own features, which already depend only on earlier pixels. Each output is a ``levels``-way softmax
(256 grey levels), so the loss is the data's negative log-likelihood itself.

Sampling runs the network once per pixel value. Output row r depends only on input rows r - (3 + depth)
to r (the 7×7 type-A layer reaches 3 rows up, each 3×3 type-B layer one more), so each step runs on that
band of rows, not the whole image: the same result, a third of the work at 28×28.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from components.likelihood import bits_per_dim, discrete_nll, to_levels
from components.models.generative.base import GenerativeModel, seeded_uniform


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only earlier pixels (rows above; the same row to the left) and, at the centre,
    earlier channel groups (type A) or earlier-or-same groups (type B). ``groups_of`` is the image's channel
    count: input and output channels are split into that many contiguous groups, group g predicting
    channel g (R, then G given R, then B given both)."""

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int, groups_of: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', not {mask_type!r}")
        if in_channels % groups_of or out_channels % groups_of:
            raise ValueError(f"channels {in_channels}->{out_channels} must divide into {groups_of} colour groups")
        k, c = kernel_size, kernel_size // 2
        mask = torch.zeros(out_channels, in_channels, k, k)
        mask[:, :, :c, :] = 1  # every row above
        mask[:, :, c, :c] = 1  # the same row, left of the centre
        g_out = torch.arange(out_channels) // (out_channels // groups_of)
        g_in = torch.arange(in_channels) // (in_channels // groups_of)
        sees = g_in[None, :] < g_out[:, None] if mask_type == "A" else g_in[None, :] <= g_out[:, None]
        mask[:, :, c, c] = sees.float()
        self.register_buffer("mask", mask, persistent=False)
        self.mask_type = mask_type

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class ResidualBlock(nn.Module):
    """1×1 down to half the width, a masked 3×3, 1×1 back up, added to the input (the paper's Fig. 5)."""

    def __init__(self, width: int, groups_of: int):
        super().__init__()
        h = width // 2
        self.body = nn.Sequential(
            nn.ReLU(), MaskedConv2d("B", width, h, 1, groups_of),
            nn.ReLU(), MaskedConv2d("B", h, h, 3, groups_of),
            nn.ReLU(), MaskedConv2d("B", h, width, 1, groups_of))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class PixelCNN(GenerativeModel):
    OPTIONS: ClassVar[tuple[str, ...]] = ("width", "depth")

    def __init__(self, in_channels: int, image_size: int, levels: int = 256, num_classes: int = 0,
                 width: int = 32, depth: int = 5):
        super().__init__(in_channels, image_size, levels, num_classes)
        g = in_channels
        width = max(2 * g, width // (2 * g) * (2 * g))  # whole colour groups, halvable in the blocks
        self.depth = depth
        self.net = nn.Sequential(
            MaskedConv2d("A", in_channels, width, 7, g),
            *[ResidualBlock(width, g) for _ in range(depth)],
            nn.ReLU(), MaskedConv2d("B", width, width, 1, g),
            nn.ReLU(), MaskedConv2d("B", width, in_channels * levels, 1, g))

    def logits(self, x: Tensor) -> Tensor:
        """B×C×L×H×W: the distribution of each pixel value given the ones before it."""
        out = self.net(x * 2 - 1)
        b, _, h, w = out.shape
        return out.view(b, self.in_channels, self.levels, h, w)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        target = to_levels(x, self.levels)  # levels=2: the binarised image (pixel > 127)
        nll = discrete_nll(self.logits(target.float() / (self.levels - 1)), target)
        bpd = bits_per_dim(nll, self.dims)
        return {"loss": bpd.mean(), "bits_per_dim": bpd}

    @property
    def reach(self) -> int:
        """How many rows above an output row its value depends on."""
        return 3 + self.depth

    @torch.no_grad()
    def generate(self, seeds: Sequence[int], labels: Sequence[int] | None = None, band: bool = True) -> Tensor:
        """Pixel by pixel; every value is drawn by inverting the softmax's CDF at a uniform from the image's own
        seed, so an image depends on its seed alone (not on the batch it is drawn in)."""
        c, s, levels = self.in_channels, self.image_size, self.levels
        device = next(self.parameters()).device
        u = seeded_uniform(seeds, (s, s, c)).to(device)
        x = torch.zeros(len(seeds), c, s, s, device=device)
        for r in range(s):
            top = max(0, r - self.reach) if band else 0
            for col in range(s):
                for ch in range(c):
                    probs = self.logits(x[:, :, top:r + 1])[:, ch, :, r - top, col].float().softmax(-1)
                    cdf = probs.cumsum(-1)
                    value = torch.searchsorted(cdf, u[:, r, col, ch:ch + 1].contiguous()).clamp_(max=levels - 1)
                    x[:, ch, r, col] = value[:, 0].float() / (levels - 1)
        return self.to_uint8(to_levels(x, levels).float())
