"""Gram-matrix losses and the three image optimisations: style transfer, texture synthesis, DeepDream.

    g = gram(features)                                     # N×C×C, normalised by C·H·W
    out = transfer(net, content, style, steps=150)         # Gatys et al. 2016: content + style + TV
    out = texture(net, style, steps=150)                   # Gatys et al. 2015: style (+ TV) from noise
    out = dream(net, image, layer=1, steps=40)             # Mordvintsev et al. 2015: amplify a layer

Each returns a :class:`Result`: the final image, the losses of every step and the image every
``log_every`` steps. Losses are relative (‖G − A‖² / ‖A‖² per layer, summed; content ‖F − P‖² / ‖P‖²), so
their size says how far from the target the image is, whatever the network's scale. Plain PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

Features = Callable[[Tensor], list[Tensor]]


def gram(features: Tensor) -> Tensor:
    """F·Fᵀ / (C·H·W) per image, for features N×C×H×W (N×C×C)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_loss(maps: list[Tensor], targets: list[Tensor]) -> Tensor:
    """Σ over layers of ‖G(F) − A‖² / ‖A‖² (``targets``: the style image's Gram matrices)."""
    return sum(((gram(f) - a) ** 2).sum() / (a ** 2).sum().clamp(min=1e-12) for f, a in zip(maps, targets))


def content_loss(feature: Tensor, target: Tensor) -> Tensor:
    return ((feature - target) ** 2).sum() / (target ** 2).sum().clamp(min=1e-12)


def tv_loss(x: Tensor) -> Tensor:
    """Mean squared difference of neighbouring pixels (total variation, squared form)."""
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean()


@dataclass
class Result:
    image: Tensor  # C×H×W in [0, 1]
    history: list[dict[str, float]] = field(default_factory=list)  # one dict of losses per step (from step 1)
    snapshots: list[tuple[int, Tensor]] = field(default_factory=list)  # (step, image) every log_every steps


def optimise(x0: Tensor, objective: Callable[[Tensor], dict[str, Tensor]], steps: int, optimizer: str = "lbfgs",
             lr: float = 1.0, log_every: int = 25) -> Result:
    """Minimise ``objective(x)["total"]`` over the pixels of ``x`` (1×C×H×W), kept in [0, 1]."""
    x = x0.detach().clone().unsqueeze(0).requires_grad_(True)
    if optimizer == "lbfgs":
        # one iteration per step so that every step's losses are logged; the curvature history carries over
        opt: torch.optim.Optimizer = torch.optim.LBFGS([x], lr=lr, max_iter=1, history_size=20,
                                                       line_search_fn="strong_wolfe")
    else:
        opt = torch.optim.Adam([x], lr=lr)
    result = Result(x0)
    start: dict[str, float] = {}

    def closure() -> Tensor:
        opt.zero_grad()
        terms = objective(x)
        terms["total"].backward()
        if not start:  # the step's losses are those at its starting point (a line search evaluates others)
            start.update({k: float(v.detach()) for k, v in terms.items()})
        return terms["total"]

    for step in range(1, steps + 1):
        start.clear()
        opt.step(closure)
        with torch.no_grad():
            x.clamp_(0, 1)
        result.history.append(dict(start))
        if step % log_every == 0 or step == steps:
            result.snapshots.append((step, x.detach()[0].clone()))
    result.image = x.detach()[0]
    return result


def transfer(net: Features, content: Tensor, style: Tensor, steps: int = 150, content_index: int = 1,
             content_weight: float = 1.0, style_weight: float = 1.0, tv_weight: float = 1.0,
             optimizer: str = "adam", lr: float = 0.02, log_every: int = 25) -> Result:
    """The content image redrawn with the style image's Gram matrices, starting from the content image."""
    with torch.no_grad():
        targets = [gram(f) for f in net(style.unsqueeze(0))]
        content_target = net(content.unsqueeze(0))[content_index]

    def objective(x: Tensor) -> dict[str, Tensor]:
        maps = net(x)
        s, c, t = style_loss(maps, targets), content_loss(maps[content_index], content_target), tv_loss(x)
        return {"style": s, "content": c, "tv": t, "total": style_weight * s + content_weight * c + tv_weight * t}

    return optimise(content, objective, steps, optimizer, lr, log_every)


def texture(net: Features, style: Tensor, steps: int = 150, style_weight: float = 1.0, tv_weight: float = 1.0,
            optimizer: str = "adam", lr: float = 0.02, log_every: int = 25, seed: int = 0) -> Result:
    """A new image of the style's texture: its Gram matrices matched from uniform noise."""
    with torch.no_grad():
        targets = [gram(f) for f in net(style.unsqueeze(0))]
    noise = torch.rand(style.shape, generator=torch.Generator().manual_seed(seed))

    def objective(x: Tensor) -> dict[str, Tensor]:
        s, t = style_loss(net(x), targets), tv_loss(x)
        return {"style": s, "tv": t, "total": style_weight * s + tv_weight * t}

    return optimise(noise, objective, steps, optimizer, lr, log_every)


def dream(net: Features, image: Tensor, layer: int = 1, steps: int = 40, lr: float = 0.01, jitter: int = 8,
          log_every: int = 10, seed: int = 0) -> Result:
    """DeepDream: gradient ascent on the mean squared activation of one layer, with random shifts (jitter)
    and normalised steps (``lr`` is the mean pixel change)."""
    gen = torch.Generator().manual_seed(seed)
    x = image.detach().clone().unsqueeze(0)
    result = Result(image)
    for step in range(1, steps + 1):
        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist() if jitter else (0, 0)
        moved = torch.roll(x, (dy, dx), (2, 3)).requires_grad_(True)
        maps = net(moved)
        objective = maps[min(layer, len(maps) - 1)].pow(2).mean()
        (grad,) = torch.autograd.grad(objective, moved)
        with torch.no_grad():
            moved = moved + lr * grad / (grad.abs().mean() + 1e-12)
            x = torch.roll(moved, (-dy, -dx), (2, 3)).clamp(0, 1)
        result.history.append({"dream": float(objective.detach())})
        if step % log_every == 0 or step == steps:
            result.snapshots.append((step, x[0].clone()))
    result.image = x[0]
    return result

