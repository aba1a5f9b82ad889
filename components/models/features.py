"""Hand-made features (CS231n §3.2): HOG and colour histograms as torch ops, then a linear classifier.

The features are computed inside the model's forward, so the registered model still takes raw
images and the one training loop trains it like any net (``model=hoglinear``)::

    visionray run train model=hoglinear train.loss=svm train.lr=0.01 train.optimizer=sgd
    net = build_hoglinear(in_channels=1, num_classes=10, image_size=28)   # 28x28: 7x7 cells

Both extractors take the normalised images the model receives (N, C, H, W). HOG (Dalal & Triggs)
works on the channel mean: central-difference gradients, unsigned orientations in
``orientations`` bins (hard assignment, as scikit-image's ``hog``), the mean magnitude per bin
in each ``cell x cell`` cell, then each 2x2-cell block L2-normalised. The colour histogram counts,
per channel, the fraction of pixels in each of ``bins`` equal bins over [lo, hi] standard
deviations (the per-channel normaliser puts the pixels there). A BatchNorm without affine
parameters standardises the features (the "subtract the mean feature, divide by the std" step of
the course); the linear layer on top starts near zero, so the first loss is ln C (or C - 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class HOG(nn.Module):
    """Histogram of oriented gradients: (N, C, H, W) → (N, blocks · block² · orientations)."""

    def __init__(self, cell: int = 7, orientations: int = 9, block: int = 2, eps: float = 1e-5) -> None:
        super().__init__()
        if cell < 2 or orientations < 2 or block < 1:
            raise ValueError(f"need cell >= 2, orientations >= 2, block >= 1; got {cell}, {orientations}, {block}")
        self.cell, self.orientations, self.block, self.eps = cell, orientations, block, eps

    def cells(self, x: Tensor) -> Tensor:
        """Per-cell orientation histograms (N, orientations, H // cell, W // cell)."""
        g = x.mean(1)  # grey: the channel mean
        gx = torch.zeros_like(g)
        gy = torch.zeros_like(g)
        gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]  # border gradients stay 0, as in scikit-image
        gy[:, 1:-1, :] = g[:, 2:, :] - g[:, :-2, :]
        magnitude = torch.sqrt(gx * gx + gy * gy)
        angle = torch.remainder(torch.atan2(gy, gx), math.pi)  # unsigned: [0, pi)
        bins = (angle * (self.orientations / math.pi)).floor().long().clamp_(0, self.orientations - 1)
        per_bin = F.one_hot(bins, self.orientations).to(g.dtype) * magnitude[..., None]
        ch, cw = g.shape[1] // self.cell, g.shape[2] // self.cell
        per_bin = per_bin[:, :ch * self.cell, :cw * self.cell].permute(0, 3, 1, 2)
        return F.avg_pool2d(per_bin, self.cell)

    def forward(self, x: Tensor) -> Tensor:
        h = self.cells(x)
        b = min(self.block, h.shape[2], h.shape[3])
        blocks = F.unfold(h, b)  # (N, orientations·b·b, number of blocks), stride 1 as in Dalal & Triggs
        # unfold orders each column channel-major; normalise each block as one vector
        blocks = blocks / torch.sqrt((blocks * blocks).sum(1, keepdim=True) + self.eps ** 2)
        return blocks.transpose(1, 2).flatten(1)


class ColorHistogram(nn.Module):
    """Per-channel histograms of pixel values: (N, C, H, W) → (N, C · bins), each row of a channel sums to 1."""

    def __init__(self, bins: int = 16, lo: float = -3.0, hi: float = 3.0) -> None:
        super().__init__()
        if bins < 2 or not hi > lo:
            raise ValueError(f"need bins >= 2 and hi > lo; got {bins}, [{lo}, {hi}]")
        self.bins, self.lo, self.hi = bins, lo, hi

    def forward(self, x: Tensor) -> Tensor:
        idx = ((x - self.lo) * (self.bins / (self.hi - self.lo))).floor().long().clamp_(0, self.bins - 1)
        return F.one_hot(idx, self.bins).to(x.dtype).mean((2, 3)).flatten(1)


class FeaturesLinear(nn.Module):
    """HOG + colour histogram → standardised → linear scores: the §3.2 baseline."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, cell: int | None = None,
                 orientations: int = 9, bins: int = 16, dropout: float = 0.0, init_std: float = 0.001) -> None:
        super().__init__()
        cell = cell or max(2, image_size // 4)  # 4x4 cells at any size: 7 px at 28, 8 px at 32, 2 px at 8
        self.hog = HOG(cell, orientations)
        self.hist = ColorHistogram(bins)
        with torch.no_grad():
            dim = self.extract(torch.zeros(1, in_channels, image_size, image_size)).shape[1]
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(dim, num_classes)
        nn.init.normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def extract(self, x: Tensor) -> Tensor:
        return torch.cat([self.hog(x), self.hist(x)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.norm(self.extract(x.float()))))


def build_hoglinear(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0,
                    **_: object) -> FeaturesLinear:
    """``build_model("hoglinear", ...)``."""
    return FeaturesLinear(in_channels, num_classes, image_size, dropout=dropout)
