"""Plain convolutional nets of lecture 9, sized for 28-32 px inputs (8 px digits work too).

* :class:`ConvNet` - the small VGG-style net of the quickstart.
* :class:`AlexNet` - 5 convs (5x5, 5x5, 3x3 x3) with overlapping 3/2 max-pooling, LRN or BN, 2 FC layers.
* :class:`VGG` - 3x3 conv stacks only, channels doubling per stage (Simonyan & Zisserman 2015).
* :class:`GoogLeNet` - Inception modules with 1x1 bottlenecks, global average pooling, no FC stack.

Every net is ``Net(in_channels, num_classes, image_size, *, width, dropout, batchnorm)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from components.models.base import check_dims, conv_bn_relu, kaiming_init


class ConvNet(nn.Module):
    """Small VGG-style net: [conv3x3-BN-ReLU x2, maxpool] x2, dropout, linear head.

    Channels are ``width`` in the first block and ``2*width`` in the second; the
    head is a single ``Linear`` on the flattened (2w, S/4, S/4) feature map
    (kept spatial rather than globally pooled: position matters on centred
    datasets like Fashion-MNIST and the head costs only ~31k MACs at 28px).

    Cost at 28x28x1, 10 classes (measured with :func:`count_macs`):
    ``width=32``: 18.3 MMACs, 0.10M params; ``width=24``: 10.3 MMACs, 0.06M params.
    Almost all of it is the two convs at full resolution, ~7056*w**2 MACs each.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        width: int = 32,
        dropout: float = 0.1,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        check_dims(in_channels, num_classes, image_size)
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        w = width
        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, w, batchnorm),
            *conv_bn_relu(w, w, batchnorm),
            nn.MaxPool2d(2),
            *conv_bn_relu(w, 2 * w, batchnorm),
            *conv_bn_relu(2 * w, 2 * w, batchnorm),
            nn.MaxPool2d(2),
        )
        # Two 2x2 pools floor the size twice, which equals image_size // 4. The
        # adaptive pool is a no-op at the declared size and keeps the head's
        # input fixed if a slightly different size is fed in.
        head_size = max(1, image_size // 4)
        self.pool = nn.AdaptiveAvgPool2d(head_size)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(2 * w * head_size * head_size, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x))
        return self.fc(self.dropout(x.flatten(1)))


def _pooled(size: int, times: int) -> int:
    """Side after ``times`` max-pools of kernel 3, stride 2, padding 1: ceil(size / 2) each."""
    for _ in range(times):
        size = math.ceil(size / 2)
    return max(1, size)


