"""Feature networks for Gram-matrix style: random multi-scale filters, or a registered classifier's layers.

    net = RandomFeatures(filters=64, scales=(1, 2, 4, 8), kernel=5, seed=0)
    maps = net(images)                      # one N×filters×(H/s)×(W/s) map per scale
    net = ModelFeatures(classifier, layers=4)  # the ReLU outputs of a trained net (grey or RGB input)

No pretrained ImageNet weights exist offline. Ustyuzhaninov et al. (2016, "Texture synthesis using shallow
convolutional networks with random filters") showed that one layer of random filters at several scales
already gives Gram-matrix textures of good quality; here the scales come from downsampling the image
(factors 1, 2, 4, 8) instead of ever larger kernels, which keeps a 256-px image cheap on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RandomFeatures(nn.Module):
    """One conv + ReLU per scale, with fixed random zero-mean unit-norm filters (nothing is trained)."""

    def __init__(self, filters: int = 64, scales: tuple[int, ...] = (1, 2, 4, 8), kernel: int = 5,
                 in_channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.scales = tuple(scales)
        self.kernel = kernel
        weights = []
        for _ in self.scales:
            w = torch.randn(filters, in_channels, kernel, kernel, generator=gen)
            w = w - w.mean(dim=(1, 2, 3), keepdim=True)  # zero mean: a filter answers to structure, not brightness
            weights.append(w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        self.register_buffer("weights", torch.stack(weights))
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        x = x - 0.5
        for weight, scale in zip(self.weights, self.scales):
            xs = F.avg_pool2d(x, scale) if scale > 1 else x
            out.append(F.relu(F.conv2d(xs, weight, padding=self.kernel // 2)))
        return out


class _Enough(Exception):
    """Raised by a hook once the last wanted layer has run: the rest of the net (its head) is not needed."""


class ModelFeatures(nn.Module):
    """The outputs of up to ``layers`` ReLU modules of a classifier (evenly spread, first to last), on its own
    normalisation; RGB images are averaged to grey for a one-channel model."""

    def __init__(self, model: nn.Module, layers: int = 4) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        net = getattr(model, "net", model)
        relus = [m for m in net.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.ELU))]
        if not relus:
            raise ValueError(f"{type(net).__name__} has no ReLU layers to take features from")
        step = max(1, len(relus) // layers)
        self.layers = relus[::step][:layers]
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        self.in_channels = int(getattr(model, "in_channels", convs[0].in_channels if convs else 3))

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.in_channels == 1 and x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        caught: list[Tensor] = []
        last = self.layers[-1]

        def grab(module: nn.Module, _inputs, output: Tensor) -> None:
            caught.append(output)
            if module is last:
                raise _Enough

        handles = [layer.register_forward_hook(grab) for layer in self.layers]
        try:
            net = getattr(self.model, "net", self.model)
            normalize = getattr(self.model, "normalize", None)
            net(normalize(x) if normalize is not None else x)
        except _Enough:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return caught
