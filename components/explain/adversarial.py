"""Adversarial examples, fooling images and class-model visualisation (§12): gradients on the input.

    x_adv = fgsm(model, x, y, eps=0.1)                 # one signed-gradient step, pixels kept in [0, 1]
    x_adv = pgd(model, x, y, eps=0.1, steps=10)        # projected gradient ascent in the L∞ ball
    image, p = fooling_image(model, target=3, shape=(1, 28, 28))   # noise the model calls class 3 at ≥ 99 %
    image = class_visualisation(model, target=3, shape=(1, 28, 28))  # gradient ascent on the class score

``model`` maps float images in [0, 1] (N×C×H×W) to logits and is in eval mode. FGSM: Goodfellow et al.
2015; PGD: Madry et al. 2018; fooling images: Nguyen et al. 2015; class-model visualisation with L2
decay, blur and jitter: Simonyan et al. 2014, Yosinski et al. 2015. Plain PyTorch: no Ray, no MLflow.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from components.explain.attribution import _blur

Model = Callable[[Tensor], Tensor]


def _loss_grad(model: Model, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def fgsm(model: Model, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """x + eps·sign(∇x loss), clipped to [0, 1]: the one-step attack that raises the loss to first order."""
    _, grad = _loss_grad(model, x, y)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def pgd(model: Model, x: Tensor, y: Tensor, eps: float, steps: int = 10, step_size: float | None = None,
        seed: int = 0) -> Tensor:
    """``steps`` signed-gradient steps from a random start in the L∞ ball of radius ``eps``, each projected
    back into the ball and [0, 1]."""
    if eps == 0:
        return x.detach().clone()
    step_size = step_size or 2.5 * eps / steps  # reaches the ball's edge with room to move along it
    gen = torch.Generator().manual_seed(seed)
    adv = (x + eps * (2 * torch.rand(x.shape, generator=gen) - 1)).clamp(0, 1)
    for _ in range(steps):
        _, grad = _loss_grad(model, adv, y)
        adv = torch.min(torch.max(adv + step_size * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv.detach()


@torch.no_grad()
def accuracy(model: Model, x: Tensor, y: Tensor, batch: int = 512) -> float:
    right = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return right / max(len(x), 1)


def fooling_image(model: Model, target: int, shape: tuple[int, int, int], confidence: float = 0.99,
                  max_steps: int = 500, lr: float = 0.05, seed: int = 0) -> tuple[Tensor, float, int]:
    """Noise pushed by gradient ascent on log p(target) until the model gives ``target`` at least
    ``confidence``: (C×H×W image in [0, 1], that probability, steps taken)."""
    gen = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.1 * torch.randn(1, *shape, generator=gen)).clamp(0, 1).requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=lr)
    y = torch.tensor([target])
    p, step = 0.0, 0
    for step in range(1, max_steps + 1):
        logits = model(x)
        p = float(torch.softmax(logits.detach(), 1)[0, target])
        if p >= confidence:
            step -= 1
            break
        optimiser.zero_grad()
        F.cross_entropy(logits, y).backward()
        optimiser.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    with torch.no_grad():
        p = float(torch.softmax(model(x), 1)[0, target])
    return x.detach()[0], p, step


def class_visualisation(model: Model, target: int, shape: tuple[int, int, int], steps: int = 200,
                        lr: float = 0.01, l2: float = 1e-3, blur_every: int = 10, blur_sigma: float = 0.5,
                        jitter: int = 2, seed: int = 0) -> Tensor:
    """An image that maximises the class score (not its probability: that could rise by lowering the
    others), regularised by L2 decay, a Gaussian blur every ``blur_every`` steps and a random
    translation of up to ``jitter`` pixels each step; C×H×W in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.01 * torch.randn(1, *shape, generator=gen))
    for step in range(1, steps + 1):
        dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist() if jitter else (0, 0))
        moved = torch.roll(x, (dy, dx), (2, 3)).requires_grad_(True)
        objective = model(moved)[0, target] - l2 * (moved - 0.5).pow(2).sum()
        (grad,) = torch.autograd.grad(objective, moved)
        with torch.no_grad():
            moved = moved + lr * grad / (grad.abs().mean() + 1e-8)  # normalised: lr is the mean pixel step
            x = torch.roll(moved, (-dy, -dx), (2, 3)).clamp(0, 1)
            if blur_every and step % blur_every == 0:
                x = _blur(x, blur_sigma)
    return x.detach()[0]
