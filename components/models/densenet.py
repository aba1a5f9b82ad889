"""DenseNet-BC for small images (Huang et al. 2017): every layer sees every earlier layer's features.

    >>> DenseNet(3, 10, 32, depth=40, growth=12)     # DenseNet-BC-40, k=12
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.models.base import check_dims, kaiming_init

#: Bottleneck width of a dense layer's 1x1 conv, in multiples of the growth rate (the "B" in -BC).
BOTTLENECK = 4
#: Channel compression of the transition layers (the "C" in -BC).
COMPRESSION = 0.5


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k); its ``k`` new maps are concatenated to its input."""

    def __init__(self, in_ch: int, growth: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, BOTTLENECK * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(BOTTLENECK * growth)
        self.conv2 = nn.Conv2d(BOTTLENECK * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        new = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([x, new], dim=1)


class DenseBlock(nn.Sequential):
    probe = True  # components.diagnostics records this module's output


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (compress channels) - 2x2 average pool."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.BatchNorm2d(in_ch), nn.ReLU(), nn.Conv2d(in_ch, out_ch, 1, bias=False),
                         nn.AvgPool2d(2, ceil_mode=True))


class DenseNet(nn.Module):
    """DenseNet-BC: conv3x3 (2k) stem, three dense blocks of (depth-4)/6 layers with transitions, global pool.

    ``depth`` = 6n + 4 counts every conv and the classifier (40, 100, ...); ``growth`` is k.
    DenseNet-BC-100 with k=12 has 0.8M parameters.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, depth: int = 40,
                 growth: int = 12, dropout: float = 0.0, batchnorm: bool = True) -> None:
        super().__init__()
        check_dims(in_channels, num_classes, image_size)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"DenseNet-BC depth must be 6n+4 with n >= 1 (10, 22, 40, 100, ...), got {depth}")
        if growth < 1:
            raise ValueError(f"growth must be >= 1, got {growth}")
        if not batchnorm:
            raise ValueError("DenseNet's BN-ReLU-conv layers need batchnorm=true")
        n = (depth - 4) // 6
        ch = 2 * growth
        parts: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1, bias=False)]
        for b in range(3):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(ch, growth))
                ch += growth
            parts.append(DenseBlock(*layers))
            if b < 2:
                out = int(ch * COMPRESSION)
                parts.append(Transition(ch, out))
                ch = out
        self.features = nn.Sequential(*parts, nn.BatchNorm2d(ch), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(ch, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))
