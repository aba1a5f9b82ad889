"""A GAN's training step: the discriminator and the generator updated alternately, by two optimisers.

    gan = GAN(1, 28, latent=64, width=32)
    opt = PairOptimizer.build(gan, "adam", lr=2e-4, beta1=0.5, weight_decay=0.0)
    recipe = GanRecipe(loss="nonsaturating", label_smoothing=0.1)
    outputs, loss = gan_step(gan, images, labels, opt, recipe)    # k D updates, then one G update

The losses (Goodfellow et al. 2014; §13): D maximises log D(x) + log(1 - D(G(z))); G either minimises
log(1 - D(G(z))) (``minimax``: its gradient vanishes while D confidently rejects the samples, early in
training) or maximises log D(G(z)) (``nonsaturating``, the default: the same fixed point, strong gradients
early). The usual tricks, each an option and off unless set: one-sided label smoothing (Salimans et al.
2016: D's target for real images is 1 - s, fakes stay 0), instance noise (Gaussian noise on both of D's
inputs, so their distributions overlap; Sønderby et al. 2017), several D updates per G update, and a
faster discriminator (two time-scale updates) through :meth:`PairOptimizer.build`.

DDP-safe without DDP's hooks: the step runs the bare nets (under a DDP wrapper it reaches
``model.module``) and averages the gradients of the net about to be stepped over all ranks itself, so
each optimiser steps identical gradients on every rank and the replicas stay equal. (DDP's own reducer
would expect every parameter in each backward and the whole model in each forward; a GAN's two
alternating sub-steps give it neither.) Batch-norm statistics stay per rank, as DDP leaves them too.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

LOSSES = ("nonsaturating", "minimax")
NETS = ("generator", "discriminator")


class PairOptimizer(Optimizer):
    """Two optimisers, one per net, behind the one ``Optimizer`` the engine, the learning-rate schedule
    and the checkpoints handle: its ``param_groups`` are the generator's then the discriminator's (the
    same dicts, so a schedule scales both), ``step(net)`` steps one, and its state dict holds both."""

    def __init__(self, generator: Optimizer, discriminator: Optimizer):
        # Optimizer.__init__ would copy the groups into new dicts; these must stay the inner optimisers'.
        self.optimizers = {"generator": generator, "discriminator": discriminator}
        self.defaults: dict[str, Any] = {}
        self.state: defaultdict = defaultdict(dict)
        self.param_groups = [*generator.param_groups, *discriminator.param_groups]
        self._optimizer_step_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict = OrderedDict()

    @classmethod
    def build(cls, gan: nn.Module, name: str, *, lr: float, beta1: float = 0.5, weight_decay: float = 0.0,
              d_lr_ratio: float = 1.0) -> "PairOptimizer":
        """Adam (or AdamW) per net with β1 = ``beta1`` (the DCGAN paper's 0.5: momentum 0.9 made training
        oscillate); ``d_lr_ratio`` scales the discriminator's rate (two time-scale updates, Heusel et al.
        2017). Another ``name`` (sgd, momentum, ...) builds that optimiser per net from components.optim."""
        from components.optim import build_optimizer, param_groups

        gan = getattr(gan, "module", gan)
        made = []
        for net, rate in (("generator", lr), ("discriminator", lr * d_lr_ratio)):
            params = getattr(gan, net).parameters()
            if name in ("adam", "adamw"):
                groups = param_groups(params, weight_decay)
                kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
                made.append(kind(groups, lr=rate, betas=(beta1, 0.999)))
            else:
                made.append(build_optimizer(name, params, lr=rate, momentum=beta1, weight_decay=weight_decay))
        return cls(*made)

    def step(self, net: str = "", closure: Any = None) -> None:  # type: ignore[override]
        if net not in self.optimizers:
            raise ValueError(f"step which net? one of {', '.join(NETS)}, got {net!r}")
        self.optimizers[net].step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {net: opt.state_dict() for net, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        for net, opt in self.optimizers.items():
            opt.load_state_dict(state[net])


@dataclass(frozen=True)
class GanRecipe:
    """How a GAN trains (``gan.*`` in the config)."""

    loss: str = "nonsaturating"  # or "minimax": G minimises log(1 - D(G(z)))
    label_smoothing: float = 0.0  # one-sided: D's target for real images is 1 - this
    instance_noise: float = 0.0  # std of Gaussian noise added to D's inputs (images in [-1, 1])
    d_steps: int = 1  # discriminator updates per generator update
    class_weight: float = 0.0  # conditional GANs: weight of the auxiliary classifier's cross-entropy (AC-GAN)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"gan.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"gan.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.instance_noise < 0:
            raise ValueError(f"gan.instance_noise must be >= 0, got {self.instance_noise}")
        if self.d_steps < 1:
            raise ValueError(f"gan.d_steps must be >= 1, got {self.d_steps}")
        if self.class_weight < 0:
            raise ValueError(f"gan.class_weight must be >= 0, got {self.class_weight}")


def d_loss(real_logits: Tensor, fake_logits: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """-[log D(x) + log(1 - D(G(z)))], with the real target 1 - ``label_smoothing`` (one-sided)."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, 1.0 - label_smoothing))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_loss(fake_logits: Tensor, kind: str = "nonsaturating") -> Tensor:
    """``nonsaturating``: -log D(G(z)); ``minimax``: log(1 - D(G(z))) (both minimised by G)."""
    if kind == "nonsaturating":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def _noisy(x: Tensor, std: float) -> Tensor:
    return x + std * torch.randn_like(x) if std > 0 else x


