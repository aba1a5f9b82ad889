"""Fully connected nets: the linear classifier (§2.3) and a configurable MLP (§4-6).

    >>> net = MLP(1, 10, 28, hidden=(256, 256), activation="tanh", init="xavier", batchnorm=False)
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from components.models.base import check_dims
from components.models.layers import ACTIVATIONS, INITS, DenseUnit, init_linear


class SoftmaxLinear(nn.Module):
    """Flatten + one ``Linear``: the linear classifier ``s = W x + b``.

    Each row of ``W`` is a class template; :meth:`templates` returns them as
    images. Weights start as ``init_std * randn`` and biases at 0 (CS231n uses
    0.001), which makes the initial softmax loss ~ln(C) and SVM loss ~C-1.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        dropout: float = 0.0,
        init_std: float = 0.001,
    ) -> None:
        super().__init__()
        check_dims(in_channels, num_classes, image_size)
        self.input_shape = (in_channels, image_size, image_size)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels * image_size * image_size, num_classes)
        nn.init.normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(x.flatten(1)))

    def templates(self) -> Tensor:
        """The weight rows reshaped to images: (num_classes, C, H, W)."""
        return self.fc.weight.detach().reshape(-1, *self.input_shape)


class MLP(nn.Module):
    """Flatten → ``len(hidden)`` :class:`DenseUnit` layers → linear head.

    ``activation`` is one of :data:`ACTIVATIONS` (``maxout`` uses 2 pieces),
    ``init`` one of :data:`INITS` (also used for the head). ``batchnorm`` puts a
    BatchNorm1d before each activation, ``dropout`` drops after it.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        init: str = "he",
        batchnorm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_dims(in_channels, num_classes, image_size)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        hidden = tuple(int(h) for h in hidden)
        if any(h <= 0 for h in hidden):
            raise ValueError(f"hidden sizes must be positive, got {hidden}")
        sizes = (in_channels * image_size * image_size, *hidden)
        self.layers = nn.Sequential(*(
            DenseUnit(a, b, activation=activation, init=init, batchnorm=batchnorm, dropout=dropout)
            for a, b in zip(sizes[:-1], sizes[1:])))
        self.head = nn.Linear(sizes[-1], num_classes)
        init_linear(self.head, init)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.layers(x.flatten(1)))
