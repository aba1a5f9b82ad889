"""DCGAN (Radford et al. 2016) and its class-conditional variant, sized for small grey or colour images.

    gan = GAN(in_channels=1, image_size=28, latent=64, width=32)               # unconditional
    cgan = GAN(in_channels=1, image_size=28, latent=64, width=32, num_classes=10)
    images = cgan.sample_uint8(torch.arange(16), labels=torch.full((16,), 3))  # 16×28×28 uint8, class 3

The paper's architecture rules, kept here:

* no pooling: the discriminator downsamples with strided convolutions, the generator upsamples with
  fractionally strided (transposed) ones;
* batch norm in both nets, except on the generator's output and the discriminator's input;
* no fully connected hidden layers: the generator's first layer projects z onto a small feature map (a
  matrix multiply, then reshape), the discriminator's last layer reads its flattened feature map;
* ReLU in the generator with Tanh on the output ([-1, 1]); LeakyReLU(0.2) in the discriminator;
* weights drawn from N(0, 0.02).

Conditioning (cGAN, Mirza & Osindero 2014; projection discriminator, Miyato & Koyama 2018): the generator
reads z concatenated with a learned class embedding; the discriminator adds ⟨embed(y), features⟩ to its
unconditional logit, which scores "real *and* of class y" rather than "real". It also has an auxiliary
classifier on the same features (AC-GAN, Odena et al. 2017): D learns the class of real images, and G is
rewarded when D's classifier reads its images as the class asked for (``GanRecipe.class_weight``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: every conv/linear weight ~ N(0, 0.02), BN scale ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _check(image_size: int) -> int:
    # Two stride-2 stages: the generator starts from an (S/4)×(S/4) map, which needs S divisible by 4
    # (28 → 7, 32 → 8, digits' 8 → 2).
    if image_size < 4 or image_size % 4:
        raise ValueError(f"a DCGAN needs an image size divisible by 4 (two stride-2 stages), got {image_size}")
    return image_size // 4


class Generator(nn.Module):
    """z (and a class) → image in [-1, 1]: project to 4w×S/4×S/4, two ×2 transposed convs, a 3×3 conv."""

    def __init__(self, in_channels: int, image_size: int, latent: int = 64, width: int = 32, num_classes: int = 0):
        super().__init__()
        self.base, self.latent, self.num_classes, w = _check(image_size), latent, num_classes, width
        self.embed = nn.Embedding(num_classes, latent) if num_classes else None
        z_in = latent * (2 if num_classes else 1)
        self.project = nn.Linear(z_in, 4 * w * self.base * self.base, bias=False)  # BN follows: no bias
        self.body = nn.Sequential(
            nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, in_channels, 3, padding=1),  # the output layer: no BN (the paper's rule)
            nn.Tanh(),
        )
        self.width = w

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional generator needs the labels of the images it makes")
            z = torch.cat([z, self.embed(labels)], dim=1)
        h = self.project(z).view(len(z), 4 * self.width, self.base, self.base)
        return self.body(h)


class Discriminator(nn.Module):
    """Image (and a class) → one logit: two stride-2 convs, a 3×3 conv, a linear read-out."""

    def __init__(self, in_channels: int, image_size: int, width: int = 32, num_classes: int = 0):
        super().__init__()
        base, w = _check(image_size), width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, stride=2, padding=1),  # the input layer: no BN (the paper's rule)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
        )
        features = 4 * w * base * base
        self.out = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None  # projection
        self.classify = nn.Linear(features, num_classes) if num_classes else None  # auxiliary classifier

    def forward(self, x: Tensor, labels: Tensor | None = None, classes: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The real/fake logit; with ``classes``, also the auxiliary classifier's class logits (conditional)."""
        h = self.body(x)
        logit = self.out(h).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional discriminator needs the labels of the images it judges")
            logit = logit + (self.embed(labels) * h).sum(dim=1)
        if classes:
            if self.classify is None:
                raise ValueError("an unconditional discriminator has no class read-out")
            return logit, self.classify(h)
        return logit


class GAN(nn.Module):
    """Generator and discriminator under one module: one state dict, one package, one DDP wrapper.

    ``forward(z, labels)`` is the generator (what serving and sampling run); the task's training step
    reaches both nets by name (components.gan).
    """

    def __init__(self, in_channels: int, image_size: int, latent: int = 64, width: int = 32, num_classes: int = 0):
        super().__init__()
        self.in_channels, self.image_size, self.latent, self.num_classes = in_channels, image_size, latent, num_classes
        self.generator = Generator(in_channels, image_size, latent, width, num_classes)
        self.discriminator = Discriminator(in_channels, image_size, width, num_classes)
        dcgan_init(self)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.generator(z, labels)

    def noise(self, seeds: Tensor | list[int]) -> Tensor:
        """One z per seed, each from its own generator: an image depends on its seed alone, not on the batch."""
        seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, Tensor) else seeds)]
        device = next(self.parameters()).device
        z = [torch.randn(self.latent, generator=torch.Generator().manual_seed(s)) for s in seeds]
        return (torch.stack(z) if z else torch.zeros(0, self.latent)).to(device)

    @torch.no_grad()
    def sample(self, seeds: Tensor | list[int], labels: Tensor | None = None) -> Tensor:
        """Float images in [0, 1], N×C×H×W, in eval mode (BN's running statistics: per-image results)."""
        was = self.training
        self.eval()
        try:
            return (self.generator(self.noise(seeds), labels).float() + 1) / 2
        finally:
            self.train(was)

    def sample_uint8(self, seeds: Tensor | list[int], labels: Tensor | None = None) -> Tensor:
        """uint8 N×H×W (grey) or N×H×W×C images, on the CPU: the served form."""
        x = self.sample(seeds, labels).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().permute(0, 2, 3, 1)
        return x[..., 0] if x.shape[-1] == 1 else x
