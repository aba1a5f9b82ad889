"""Fully convolutional nets for semantic segmentation (course notes §11): images in, one score map per
class out, at the input's resolution.

    from components.models.segmentation import FCN, UNet

    net = UNet(in_channels=3, num_classes=4, width=16, depth=3)
    net(torch.rand(8, 3, 64, 64)).shape        # (8, 4, 64, 64): per-pixel class scores

* :class:`FCN` (Long et al. 2015, from scratch): a VGG-style encoder down-samples ``depth`` times;
  class scores from the deepest features are up-sampled by learned transposed convolutions (initialised
  to bilinear interpolation, as the paper does), and scores from each shallower stage are *added* on the
  way up (the skip connections that bring back the detail pooling threw away).
* :class:`UNet` (Ronneberger et al. 2015): the same kind of encoder; the decoder up-samples *features*
  with a transposed convolution, *concatenates* the encoder's features of that resolution and convolves
  twice, so fine detail and deep context meet at every scale.

Both pad an input whose sides are not multiples of ``2**depth`` and crop the scores back, so any image
size works (a served model gets whatever size a client sends). ``depth`` counts the down-samplings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FCN", "UNet", "bilinear_kernel"]


def _double_conv(in_ch: int, out_ch: int, batchnorm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(2):
        layers.append(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def bilinear_kernel(channels: int, kernel: int) -> Tensor:
    """Weights that make a ``kernel``-wide, stride kernel//2 transposed convolution up-sample each channel
    bilinearly (FCN's initialisation of its up-sampling layers): (channels, channels, kernel, kernel)."""
    factor = (kernel + 1) // 2
    centre = factor - 1 if kernel % 2 == 1 else factor - 0.5
    ramp = 1 - torch.abs(torch.arange(kernel, dtype=torch.float32) - centre) / factor
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return weight


def _check(depth: int, width: int) -> None:
    if not 1 <= depth <= 5:
        raise ValueError(f"a segmentation net's depth (down-samplings) must be 1..5, got {depth}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")


class _PadToMultiple(nn.Module):
    """Shared by both nets: pad H and W up to a multiple of 2**depth, run, crop the scores back."""

    depth: int

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        step = 2 ** self.depth
        ph, pw = -h % step, -w % step
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))  # zeros after normalisation: the dataset's mean colour
        return self.scores(x)[..., :h, :w]

    def scores(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class FCN(_PadToMultiple):
    """FCN-style: encoder stages of width w·2^i; a 1×1 score head on every stage's features, fused by
    addition while transposed convolutions up-sample ×2 at a time (FCN-8s stops three stages up; on
    64 px scenes the finest stages are what draws a clean edge)."""

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 16, depth: int = 3,
                 dropout: float = 0.0, batchnorm: bool = True) -> None:
        super().__init__()
        _check(depth, width)
        self.depth = depth
        widths = [width * 2 ** i for i in range(depth + 1)]
        self.stem = _double_conv(in_channels, widths[0], batchnorm)
        self.down = nn.ModuleList(_double_conv(widths[i], widths[i + 1], batchnorm) for i in range(depth))
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.heads = nn.ModuleList(nn.Conv2d(widths[i], num_classes, 1) for i in range(depth + 1))
        self.up = nn.ModuleList(nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
                                for _ in range(depth))
        for up in self.up:
            with torch.no_grad():
                up.weight.copy_(bilinear_kernel(num_classes, 4))

    def scores(self, x: Tensor) -> Tensor:
        features = [self.stem(x)]
        for block in self.down:
            features.append(block(F.max_pool2d(features[-1], 2)))
        score = self.heads[-1](self.dropout(features[-1]))
        for level in range(self.depth - 1, -1, -1):  # up one resolution at a time, adding that stage's scores
            score = self.up[level](score) + self.heads[level](features[level])
        return score


class UNet(_PadToMultiple):
    """U-Net: encoder of width w·2^i; each decoder step up-samples by a transposed convolution, concatenates
    the encoder's features at that resolution and convolves twice; a 1×1 convolution gives the scores."""

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 16, depth: int = 3,
                 dropout: float = 0.0, batchnorm: bool = True) -> None:
        super().__init__()
        _check(depth, width)
        self.depth = depth
        widths = [width * 2 ** i for i in range(depth + 1)]
        self.stem = _double_conv(in_channels, widths[0], batchnorm)
        self.down = nn.ModuleList(_double_conv(widths[i], widths[i + 1], batchnorm) for i in range(depth))
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth))
        self.merge = nn.ModuleList(_double_conv(2 * widths[i], widths[i], batchnorm) for i in range(depth))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def scores(self, x: Tensor) -> Tensor:
        features = [self.stem(x)]
        for block in self.down:
            features.append(block(F.max_pool2d(features[-1], 2)))
        y = self.dropout(features[-1])
        for level in range(self.depth - 1, -1, -1):
            y = self.merge[level](torch.cat([self.up[level](y), features[level]], dim=1))
        return self.head(y)
