"""Observation encoders in plain PyTorch: an MLP for vectors, a small CNN for stacked frames.

The CNN is the vision components' VGG-style trunk (``components.models.base.conv_bn_relu`` blocks, no
BatchNorm: batch statistics drift as the policy changes the data it sees) followed by a linear
projection, so an Atari policy reuses the same layers as the image classifiers::

    enc = build_encoder((4, 84, 84), kind="auto", hidden=256, layers=1, width=16)
    enc(torch.zeros(2, 4, 84, 84)).shape   # (2, 256)
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from components.models.base import conv_bn_relu

Activation = Literal["tanh", "relu"]


def mlp(in_dim: int, hidden: int, layers: int, activation: Activation = "tanh") -> nn.Sequential:
    act = nn.Tanh if activation == "tanh" else nn.ReLU
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(in_dim if i == 0 else hidden, hidden), act()]
    return nn.Sequential(*mods)


class FrameEncoder(nn.Module):
    """Stacked frames (N, C, H, W) in [0, 1] → (N, out_dim): two conv blocks of the vision ConvNet.

    Each block is conv3x3-ReLU x2 then a 2x2 max-pool; a third stride-2 pool brings 84x84 down to
    10x10 before the projection, which keeps the projection (the bulk of the parameters) small.
    """

    def __init__(self, in_channels: int, image_size: int, out_dim: int = 256, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, w, batchnorm=False), nn.MaxPool2d(2),
            *conv_bn_relu(w, 2 * w, batchnorm=False), nn.MaxPool2d(2),
            *conv_bn_relu(2 * w, 2 * w, batchnorm=False), nn.MaxPool2d(2),
        )
        side = image_size // 8
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * side * side, out_dim), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.features(x))


def is_image(obs_shape: Sequence[int]) -> bool:
    return len(obs_shape) == 3


def build_encoder(obs_shape: Sequence[int], *, kind: str = "auto", hidden: int = 64, layers: int = 2,
                  activation: Activation = "tanh", width: int = 16) -> nn.Module:
    """An encoder for observations of ``obs_shape``; its output width is ``encoder.out_dim``."""
    use_cnn = kind == "cnn" or (kind == "auto" and is_image(obs_shape))
    if use_cnn:
        if not is_image(obs_shape):
            raise ValueError(f"a cnn encoder needs image observations (C, H, W), got shape {tuple(obs_shape)}")
        c, h, w = obs_shape
        if h != w or h < 8:
            raise ValueError(f"the cnn encoder takes square frames of at least 8x8, got {h}x{w}")
        return FrameEncoder(c, h, out_dim=hidden, width=width)
    in_dim = int(torch.tensor(obs_shape).prod()) if len(obs_shape) else 1
    net = nn.Sequential(nn.Flatten(), mlp(in_dim, hidden, layers, activation)) if len(obs_shape) > 1 \
        else mlp(in_dim, hidden, layers, activation)
    net.out_dim = hidden if layers > 0 else in_dim  # type: ignore[attr-defined]
    return net