def average_gradients(net: nn.Module, loss: Tensor) -> bool:
    """Mean of ``net``'s gradients over the DDP ranks (one all-reduce of one flat buffer, alone: nothing);
    whether every rank's ``loss`` was finite, which every rank learns from the same all-reduce, so all of
    them stop at the same step (one rank stopping alone would leave the others waiting in the next one)."""
    import torch.distributed as dist

    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bool(torch.isfinite(loss.detach()))
    flat = torch.cat([*(g.reshape(-1) for g in grads), loss.detach().reshape(1).to(grads[0].dtype)])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return bool(torch.isfinite(flat[-1]))


def gan_step(model: nn.Module, real: Tensor, labels: Tensor | None, optimizer: PairOptimizer,
             recipe: GanRecipe) -> tuple[dict[str, Tensor], Tensor]:
    """``recipe.d_steps`` discriminator updates then one generator update on a batch of real images in
    [0, 1] (``labels``: their classes, for a conditional GAN; ignored otherwise). Returns the step's
    statistics (``d_loss``, ``g_loss``, ``d_real``, ``d_fake``: D's mean probabilities) and the loss the
    engine tracks (D's plus G's); a non-finite loss on any rank returns NaN on every rank, before that
    net steps, and the engine stops there."""
    if not isinstance(optimizer, PairOptimizer):
        raise TypeError("a GAN trains with one optimiser per net (components.gan.PairOptimizer), got "
                        f"{type(optimizer).__name__}")
    gan = getattr(model, "module", model)
    g, d = gan.generator, gan.discriminator
    y = labels if gan.conditional else None
    aux = recipe.class_weight if y is not None else 0.0  # AC-GAN: D classifies real images, G's must read as y
    x = real * 2 - 1  # the generator's Tanh range
    std = recipe.instance_noise
    for _ in range(recipe.d_steps):
        z = torch.randn(len(x), gan.latent, device=x.device)
        with torch.no_grad():  # D's update: G is a fixed sampler here, no graph through it
            fake = g(z, y)
        fake_logits = d(_noisy(fake, std), y)
        if aux:
            real_logits, real_classes = d(_noisy(x, std), y, classes=True)
            loss_d = d_loss(real_logits, fake_logits, recipe.label_smoothing) + aux * F.cross_entropy(real_classes, y)
        else:
            real_logits = d(_noisy(x, std), y)
            loss_d = d_loss(real_logits, fake_logits, recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss_d.backward()
        if not average_gradients(d, loss_d):  # diverged: the engine stops on the non-finite loss
            return {}, torch.tensor(float("nan"))
        optimizer.step("discriminator")
    z = torch.randn(len(x), gan.latent, device=x.device)
    if aux:
        fake_logits_g, fake_classes = d(_noisy(g(z, y), std), y, classes=True)
        loss_g = g_loss(fake_logits_g, recipe.loss) + aux * F.cross_entropy(fake_classes, y)
    else:
        fake_logits_g = d(_noisy(g(z, y), std), y)
        loss_g = g_loss(fake_logits_g, recipe.loss)
    optimizer.zero_grad(set_to_none=True)
    loss_g.backward()  # D's gradients from this pass are dropped: only G steps
    if not average_gradients(g, loss_g):
        return {}, torch.tensor(float("nan"))
    optimizer.step("generator")
    optimizer.zero_grad(set_to_none=True)
    stats = {"d_loss": loss_d.detach(), "g_loss": loss_g.detach(),
             "d_real": torch.sigmoid(real_logits.detach()).mean(), "d_fake": torch.sigmoid(fake_logits.detach()).mean()}
    return stats, (loss_d + loss_g).detach()