class AlexNet(nn.Module):
    """AlexNet (Krizhevsky et al. 2012) scaled down to small images.

    conv5x5(w) - pool - conv5x5(3w) - pool - conv3x3(6w) - conv3x3(4w) - conv3x3(4w) - pool,
    then FC(16w) - FC(16w) - classes with dropout before each FC, as in the paper. The 11x11/4
    first conv of the original would leave nothing of a 28 px image, so it is 5x5/1 here.
    Pools are the paper's overlapping 3x3 stride 2 (padded so 8 px inputs still fit).
    ``batchnorm=False`` uses the paper's local response normalisation after conv 1 and 2.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, width: int = 32,
                 dropout: float = 0.5, batchnorm: bool = True) -> None:
        super().__init__()
        check_dims(in_channels, num_classes, image_size)
        w = width

        def norm(ch: int) -> nn.Module:
            return nn.BatchNorm2d(ch) if batchnorm else nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)

        def pool() -> nn.Module:
            return nn.MaxPool2d(3, stride=2, padding=1)

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 5, padding=2), norm(w), nn.ReLU(inplace=True), pool(),
            nn.Conv2d(w, 3 * w, 5, padding=2), norm(3 * w), nn.ReLU(inplace=True), pool(),
            *conv_bn_relu(3 * w, 6 * w, batchnorm),
            *conv_bn_relu(6 * w, 4 * w, batchnorm),
            *conv_bn_relu(4 * w, 4 * w, batchnorm),
            pool(),
        )
        side = _pooled(image_size, 3)
        self.pool = nn.AdaptiveAvgPool2d(side)  # a no-op at the declared size
        drop = (lambda: nn.Dropout(dropout)) if dropout > 0 else nn.Identity
        self.classifier = nn.Sequential(
            drop(), nn.Linear(4 * w * side * side, 16 * w), nn.ReLU(inplace=True),
            drop(), nn.Linear(16 * w, 16 * w), nn.ReLU(inplace=True),
            nn.Linear(16 * w, num_classes),
        )
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


#: VGG stages: (channel multiple of ``width``, 3x3 convs). Two stacked 3x3 convs see 5x5, three see 7x7,
#: with fewer parameters and more non-linearities than one big kernel (the VGG argument).
VGG_STAGES: tuple[tuple[int, int], ...] = ((1, 2), (2, 2), (4, 3), (8, 3))


class VGG(nn.Module):
    """VGG-style net: four stages of 3x3 conv-BN-ReLU stacks (2, 2, 3, 3 convs = VGG-13-ish depth).

    2x2 max-pools follow the first three stages (28 -> 14 -> 7 -> 3), the last stage is
    globally averaged, then FC(8w) - classes. ``width`` is the first stage's channels.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, width: int = 32,
                 dropout: float = 0.5, batchnorm: bool = True) -> None:
        super().__init__()
        check_dims(in_channels, num_classes, image_size)
        layers: list[nn.Module] = []
        ch = in_channels
        for i, (mult, convs) in enumerate(VGG_STAGES):
            for _ in range(convs):
                layers += conv_bn_relu(ch, mult * width, batchnorm)
                ch = mult * width
            if i < len(VGG_STAGES) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        drop = (lambda: nn.Dropout(dropout)) if dropout > 0 else nn.Identity
        self.classifier = nn.Sequential(drop(), nn.Linear(ch, ch), nn.ReLU(inplace=True), drop(),
                                        nn.Linear(ch, num_classes))
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class Inception(nn.Module):
    """GoogLeNet's Inception module: 1x1 | 1x1-3x3 | 1x1-5x5 | maxpool-1x1, concatenated.

    The 1x1 "bottleneck" convs before the 3x3 and 5x5 cut their input channels, which is where
    GoogLeNet saves most of its compute (lecture 9).
    """

    probe = True  # components.diagnostics records this module's output

    def __init__(self, in_ch: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int,
                 batchnorm: bool = True) -> None:
        super().__init__()

        def cbr(i: int, o: int, k: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, bias=not batchnorm),
                                 nn.BatchNorm2d(o) if batchnorm else nn.Identity(), nn.ReLU(inplace=True))

        self.b1 = cbr(in_ch, c1, 1)
        self.b3 = nn.Sequential(cbr(in_ch, c3r, 1), cbr(c3r, c3, 3))
        self.b5 = nn.Sequential(cbr(in_ch, c5r, 1), cbr(c5r, c5, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), cbr(in_ch, pool_proj, 1))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


#: Inception 3a, 3b, (pool), 4a, 4b of Szegedy et al. (2015) Table 1: (1x1, 3x3 reduce, 3x3, 5x5 reduce,
#: 5x5, pool proj), scaled by width/64.
GOOGLENET_MODULES: tuple[tuple[int, ...] | str, ...] = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "pool",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64))


class GoogLeNet(nn.Module):
    """GoogLeNet-style net: 3x3 stem (3w channels), pool, Inception 3a/3b, pool, 4a/4b, global pool, FC.

    ``width=64`` gives the paper's channel counts for these modules; the default 32 halves them.
    The stem is one 3x3 conv instead of the 7x7/2 + 3x3 of the original (made for 224 px).
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, width: int = 32,
                 dropout: float = 0.2, batchnorm: bool = True) -> None:
        super().__init__()
        check_dims(in_channels, num_classes, image_size)

        def scale(c: int) -> int:
            return max(1, round(c * width / 64))

        stem = scale(192)
        layers: list[nn.Module] = [*conv_bn_relu(in_channels, stem, batchnorm),
                                   nn.MaxPool2d(3, stride=2, padding=1)]
        ch = stem
        for spec in GOOGLENET_MODULES:
            if spec == "pool":
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
                continue
            c1, c3r, c3, c5r, c5, pp = (scale(c) for c in spec)
            block = Inception(ch, c1, c3r, c3, c5r, c5, pp, batchnorm)
            layers.append(block)
            ch = block.out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(ch, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))
