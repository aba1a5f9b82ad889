"""Attribution (§12): which pixels a classifier's score depends on, and how faithful each answer is.

    attr = integrated_gradients(model, x, target, steps=32)      # N×C×H×W, sums to f(x) - f(baseline)
    heat = importance(attr, "integrated_gradients")              # N×H×W, larger = more important
    deletion_auc(model, x, target, heat)                         # lower = more faithful

``model`` is any callable from float images in [0, 1] (N×C×H×W) to logits (a registered
``ImageClassifier`` normalises inside). The methods: vanilla gradients (Simonyan et al. 2014),
SmoothGrad (Smilkov et al. 2017), integrated gradients (Sundararajan et al. 2017), occlusion (Zeiler &
Fergus 2014); faithfulness: deletion and insertion AUC (Petsiuk et al. 2018, RISE) and the pointing game
(Zhang et al. 2016). Plain PyTorch: no Ray, no MLflow.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Model = Callable[[Tensor], Tensor]

METHODS = ("gradients", "smoothgrad", "integrated_gradients", "occlusion")


def _score_grad(model: Model, x: Tensor, target: Tensor) -> Tensor:
    x = x.detach().clone().requires_grad_(True)
    score = model(x).gather(1, target.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad


def gradients(model: Model, x: Tensor, target: Tensor) -> Tensor:
    """d score_target / d x (signed), the shape of ``x``; for a linear model, its weight row."""
    return _score_grad(model, x, target)


def smoothgrad(model: Model, x: Tensor, target: Tensor, samples: int = 16, sigma: float = 0.15,
               seed: int = 0) -> Tensor:
    """The gradient averaged over ``samples`` noisy copies of ``x`` (noise std ``sigma`` of the [0, 1] range)."""
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(x)
    for _ in range(samples):
        total += _score_grad(model, x + sigma * torch.randn(x.shape, generator=gen), target)
    return total / samples


def integrated_gradients(model: Model, x: Tensor, target: Tensor, steps: int = 32,
                         baseline: Tensor | None = None) -> Tensor:
    """(x - baseline) × the mean gradient on the straight path from ``baseline`` (zeros: black) to ``x``.

    Midpoint Riemann sum, so for a linear model it is exact: the attributions sum to
    f(x) - f(baseline) (completeness), and with a zero baseline they are x × the weight row.
    """
    base = torch.zeros_like(x) if baseline is None else baseline.expand_as(x)
    total = torch.zeros_like(x)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        total += _score_grad(model, base + alpha * (x - base), target)
    return (x - base) * total / steps


@torch.no_grad()
def occlusion(model: Model, x: Tensor, target: Tensor, patch: int = 4, stride: int = 2,
              fill: float = 0.0) -> Tensor:
    """How much the target class's probability drops when a ``patch``×``patch`` square is set to ``fill``,
    averaged over the patches covering each pixel: N×1×H×W (positive: the pixel supports the class)."""
    n, _, h, w = x.shape
    base = torch.softmax(model(x), 1).gather(1, target.view(-1, 1)).view(n)
    heat = torch.zeros(n, 1, h, w)
    count = torch.zeros(1, 1, h, w)
    tops = list(range(0, max(h - patch, 0) + 1, stride))
    lefts = list(range(0, max(w - patch, 0) + 1, stride))
    if tops[-1] + patch < h:
        tops.append(h - patch)
    if lefts[-1] + patch < w:
        lefts.append(w - patch)
    for top in tops:
        for left in lefts:
            occluded = x.clone()
            occluded[:, :, top:top + patch, left:left + patch] = fill
            p = torch.softmax(model(occluded), 1).gather(1, target.view(-1, 1)).view(n)
            heat[:, :, top:top + patch, left:left + patch] += (base - p).view(n, 1, 1, 1)
            count[:, :, top:top + patch, left:left + patch] += 1
    return heat / count.clamp(min=1)


def attribute(method: str, model: Model, x: Tensor, target: Tensor, *, patch: int = 4, stride: int = 2,
              samples: int = 16, sigma: float = 0.15, steps: int = 32, seed: int = 0) -> Tensor:
    """One method by name (METHODS, or ``random``: a seeded uniform map, the baseline every method must beat)."""
    if method == "gradients":
        return gradients(model, x, target)
    if method == "smoothgrad":
        return smoothgrad(model, x, target, samples, sigma, seed)
    if method == "integrated_gradients":
        return integrated_gradients(model, x, target, steps)
    if method == "occlusion":
        return occlusion(model, x, target, patch, stride)
    if method == "random":
        return torch.rand(x.shape[0], 1, *x.shape[2:], generator=torch.Generator().manual_seed(seed))
    raise ValueError(f"unknown attribution method {method!r}; known: {', '.join(METHODS)}, random")


def importance(attr: Tensor, method: str) -> Tensor:
    """A per-pixel importance map N×H×W from an attribution N×C×H×W.

    Gradients and SmoothGrad: the largest |gradient| over channels (their sign says which way a pixel
    would move the score, not whether it supports it). Integrated gradients and occlusion: the signed
    contribution summed over channels, so pixels that count against the class rank last.
    """
    if method in ("gradients", "smoothgrad"):
        return attr.abs().amax(dim=1)
    return attr.sum(dim=1)


def _blur(x: Tensor, sigma: float) -> Tensor:
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
                    groups=c)


@torch.no_grad()
def _curve(model: Model, start: Tensor, finish: Tensor, target: Tensor, heat: Tensor, steps: int) -> Tensor:
    """The target probability as the most important pixels go from ``start`` to ``finish``: N×(steps+1)."""
    n, c, h, w = start.shape
    order = heat.reshape(n, -1).argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w).expand(n, -1))
    probs = []
    for k in range(steps + 1):
        changed = (rank < round(k * h * w / steps)).view(n, 1, h, w)
        image = torch.where(changed, finish, start)
        probs.append(torch.softmax(model(image), 1).gather(1, target.view(-1, 1)).view(n))
    return torch.stack(probs, 1)


def _auc(curve: Tensor) -> Tensor:
    """Trapezoid area under a curve sampled at evenly spaced fractions of [0, 1]."""
    return ((curve[:, 1:] + curve[:, :-1]) / 2).mean(dim=1)


def deletion_auc(model: Model, x: Tensor, target: Tensor, heat: Tensor, steps: int = 16) -> Tensor:
    """Per image: the area under the target probability as the most important pixels are set to black
    first (lower: the map found what the decision rests on)."""
    return _auc(_curve(model, x, torch.zeros_like(x), target, heat, steps))


def insertion_auc(model: Model, x: Tensor, target: Tensor, heat: Tensor, steps: int = 16,
                  blur_sigma: float = 2.0) -> Tensor:
    """Per image: the area under the target probability as the most important pixels are put back into a
    blurred copy first (higher is better; blurred, not black, so the start is not out of distribution)."""
    return _auc(_curve(model, _blur(x, blur_sigma), x, target, heat, steps))


def pointing_game(heat: Tensor, masks: Tensor, tolerance: int = 1) -> Tensor:
    """Per image: 1.0 when the map's maximum falls on the object (``masks`` N×H×W, true on it), within
    ``tolerance`` pixels; images with an empty mask count as misses."""
    n, h, w = heat.shape
    peak = heat.reshape(n, -1).argmax(dim=1)
    rows, cols = peak // w, peak % w
    grown = masks.float().unsqueeze(1)
    if tolerance > 0:
        grown = F.max_pool2d(grown, 2 * tolerance + 1, stride=1, padding=tolerance)
    return grown[torch.arange(n), 0, rows, cols]
