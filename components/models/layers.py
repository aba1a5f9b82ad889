"""Activations and weight initialisations of CS231n lectures 4-6, by name.

    >>> from components.models.layers import make_activation, init_linear
    >>> act = make_activation("leaky_relu", 64)        # any of ACTIVATIONS
    >>> layer = torch.nn.Linear(784, 64); init_linear(layer, "he")

Maxout changes the shape of the layer before it (it takes ``pieces`` times the
units it returns), so :func:`dense_unit` builds "Linear + activation" as one
piece and the MLP never has to know.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

Activation = Literal["relu", "sigmoid", "tanh", "leaky_relu", "prelu", "elu", "maxout"]
ACTIVATIONS: tuple[str, ...] = ("relu", "sigmoid", "tanh", "leaky_relu", "prelu", "elu", "maxout")
Init = Literal["small", "xavier", "he"]
INITS: tuple[str, ...] = ("small", "xavier", "he")

#: The course's "small random numbers" init: fine for shallow nets, but activations shrink
#: layer after layer in deep ones (lecture 6's collapsing histograms).
SMALL_STD = 0.01
#: Leaky ReLU's slope for x < 0 (Maas et al. 2013; PReLU learns it starting from 0.25).
LEAKY_SLOPE = 0.01


class Maxout(nn.Module):
    """Maxout unit (Goodfellow et al. 2013): ``max_k (W_k x + b_k)`` over ``pieces`` affine maps.

    One ``Linear`` computes all pieces at once: output unit ``j`` takes the max of
    rows ``j*pieces .. j*pieces + pieces - 1`` of its weight.
    """

    def __init__(self, in_features: int, out_features: int, pieces: int = 2) -> None:
        super().__init__()
        if pieces < 2:
            raise ValueError(f"maxout needs at least 2 pieces, got {pieces}")
        self.out_features, self.pieces = out_features, pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: Tensor) -> Tensor:
        z = self.linear(x)
        return z.view(*z.shape[:-1], self.out_features, self.pieces).amax(dim=-1)


def make_activation(name: str, channels: int = 1) -> nn.Module:
    """A fresh activation module; ``channels`` sizes PReLU's learned slopes (one per unit)."""
    if name == "relu":
        return nn.ReLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "elu":
        return nn.ELU()
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def init_std(init: str, fan_in: int) -> float:
    """Weight std of an init scheme for a layer with ``fan_in`` inputs.

    As in the course notes: Xavier ``1/sqrt(fan_in)`` (keeps the variance of a
    tanh/linear layer's output equal to its input's), He ``sqrt(2/fan_in)``
    (makes up for ReLU zeroing half of its inputs).
    """
    if init == "small":
        return SMALL_STD
    if init == "xavier":
        return 1.0 / math.sqrt(fan_in)
    if init == "he":
        return math.sqrt(2.0 / fan_in)
    raise ValueError(f"unknown init {init!r}; expected one of {INITS}")


def init_linear(layer: nn.Linear, init: str) -> None:
    """Gaussian weights with :func:`init_std`, zero bias."""
    with torch.no_grad():
        layer.weight.normal_(0.0, init_std(init, layer.in_features))
        if layer.bias is not None:
            layer.bias.zero_()


class DenseUnit(nn.Module):
    """Linear → [BatchNorm] → activation → [dropout]: one hidden layer of the MLP.

    With maxout the affine map lives inside :class:`Maxout` and BatchNorm
    normalises its output (the max of the pieces).
    """

    probe = True  # components.diagnostics records this module's output

    def __init__(self, in_features: int, out_features: int, *, activation: str = "relu",
                 init: str = "he", batchnorm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if activation == "maxout":
            self.affine: nn.Module = Maxout(in_features, out_features)
            init_linear(self.affine.linear, init)
            self.norm: nn.Module = nn.BatchNorm1d(out_features) if batchnorm else nn.Identity()
            self.act: nn.Module = nn.Identity()
        else:
            self.affine = nn.Linear(in_features, out_features, bias=not batchnorm)
            init_linear(self.affine, init)
            self.norm = nn.BatchNorm1d(out_features) if batchnorm else nn.Identity()
            self.act = make_activation(activation, out_features)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.act(self.norm(self.affine(x))))
