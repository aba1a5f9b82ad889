"""The implicit models of the generation task: DCGAN, its class-conditional variant, and a small DDPM.

    net = build_generator("dcgan", in_channels=1, image_size=28, width=32, latent=64)
    opt = net.build_optimizer("adam", lr=2e-4, momentum=0.9, weight_decay=0.0, options={"beta1": 0.5})
    outputs, loss = net.train_step(net, (x, labels), labels, opt, task=task)   # D, then G
    net.generate([0, 1, 2], labels=[3, 3, 3])                                  # uint8 3×1×28×28

Neither has a likelihood to report: both are judged by Fashion-FID (components.fidelity), measured at
the end of every epoch by :class:`components.fid_hook.FidHook` on the val split and at evaluation on the
test split. The GAN owns its training step (``train_step``: components.gan, two optimisers from
:meth:`DCGAN.build_optimizer`); the DDPM trains on one loss with the engine's own step.
The nets themselves are in components.models.dcgan and components.models.ddpm.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from components.gan import GanRecipe, PairOptimizer, gan_step
from components.models.dcgan import GAN
from components.models.ddpm import Diffusion
from components.models.generative.base import GenerativeModel

#: ``generate.*`` keys a GAN's step and optimisers read (the recipe's and the optimiser's options).
GAN_OPTIONS = ("gan_loss", "label_smoothing", "instance_noise", "d_steps", "gan_lr", "beta1", "d_lr_ratio",
               "class_weight")


def recipe_of(options: Mapping[str, Any]) -> GanRecipe:
    return GanRecipe(loss=options.get("gan_loss", "nonsaturating"), label_smoothing=options.get("label_smoothing", 0.0),
                     instance_noise=options.get("instance_noise", 0.0), d_steps=options.get("d_steps", 1),
                     class_weight=options.get("class_weight", 0.0))


def _labels(labels: Sequence[int] | Tensor | None, n: int, device: torch.device) -> Tensor | None:
    return None if labels is None else torch.as_tensor(list(labels) if not isinstance(labels, Tensor) else labels,
                                                       dtype=torch.long, device=device).reshape(n)


class DCGAN(GenerativeModel):
    """Unconditional DCGAN: judged by FID (lower is better); its per-batch statistics are D's and G's
    losses and D's mean probability on real and generated images."""

    primary: ClassVar[str] = "fid"
    stats: ClassVar[tuple[str, ...]] = ("d_loss", "g_loss", "d_real", "d_fake")
    OPTIONS: ClassVar[tuple[str, ...]] = ("width", "latent")
    #: A GAN's losses are a game's, not a descent: G's rises whenever D improves. The explosion guard reads
    #: only a rise past 3× this floor (a sum of D's and G's losses above 30) as divergence.
    loss_floor: ClassVar[float] = 10.0

    def __init__(self, in_channels: int, image_size: int, levels: int = 256, num_classes: int = 0,
                 width: int = 24, latent: int = 64):
        super().__init__(in_channels, image_size, levels, num_classes)
        self.gan = GAN(in_channels, image_size, latent, width, num_classes if self.conditional else 0)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """The game's statistics on a batch without updating anything (validation): real images ``x`` in
        [0, 1] against as many generated ones."""
        gan = self.gan
        if self.conditional and labels is None:  # a profile pass (count_macs) sends images alone
            labels = torch.zeros(len(x), dtype=torch.long, device=x.device)
        y = labels if self.conditional else None
        z = torch.randn(len(x), gan.latent, device=x.device)
        real, fake = gan.discriminator(x * 2 - 1, y), gan.discriminator(gan.generator(z, y), y)
        d = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real), reduction="none")
             + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake), reduction="none"))
        g = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake), reduction="none")
        return {"loss": (d + g).mean(), "d_loss": d, "g_loss": g, "d_real": torch.sigmoid(real),
                "d_fake": torch.sigmoid(fake)}

    def build_optimizer(self, name: str, *, lr: float, momentum: float, weight_decay: float,
                        options: Mapping[str, Any] | None = None) -> PairOptimizer:
        """One optimiser per net (``train.optimizer``: Adam with β1 = ``generate.beta1``), at ``generate.gan_lr``
        (the DCGAN paper's 2e-4) rather than ``lr`` (``train.lr``, the likelihood models' rate) when given."""
        o = options or {}
        return PairOptimizer.build(self.gan, name, lr=o.get("gan_lr", lr), beta1=o.get("beta1", 0.5),
                                   weight_decay=weight_decay, d_lr_ratio=o.get("d_lr_ratio", 1.0))

    def train_step(self, model: Any, inputs: Any, targets: Any, optimizer: Any, task: Any = None,
                   **_: Any) -> tuple[dict[str, Tensor], Tensor]:
        x, labels = inputs
        stats, loss = gan_step(self.gan, x, labels, optimizer, recipe_of(getattr(task, "options", None) or {}))
        return {k: v.expand(len(x)) for k, v in stats.items()}, loss  # per example, as the meter sums them

    def generate(self, seeds: Sequence[int], labels: Sequence[int] | None = None) -> Tensor:
        device = next(self.parameters()).device
        x = self.gan.sample_uint8(list(seeds), _labels(labels, len(seeds), device) if self.conditional else None)
        return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)


class CDCGAN(DCGAN):
    """Class-conditional DCGAN: G reads a class embedding beside z, D projects its features on one."""

    conditional: ClassVar[bool] = True


class DDPM(GenerativeModel):
    """A small DDPM (U-Net denoiser, T = 1,000) sampled by DDIM in ``sample_steps`` steps; trained on the
    ε-prediction MSE with the engine's own step, judged by FID."""

    primary: ClassVar[str] = "fid"
    stats: ClassVar[tuple[str, ...]] = ("mse",)
    OPTIONS: ClassVar[tuple[str, ...]] = ("width", "sample_steps")

    def __init__(self, in_channels: int, image_size: int, levels: int = 256, num_classes: int = 0,
                 width: int = 16, sample_steps: int = 50):
        super().__init__(in_channels, image_size, levels, num_classes)
        self.diffusion = Diffusion(in_channels, image_size, width=width, timesteps=1000, sample_steps=sample_steps)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        errors = self.diffusion.loss(x, per_example=True)
        return {"loss": errors.mean(), "mse": errors.detach()}

    def generate(self, seeds: Sequence[int], labels: Sequence[int] | None = None) -> Tensor:
        x = self.diffusion.sample_uint8(list(seeds))
        return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
