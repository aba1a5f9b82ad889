"""Low-rank factorisation (§15.4): a layer's weight ≈ U·V by truncated SVD, rank by an energy threshold.

A ``Linear(n→m)`` becomes ``Linear(n→r) → Linear(r→m)``; a ``Conv2d(c→m, k×k)`` becomes a ``k×k`` conv to
``r`` channels followed by a 1×1 conv to ``m`` (the weight reshaped to ``m × c·k·k``). A layer is only
factorised when the two factors hold fewer weights than the original. :class:`LowRankHook` factorises
the model when training starts, so the factors are fine-tuned on the one training loop::

    ranks = choose_ranks(net, energy=0.9)
    factorise_(net, ranks)                # or: hooks=[(LowRankHook, {"ranks": ranks})]
"""

from __future__ import annotations

import torch
from torch import nn

from components.compression.prune import _net, weight_layers
from components.hooks import TrainHook


def _matrix(m: nn.Module) -> torch.Tensor:
    return m.weight.detach().flatten(1).double()


def rank_for_energy(singular: torch.Tensor, energy: float) -> int:
    """Smallest r whose r largest singular values keep ``energy`` of the squared Frobenius norm."""
    share = torch.cumsum(singular.double() ** 2, 0) / (singular.double() ** 2).sum().clamp_min(1e-30)
    return int(torch.searchsorted(share, torch.tensor(energy, dtype=torch.float64))) + 1


def choose_ranks(net: nn.Module, energy: float) -> dict[str, int]:
    """Per-layer ranks for ``energy``; layers where factorising would not save weights are left out."""
    ranks = {}
    for name, m in weight_layers(net):
        w = _matrix(m)
        rows, cols = w.shape
        r = min(rank_for_energy(torch.linalg.svdvals(w), energy), rows, cols)
        if r * (rows + cols) < rows * cols:
            ranks[name] = r
    return ranks


def factorise_layer(m: nn.Module, rank: int) -> nn.Sequential:
    w = _matrix(m)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    first_w, second_w = (root[:, None] * vh[:rank]), (u[:, :rank] * root[None, :])
    if isinstance(m, nn.Linear):
        first, second = nn.Linear(m.in_features, rank, bias=False), nn.Linear(rank, m.out_features, bias=m.bias is not None)
    else:
        first = nn.Conv2d(m.in_channels, rank, m.kernel_size, m.stride, m.padding, m.dilation, m.groups, bias=False)
        second = nn.Conv2d(rank, m.out_channels, 1, bias=m.bias is not None)
    with torch.no_grad():
        first.weight.copy_(first_w.reshape(first.weight.shape))
        second.weight.copy_(second_w.reshape(second.weight.shape))
        if m.bias is not None:
            second.bias.copy_(m.bias)
    return nn.Sequential(first, second).to(m.weight.device)


def factorise_(net: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Replace each named layer by its rank-r factorisation, in place."""
    for name, rank in ranks.items():
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, factorise_layer(getattr(parent, child), rank))
    return net


def count_weights(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


class LowRankHook(TrainHook):
    """Factorise at the start of training (before DDP and the optimiser), so the factors are trained."""

    def __init__(self, ranks: dict[str, int]):
        self.ranks = dict(ranks)

    def setup(self, model: nn.Module) -> None:
        factorise_(_net(model), self.ranks)
