"""Residual nets of lecture 9: CIFAR ResNets (basic and bottleneck blocks, ResNeXt) and a wide ResNet.

    >>> resnet(20)                     # He et al. 2016, section 4.2: 0.27M parameters
    >>> ResNet(3, 10, 32, depth=29, block="bottleneck", groups=8, width=32)   # a small ResNeXt-29
    >>> WideResNet(3, 10, 32, depth=16, widen=4)                              # WRN-16-4
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from components.models.base import check_dims, conv_bn_relu, kaiming_init


class _PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially, zero-pad the new channels (no parameters)."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))


def _bn(ch: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(ch) if batchnorm else nn.Identity()


def _shortcut(in_ch: int, out_ch: int, stride: int, kind: Literal["A", "B"], batchnorm: bool) -> nn.Module:
    """The identity when the block keeps the shape; else option A (subsample and zero-pad, no
    parameters) or option B (a strided 1x1 conv and BN: a projection)."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    if kind == "A":
        return _PadShortcut(stride, out_ch - in_ch)
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=not batchnorm), _bn(out_ch, batchnorm))


class _ResidualBlock(nn.Module):
    """A post-activation residual block: ReLU(``residual(x)`` + ``shortcut(x)``)."""

    probe = True  # components.diagnostics records this module's output
    shortcut: nn.Module

    def residual(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.residual(x) + self.shortcut(x), inplace=True)


def _stages(widths: Sequence[int], n: int, in_ch: int,
            block: Callable[[int, int, int], nn.Module]) -> tuple[list[nn.Module], int]:
    """``n`` blocks per stage, ``block(in_ch, out_ch, stride)``; the first block of every stage after
    the first has stride 2 (it halves the feature maps). Returns the blocks and their output channels."""
    blocks: list[nn.Module] = []
    for stage, out_ch in enumerate(widths):
        for i in range(n):
            blocks.append(block(in_ch, out_ch, 2 if stage > 0 and i == 0 else 1))
            in_ch = out_ch
    return blocks, in_ch


