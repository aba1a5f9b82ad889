"""Binary and ternary weights (§15.5): one scale per layer and 1 or 2 bits per weight.

Ternary follows Ternary Weight Networks (Li & Liu 2016): threshold Δ = 0.7·mean|W|, weights beyond it
become ±α with α their mean magnitude, the rest 0. Binary (XNOR-Net's weight half) is α·sign(W) with
α = mean|W|. Applied after training, without retraining, to every conv and linear layer; BatchNorm
statistics are then re-estimated on training images (:func:`recalibrate_bn`), which recovers part of the
loss; the accuracy that remains is reported as it is.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from components.compression.prune import weight_layers


@torch.no_grad()
def ternarise_(net: nn.Module) -> dict[str, tuple[torch.Tensor, float]]:
    """In place; returns ``{layer: (codes in {-1,0,1} int8, alpha)}``."""
    out = {}
    for name, m in weight_layers(net):
        w = m.weight
        delta = 0.7 * w.abs().mean()
        keep = w.abs() > delta
        alpha = float(w.abs()[keep].mean()) if keep.any() else 0.0
        codes = (torch.sign(w) * keep).to(torch.int8)
        w.copy_(codes.float() * alpha)
        out[name] = (codes.cpu(), alpha)
    return out


@torch.no_grad()
def binarise_(net: nn.Module) -> dict[str, tuple[torch.Tensor, float]]:
    """In place; returns ``{layer: (codes in {-1,1} int8, alpha)}``."""
    out = {}
    for name, m in weight_layers(net):
        w = m.weight
        alpha = float(w.abs().mean())
        codes = torch.where(w >= 0, 1, -1).to(torch.int8)
        w.copy_(codes.float() * alpha)
        out[name] = (codes.cpu(), alpha)
    return out


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate BatchNorm running statistics (cumulative average) on ``batches`` of float images."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    was = model.training
    model.train()
    for x in batches:
        model(x)
    model.train(was)
