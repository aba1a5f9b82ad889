"""Per-layer activation statistics at initialisation: lecture 6's "do the activations collapse?" check.

    >>> stats = activation_stats(model, images)        # float NCHW batch, as the training loop feeds it
    >>> [round(s.std, 3) for s in stats]               # tanh + N(0, 0.01): 0.2, 0.004, 8e-05, ... -> 0

Which outputs are recorded: modules that declare ``probe = True`` (an MLP's hidden layers, residual and
Inception blocks, dense blocks) when the net has any, else every activation module (``nn.ReLU`` ...).
The net runs once in train mode (BatchNorm normalises with the batch's own statistics, as in the first
training step) on a copy, so the model's running statistics are untouched; dropout is off, since it
would only add noise to the picture.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from components.models.layers import Maxout

#: Activation modules recorded when a net has no ``probe`` modules.
ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.Tanh, nn.Sigmoid, Maxout)
#: Values kept per layer for the histogram (a random subsample; the moments use all of them).
SAMPLE = 20_000


@dataclass(frozen=True)
class LayerStats:
    name: str
    mean: float
    std: float
    sample: np.ndarray  # up to SAMPLE output values, for the histogram


def probe_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs whose outputs :func:`activation_stats` records, in forward order."""
    marked = [(n, m) for n, m in model.named_modules() if getattr(type(m), "probe", False)]
    if marked:
        return marked
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ACTIVATION_TYPES)]


def activation_stats(model: nn.Module, x: Tensor, seed: int = 0) -> list[LayerStats]:
    """Mean, std and a sample of every probed layer's output for one forward pass of ``x``."""
    net = copy.deepcopy(model).train()
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    outputs: dict[str, Tensor] = {}
    order: list[str] = []

    def hook(name: str):
        def record(_m: nn.Module, _inp: tuple[Tensor, ...], out: Tensor) -> None:
            if name not in outputs:  # a module used twice (a shared ReLU) counts at its first use
                order.append(name)
                outputs[name] = out.detach().float().clone()  # later in-place ops must not change it
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in probe_modules(net)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    gen = torch.Generator().manual_seed(seed)
    stats = []
    for name in order:
        flat = outputs[name].flatten().cpu()
        keep = flat if flat.numel() <= SAMPLE else flat[torch.randperm(flat.numel(), generator=gen)[:SAMPLE]]
        stats.append(LayerStats(name, float(flat.mean()), float(flat.std()), keep.numpy()))
    return stats


def collapse_ratio(stats: list[LayerStats]) -> float:
    """Std of the last probed layer over the first: ~1 healthy, -> 0 collapsing, >> 1 exploding."""
    if len(stats) < 2 or stats[0].std == 0:
        return float("nan")
    return stats[-1].std / stats[0].std
