"""Magnitude pruning (§15.1): zero the smallest weights of every convolution and linear layer.

``scope="global"`` ranks all weights of all layers together (one threshold: layers that matter less lose
more); ``scope="layer"`` prunes each layer to the same fraction. :class:`MaskHook` prunes iteratively
while fine-tuning on the one training loop (``pipelines.stages.train.run(..., hooks=[...])``): the sparsity
rises over the first epochs on a cubic schedule (Zhu & Gupta 2017) and the masks are re-applied after
every optimiser step, so pruned weights stay exactly zero::

    hooks=[(MaskHook, {"sparsity": 0.9, "scope": "global", "epochs": 3})]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.hooks import TrainHook


def weight_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose weights compression acts on: every Conv2d and Linear, in module order."""
    return [(name, m) for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def magnitude_masks(net: nn.Module, sparsity: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """Boolean keep-masks: exactly ``round(sparsity * n)`` weights pruned (per layer, or over all of them)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    layers = weight_layers(net)
    if scope == "layer":
        return {name: _keep(m.weight.detach().abs().flatten(), sparsity).view_as(m.weight) for name, m in layers}
    flat = torch.cat([m.weight.detach().abs().flatten() for _, m in layers])
    keep = _keep(flat, sparsity)
    out, start = {}, 0
    for name, m in layers:
        n = m.weight.numel()
        out[name] = keep[start:start + n].view_as(m.weight)
        start += n
    return out


def _keep(magnitudes: torch.Tensor, sparsity: float) -> torch.Tensor:
    # By rank, not by threshold: ties (e.g. weights already zero) cannot make the count drift.
    k = int(round(sparsity * magnitudes.numel()))
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    if k:
        keep[torch.argsort(magnitudes, stable=True)[:k]] = False
    return keep


@torch.no_grad()
def apply_masks(net: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    modules = dict(net.named_modules())
    for name, mask in masks.items():
        w = modules[name].weight
        w.mul_(mask.to(w.device, w.dtype))


def prune_(net: nn.Module, sparsity: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """Prune ``net`` in place; returns the masks."""
    masks = magnitude_masks(net, sparsity, scope)
    apply_masks(net, masks)
    return masks


def sparsity_of(net: nn.Module) -> float:
    """Fraction of exactly-zero weights over all conv/linear weights."""
    layers = weight_layers(net)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / max(1, sum(m.weight.numel() for _, m in layers))


def schedule(epoch: int, epochs: int, target: float) -> float:
    """Sparsity during ``epoch``: cubic ramp to ``target`` by the second-to-last epoch, then held."""
    ramp = max(1, epochs - 1)
    done = min(1.0, (epoch + 1) / ramp)
    return target * (1 - (1 - done) ** 3)


class MaskHook(TrainHook):
    """Iterative prune → fine-tune inside the one training loop; masks travel in the checkpoint."""

    def __init__(self, sparsity: float, scope: str = "global", epochs: int = 1, metric: str = ""):
        # metric: the name each epoch's measured sparsity is reported under (its caller's; none when empty)
        self.target, self.scope, self.epochs, self.metric = sparsity, scope, epochs, metric
        self.masks: dict[str, torch.Tensor] = {}
        self.level = 0.0

    def _prune(self, model: nn.Module, epoch: int) -> None:
        self.level = schedule(epoch, self.epochs, self.target)
        self.masks = prune_(_net(model), self.level, self.scope)

    def setup(self, model: nn.Module) -> None:
        self._prune(model, 0)

    def after_step(self, model: nn.Module, step: int) -> None:
        apply_masks(_net(model), self.masks)

    def end_epoch(self, model: nn.Module, epoch: int, out_dir: Path | None) -> dict[str, float]:
        measured = sparsity_of(_net(model))  # what this epoch's validation saw
        if epoch + 1 < self.epochs:
            self._prune(model, epoch + 1)  # the next level: the checkpoint carries the new masks
        return {self.metric: measured} if self.metric else {}

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks, "level": self.level}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks, self.level = state["masks"], state["level"]


def _net(model: nn.Module) -> nn.Module:
    """The classifier's net (the normaliser has no weights to prune)."""
    return getattr(model, "net", model)