class BasicBlock(_ResidualBlock):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU (He et al. 2016, Fig. 2)."""

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        *,
        shortcut: Literal["A", "B"] = "B",
        batchnorm: bool = True,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if groups != 1:
            raise ValueError("grouped convolutions (ResNeXt) need block='bottleneck'")
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=not batchnorm)
        self.bn1 = _bn(out_ch, batchnorm)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=not batchnorm)
        self.bn2 = _bn(out_ch, batchnorm)
        self.shortcut = _shortcut(in_ch, out_ch, stride, shortcut, batchnorm)

    def residual(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.bn2(self.conv2(out))

    @property
    def last_bn(self) -> nn.Module:
        return self.bn2


class Bottleneck(_ResidualBlock):
    """1x1 (reduce to ``mid``) - 3x3 - 1x1 (expand to ``4*mid``), each with BN, plus shortcut, then ReLU.

    He et al. (2016) Fig. 5 right: the 1x1 convs make a deep net affordable. With ``groups > 1`` the
    3x3 is a grouped convolution: a ResNeXt block (Xie et al. 2017) of cardinality ``groups``.
    Constructed like :class:`BasicBlock` with ``out_ch = 4*mid``.
    """

    expansion = 4

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, shortcut: Literal["A", "B"] = "B",
                 batchnorm: bool = True, groups: int = 1) -> None:
        super().__init__()
        mid = out_ch // self.expansion
        if mid % groups:
            raise ValueError(f"bottleneck width {mid} is not divisible by groups={groups}")
        self.conv1, self.bn1 = nn.Conv2d(in_ch, mid, 1, bias=not batchnorm), _bn(mid, batchnorm)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=groups, bias=not batchnorm)
        self.bn2 = _bn(mid, batchnorm)
        self.conv3, self.bn3 = nn.Conv2d(mid, out_ch, 1, bias=not batchnorm), _bn(out_ch, batchnorm)
        # option A only widens: a block that narrows (out_ch < in_ch) projects instead
        self.shortcut = _shortcut(in_ch, out_ch, stride, shortcut if out_ch >= in_ch else "B", batchnorm)

    def residual(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        return self.bn3(self.conv3(out))

    @property
    def last_bn(self) -> nn.Module:
        return self.bn3


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
#: Layers per block: depth = LAYERS_PER_BLOCK * 3 stages * n + 2 (stem conv and classifier).
LAYERS_PER_BLOCK = {"basic": 2, "bottleneck": 3}


class ResNet(nn.Module):
    """CIFAR ResNet: conv3x3, three stages of ``n`` blocks, global avg pool, linear.

    Basic blocks: stage widths ``w, 2w, 4w``, depth = 6n + 2 (n=3 is ResNet-20, 5 ResNet-32,
    9 ResNet-56). Bottleneck blocks: inner widths ``w, 2w, 4w`` expanded 4x, depth = 9n + 2
    (ResNet-29, -56, -164); ``groups > 1`` makes them ResNeXt blocks. Stages 2 and 3 start with
    stride 2. ``image_size`` is accepted for a uniform constructor; the global pool makes any
    size >= 8 work.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        depth: int = 20,
        width: int = 16,
        shortcut: Literal["A", "B"] = "B",
        batchnorm: bool = True,
        dropout: float = 0.0,
        zero_init_residual: bool = False,
        block: str = "basic",
        groups: int = 1,
    ) -> None:
        super().__init__()
        check_dims(in_channels, num_classes, image_size)
        if block not in BLOCKS:
            raise ValueError(f"unknown ResNet block {block!r}; expected one of {tuple(BLOCKS)}")
        per = 3 * LAYERS_PER_BLOCK[block]
        if depth < per + 2 or (depth - 2) % per != 0:
            examples = "8, 14, 20, 32, ..." if block == "basic" else "11, 29, 56, ..."
            raise ValueError(f"ResNet depth with {block} blocks must be {per}n+2 with n >= 1 ({examples}), "
                             f"got {depth}")
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // per
        cls = BLOCKS[block]
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, width, batchnorm))
        blocks, in_ch = _stages([w * cls.expansion for w in (width, 2 * width, 4 * width)], n, width,
                                lambda i, o, stride: cls(i, o, stride, shortcut=shortcut, batchnorm=batchnorm,
                                                         groups=groups))
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_ch, num_classes)
        kaiming_init(self)
        if zero_init_residual and batchnorm:
            # Each block then starts as the identity (Goyal et al. 2017), which
            # helps large-batch training.
            for b in blocks:
                nn.init.zeros_(b.last_bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(self.dropout(x.flatten(1)))


def resnet(
    depth: int,
    width: int = 16,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    shortcut: Literal["A", "B"] = "B",
    batchnorm: bool = True,
    dropout: float = 0.0,
    zero_init_residual: bool = False,
    block: str = "basic",
    groups: int = 1,
) -> ResNet:
    """CIFAR-style ResNet of ``depth`` = 6n+2 layers (20, 32, 44, 56, 110), 9n+2 with bottlenecks."""
    return ResNet(
        in_channels,
        num_classes,
        image_size,
        depth=depth,
        width=width,
        shortcut=shortcut,
        batchnorm=batchnorm,
        dropout=dropout,
        zero_init_residual=zero_init_residual,
        block=block,
        groups=groups,
    )


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3 plus shortcut: the wide ResNet block (pre-activation)."""

    probe = True

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bn2, self.conv2 = nn.BatchNorm2d(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.shortcut = (None if stride == 1 and in_ch == out_ch
                         else nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.dropout(self.conv1(pre)))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """Wide ResNet WRN-``depth``-``widen`` (Zagoruyko & Komodakis 2016): fewer, wider pre-activation blocks.

    Stages of (depth - 4) / 6 blocks with 16k, 32k, 64k channels; dropout sits between the two convs of
    a block, as in the paper. WRN-16-4 has 2.7M parameters, WRN-16-2 0.69M.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, depth: int = 16,
                 widen: int = 2, dropout: float = 0.0, batchnorm: bool = True) -> None:
        super().__init__()
        check_dims(in_channels, num_classes, image_size)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"wide ResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        if widen < 1:
            raise ValueError(f"widen must be >= 1, got {widen}")
        if not batchnorm:
            raise ValueError("a wide ResNet's pre-activation blocks need batchnorm=true")
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks, in_ch = _stages((16 * widen, 32 * widen, 64 * widen), n, 16,
                                lambda i, o, stride: PreActBlock(i, o, stride, dropout))
        self.stages = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_ch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.stages(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))
