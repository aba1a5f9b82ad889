"""What every generative model tells the generation task (components.tasks.generation).

    net = GENERATORS["vae"](in_channels=1, image_size=28, levels=256, num_classes=10, width=32, latent=16)
    out = net(x)                     # x: B×C×H×W in [0, 1]; a dict: "loss" (scalar) and per-example stats
    images = net.generate([0, 1, 2]) # uint8 N×C×H×W, image i drawn from seed i alone

The training loss comes out of ``forward`` so that DistributedDataParallel sees every parameter used in
one forward pass. ``stats`` names the per-example values ``forward`` returns beside the loss (summed
across ranks by the task's meter); ``primary`` is the one that ranks epochs and registered versions.
A model whose step is not "one loss, one optimiser" (a GAN) defines ``train_step`` and the task calls it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn


class GenerativeModel(nn.Module):
    primary: ClassVar[str] = "bits_per_dim"
    higher_is_better: ClassVar[bool] = False
    #: Per-example values ``forward`` returns (besides "loss"); the task's meter averages them.
    stats: ClassVar[tuple[str, ...]] = ("bits_per_dim",)
    #: A conditional model takes class labels (``forward(x, labels)``, ``generate(seeds, labels)``).
    conditional: ClassVar[bool] = False
    #: The keyword options ``__init__`` takes beside the shape (components.package_base.ModelSpec fields).
    OPTIONS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, in_channels: int, image_size: int, levels: int = 256, num_classes: int = 0):
        super().__init__()
        self.in_channels, self.image_size, self.levels, self.num_classes = in_channels, image_size, levels, num_classes

    @property
    def dims(self) -> int:
        """Pixel values per image: the denominator of bits per dimension."""
        return self.in_channels * self.image_size * self.image_size

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def generate(self, seeds: Sequence[int], labels: Sequence[int] | None = None) -> Tensor:
        """uint8 N×C×H×W, image i a function of ``seeds[i]`` (and ``labels[i]``) only."""
        raise NotImplementedError

    def to_uint8(self, x: Tensor) -> Tensor:
        """Pixel values in [0, levels-1] (float means allowed) → uint8 0..255."""
        return (x.float() * (255.0 / (self.levels - 1))).round().clamp(0, 255).to(torch.uint8)

    #: A model that owns its step (a GAN) defines ``train_step(self, model, inputs, targets, optimizer, *, task,
    #: precision, device) -> (outputs, loss)``: ``model`` is what the engine holds (DDP-wrapped on several
    #: workers: run forward passes through it so gradients are all-reduced), ``inputs`` is ``(images, labels)``,
    #: ``outputs`` a dict holding the task's ``stats`` per example. The generation task hands it to the engine.
    train_step: Any = None


def seeded_normal(seeds: Sequence[int], shape: tuple[int, ...]) -> Tensor:
    """One standard-normal tensor of ``shape`` per seed, each from its own generator: N×shape."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def seeded_uniform(seeds: Sequence[int], shape: tuple[int, ...]) -> Tensor:
    return torch.stack([torch.rand(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
