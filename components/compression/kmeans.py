"""Weight sharing by k-means (§15.2; Han et al. 2016): each layer keeps K centroids and a small index
per weight.

Centroids start linearly spaced over the layer's weight range (the initialisation Deep Compression found
best: it keeps the rare large weights). Pruned weights (exact zeros) stay zero and outside the clusters.
:class:`ShareHook` fine-tunes the centroids on the one training loop: after each optimiser step every
weight is replaced by the mean of its cluster, so each centroid moves by the mean of its members'
updates and the assignment never changes::

    books = share_(net, clusters=32)          # {layer: Codebook}; net now holds exactly K values per layer
    hooks=[(ShareHook, {"indices": {n: b.indices for n, b in books.items()}})]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from components.compression.prune import _net, weight_layers
from components.hooks import TrainHook


@dataclass
class Codebook:
    centroids: torch.Tensor  # (K,) float32
    indices: torch.Tensor  # int64, the layer's shape; -1 marks a pruned (zero) weight

    def weights(self) -> torch.Tensor:
        flat = torch.where(self.indices >= 0, self.centroids[self.indices.clamp_min(0)], 0.0)
        return flat.to(torch.float32)


def kmeans_1d(values: torch.Tensor, k: int, iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids (k,), assignment) of 1-D ``values``; every cluster non-empty when there are ≥ k distinct values."""
    v = values.detach().double().flatten()
    distinct = torch.unique(v)
    if distinct.numel() <= k:  # already shared (or tiny): each distinct value is its own centroid
        return distinct.float(), torch.bucketize(v, distinct)
    centroids = torch.linspace(float(v.min()), float(v.max()), k, dtype=torch.float64)
    for _ in range(iterations):
        assign = _nearest(v, centroids)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, v)
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            # Re-seed an empty cluster at the value farthest from its centroid, so K stay in use.
            far = int(torch.argmax((v - new[_nearest(v, new)]).abs()))
            new[empty] = v[far]
        new, _ = torch.sort(new)
        if torch.equal(new, centroids):
            break
        centroids = new
    assign = _nearest(v, centroids)
    counts = torch.bincount(assign, minlength=k)
    sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, v)
    used = counts > 0  # a final empty cluster (rare) is dropped rather than kept as a duplicate value
    centroids = (sums[used] / counts[used]).float()
    remap = torch.cumsum(used.long(), 0) - 1
    return centroids, remap[assign]


def _nearest(v: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    # Sorted centroids: the nearest is found by bisecting the midpoints (O(n log k), no n×k matrix).
    mids = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(v, mids)


@torch.no_grad()
def share_(net: nn.Module, clusters: int) -> dict[str, Codebook]:
    """Cluster each layer's non-zero weights into ``clusters`` centroids, write them back; the codebooks."""
    books = {}
    for name, m in weight_layers(net):
        w = m.weight.detach().cpu()
        nonzero = w != 0
        centroids, assign = kmeans_1d(w[nonzero], clusters)
        indices = torch.full(w.shape, -1, dtype=torch.int64)
        indices[nonzero] = assign
        books[name] = Codebook(centroids, indices)
        m.weight.copy_(books[name].weights().to(m.weight.device))
    return books


@torch.no_grad()
def enforce_(net: nn.Module, indices: dict[str, torch.Tensor]) -> dict[str, Codebook]:
    """Set each weight to its cluster's mean (pruned ones to zero); the resulting codebooks."""
    modules = dict(net.named_modules())
    books = {}
    for name, idx in indices.items():
        w = modules[name].weight
        idx = idx.to(w.device)
        k = int(idx.max()) + 1
        keep = idx >= 0
        flat_w, flat_i = w.detach().flatten().double(), idx.flatten()
        sel = keep.flatten()
        sums = torch.zeros(k, dtype=torch.float64, device=w.device).index_add_(0, flat_i[sel], flat_w[sel])
        counts = torch.bincount(flat_i[sel], minlength=k).clamp_min(1)
        centroids = (sums / counts).float()
        book = Codebook(centroids.cpu(), idx.cpu())
        w.copy_(book.weights().view_as(w).to(w.device, w.dtype))
        books[name] = book
    return books


class ShareHook(TrainHook):
    """Centroid fine-tuning: the assignment is fixed, the centroids follow the mean update of their members."""

    def __init__(self, indices: dict[str, torch.Tensor]):
        self.indices = indices

    def setup(self, model: nn.Module) -> None:
        enforce_(_net(model), self.indices)

    def after_step(self, model: nn.Module, step: int) -> None:
        enforce_(_net(model), self.indices)

    def state_dict(self) -> dict[str, Any]:
        return {"indices": self.indices}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.indices = state["indices"]
