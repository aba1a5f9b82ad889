"""A convolutional variational autoencoder (Kingma & Welling 2014) with a discrete decoder.

    vae = VAE(in_channels=1, image_size=28, levels=256, width=32, latent=16, beta=1.0)
    out = vae(x)                        # loss = (reconstruction + beta * KL) in bits/dim; bits_per_dim = -ELBO
    vae.iw_bound(x, k=100)              # the importance-weighted bound (Burda et al. 2016), nats per image
    vae.generate([0, 1]); vae.interpolate(x_a, x_b, steps=8)

Encoder: two stride-2 4×4 convolutions and a linear layer to the posterior's mean and log-variance.
Decoder: the mirror image, ending in ``levels`` logits per pixel value: a categorical over the 256 grey
levels is a true probability mass on the data, so the negative ELBO is an upper bound on the test
images' bits per dimension, directly comparable with PixelCNN's exact figure and a compressor's.
Images and samples shown are the decoder's mean (the expected grey level), the usual way to look at a VAE.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn

from components.likelihood import (
    bits_per_dim,
    discrete_nll,
    gaussian_kl,
    gaussian_log_prob,
    log_mean_exp,
    to_levels,
)
from components.models.generative.base import GenerativeModel, seeded_normal


class VAE(GenerativeModel):
    stats: ClassVar[tuple[str, ...]] = ("bits_per_dim", "recon_bits_per_dim", "kl_bits_per_dim")
    OPTIONS: ClassVar[tuple[str, ...]] = ("width", "latent", "beta")

    def __init__(self, in_channels: int, image_size: int, levels: int = 256, num_classes: int = 0,
                 width: int = 32, latent: int = 16, beta: float = 1.0):
        super().__init__(in_channels, image_size, levels, num_classes)
        if image_size % 4:
            raise ValueError(f"the VAE halves the image twice: its size must be a multiple of 4, not {image_size}")
        self.latent, self.beta = latent, beta
        s, w = image_size // 4, width
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(2 * w * s * s, 256), nn.ReLU(), nn.Linear(256, 2 * latent))
        self.decoder = nn.Sequential(
            nn.Linear(latent, 256), nn.ReLU(), nn.Linear(256, 2 * w * s * s), nn.ReLU(),
            nn.Unflatten(1, (2 * w, s, s)),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w, in_channels * levels, 3, 1, 1))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x * 2 - 1).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)  # keeps exp(logvar) finite early in training

    def decode(self, z: Tensor) -> Tensor:
        """Logits B×C×L×H×W."""
        h = self.decoder(z)
        return h.view(len(z), self.in_channels, self.levels, self.image_size, self.image_size)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        target = to_levels(x, self.levels)  # levels=2: the binarised image (pixel > 127), which is also encoded
        mu, logvar = self.encode(target.float() / (self.levels - 1))
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # the reparameterisation trick
        recon = discrete_nll(self.decode(z), target)
        kl = gaussian_kl(mu, logvar)
        return {"loss": bits_per_dim(recon + self.beta * kl, self.dims).mean(),
                "bits_per_dim": bits_per_dim(recon + kl, self.dims),
                "recon_bits_per_dim": bits_per_dim(recon, self.dims),
                "kl_bits_per_dim": bits_per_dim(kl, self.dims)}

    @torch.no_grad()
    def iw_bound(self, x: Tensor, k: int = 100, chunk: int = 25) -> tuple[Tensor, Tensor]:
        """(importance-weighted bound, k-sample ELBO), both as negative log-likelihoods in nats per image:
        -log mean_k p(x, z_k)/q(z_k|x) ≤ -ELBO, tightening as k grows."""
        target = to_levels(x, self.levels)
        mu, logvar = self.encode(target.float() / (self.levels - 1))
        log_w = []
        for start in range(0, k, chunk):  # k decoder passes, a chunk of samples at a time
            n = min(chunk, k - start)
            eps = torch.randn(n, *mu.shape, device=mu.device)
            z = mu + eps * (0.5 * logvar).exp()  # n×B×latent
            flat = z.reshape(-1, self.latent)
            log_px = -discrete_nll(self.decode(flat), target.repeat(n, 1, 1, 1)).view(n, -1)
            log_pz = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
            log_qz = gaussian_log_prob(z, mu, logvar)
            log_w.append(log_px + log_pz - log_qz)
        w = torch.cat(log_w)
        return -log_mean_exp(w, 0), -w.mean(0)

    def mean_image(self, z: Tensor) -> Tensor:
        """The decoder's expected pixel value, uint8 N×C×H×W."""
        probs = self.decode(z).softmax(2)
        values = torch.arange(self.levels, dtype=probs.dtype, device=probs.device).view(1, 1, -1, 1, 1)
        return self.to_uint8((probs * values).sum(2))

    @torch.no_grad()
    def generate(self, seeds: Sequence[int], labels: Sequence[int] | None = None) -> Tensor:
        return self.mean_image(seeded_normal(seeds, (self.latent,)))

    @torch.no_grad()
    def interpolate(self, a: Tensor, b: Tensor, steps: int = 8) -> Tensor:
        """Decoder means along the straight line between the posterior means of images ``a`` and ``b``
        (each B×C×H×W): uint8 B×steps×C×H×W."""
        mu_a, mu_b = (self.encode(to_levels(v, self.levels).float() / (self.levels - 1))[0] for v in (a, b))
        t = torch.linspace(0, 1, steps).view(1, steps, 1)
        z = mu_a[:, None] * (1 - t) + mu_b[:, None] * t
        return self.mean_image(z.reshape(-1, self.latent)).view(len(a), steps, *a.shape[1:])
