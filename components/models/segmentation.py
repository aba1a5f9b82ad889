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
* :class:`FCNResNet`: the FCN's decoder on the classification zoo's CIFAR ResNet (ResNet-20 by default),
  whose ``backbone.stem`` / ``backbone.stages`` are the classifier's own tensors, so a registered
  classifier can start it (``model.backbone_from``, components.transfer.backbone_state), as it starts the
  detectors.

All pad an input whose sides are not multiples of their total stride and crop the scores back, so any
image size works (a served model gets whatever size a client sends). For FCN and U-Net ``depth`` counts
the down-samplings; for FCNResNet it is the ResNet's depth (6n+2 layers), and the stride is 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FCN", "FCNResNet", "UNet", "bilinear_kernel"]


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
    """Shared by every net here: pad H and W up to a multiple of 2**downsamplings, run, crop the scores back."""

    downsamplings: int

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        step = 2 ** self.downsamplings
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
        self.depth = self.downsamplings = depth
        widths = [width * 2 ** i for i in range(depth + 1)]
        self.stem = _double_conv(in_channels, widths[0], batchnorm)
        self.down = nn.ModuleList(_double_conv(widths[i], widths[i + 1], batchnorm) for i in range(depth))
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.heads = nn.ModuleList(nn.Conv2d(widths[i], num_classes, 1) for i in range(depth + 1))
        self.up = nn.ModuleList(_upsampler(num_classes) for _ in range(depth))

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
        self.depth = self.downsamplings = depth
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


def _upsampler(channels: int) -> nn.ConvTranspose2d:
    """A ×2 transposed convolution of class scores, initialised to bilinear interpolation."""
    up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 4))
    return up


class FCNResNet(_PadToMultiple):
    """FCN on a CIFAR ResNet trunk (the classification zoo's ``resnet``, depth 20 and width 16 by default).

    The trunk is the classifier's stem and three stages, kept under ``backbone.`` with the classifier's own
    names, so its state dict loads a registered ResNet classifier's (minus ``fc``). As in the detectors, the
    stem is strided (the same weights, every other pixel), so a 64 px scene costs what a 32 px CIFAR image
    does: the stages sit at strides 2, 4 and 8. A 1×1 score head reads each stage; scores are up-sampled ×2
    at a time by bilinear-initialised transposed convolutions and added (FCN's skips), and the last step
    adds the scores of one full-resolution convolution of the image, which brings back the edges that the
    strided stem skipped."""

    downsamplings = 3

    def __init__(self, in_channels: int, num_classes: int, *, depth: int = 20, width: int = 16,
                 dropout: float = 0.0, batchnorm: bool = True) -> None:
        from components.models.base import conv_bn_relu
        from components.models.resnet import ResNet

        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        res = ResNet(in_channels, num_classes, 32, depth=depth, width=width, batchnorm=batchnorm)
        self.backbone = nn.Module()
        self.backbone.stem, self.backbone.stages = res.stem, res.stages
        self.backbone.stem[0].stride = (2, 2)
        n = len(res.stages) // 3
        self.split = (n, 2 * n)  # the blocks that end stage 1 (stride 2) and stage 2 (stride 4)
        self.detail = nn.Sequential(*conv_bn_relu(in_channels, width, batchnorm))
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in (width, width, 2 * width, 4 * width))
        self.up = nn.ModuleList(_upsampler(num_classes) for _ in range(3))

    def scores(self, x: Tensor) -> Tensor:
        stages = self.backbone.stages
        c1 = stages[:self.split[0]](self.backbone.stem(x))  # stride 2
        c2 = stages[self.split[0]:self.split[1]](c1)  # stride 4
        c3 = stages[self.split[1]:](c2)  # stride 8
        score = self.heads[3](self.dropout(c3))
        for level, features in ((2, c2), (1, c1), (0, self.detail(x))):
            score = self.up[level](score) + self.heads[level](features)
        return score
