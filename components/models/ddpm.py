"""A small denoising diffusion model (DDPM, Ho et al. 2020) with a U-Net denoiser, sampled by DDIM.

    ddpm = Diffusion(in_channels=1, image_size=28, width=32, timesteps=1000)
    loss = ddpm.loss(images01)                                    # ε-prediction MSE at a random t per image
    images = ddpm.sample_uint8(torch.arange(16), steps=50)        # DDIM (Song et al. 2021), η = 0

Forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I) with the linear β schedule of the paper
(1e-4 → 0.02 over T = 1000 steps); the U-Net predicts the noise ε from (x_t, t). Sampling runs DDIM's
deterministic update on ``steps`` evenly spaced timesteps (50-100 instead of 1,000), so an image is a
function of its seed alone: the served form returns the same image for the same seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Transformer-style sinusoids of the timestep (dim/2 frequencies from 1 to 1/10,000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    # Group norm, not batch norm: a denoiser sees a batch of different noise levels, whose statistics differ
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """Two 3×3 convs with group norm and SiLU; the timestep's embedding is added between them."""

    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(tdim, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    """ε(x_t, t): resolutions S, S/2, S/4 with widths w, 2w, 2w; one residual block per level on the way
    down, two on the way up (one after each skip concatenation, as in the paper's layout), no attention."""

    def __init__(self, in_channels: int, image_size: int, width: int = 32):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"the U-Net halves the image twice: its size must be divisible by 4, got {image_size}")
        w, self.tdim = width, 4 * width
        self.time = nn.Sequential(nn.Linear(w, self.tdim), nn.SiLU(), nn.Linear(self.tdim, self.tdim))
        self.inp = nn.Conv2d(in_channels, w, 3, padding=1)
        self.down1, self.down2 = ResBlock(w, w, self.tdim), ResBlock(w, 2 * w, self.tdim)
        self.pool1 = nn.Conv2d(w, w, 3, stride=2, padding=1)
        self.pool2 = nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1)
        self.mid1, self.mid2 = ResBlock(2 * w, 2 * w, self.tdim), ResBlock(2 * w, 2 * w, self.tdim)
        self.up2 = ResBlock(4 * w, 2 * w, self.tdim)
        self.up1 = ResBlock(3 * w, w, self.tdim)
        self.out = nn.Sequential(_norm(w), nn.SiLU(), nn.Conv2d(w, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # starts by predicting ε = 0: the loss starts at E[ε²] = 1
        nn.init.zeros_(self.out[-1].bias)
        self.width = w

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.time(timestep_embedding(t, self.width))
        h1 = self.down1(self.inp(x), temb)                  # S, w
        h2 = self.down2(self.pool1(h1), temb)               # S/2, 2w
        h = self.mid2(self.mid1(self.pool2(h2), temb), temb)  # S/4, 2w
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.up2(torch.cat([h, h2], dim=1), temb)       # S/2, 2w
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.up1(torch.cat([h, h1], dim=1), temb)       # S, w
        return self.out(h)


class Diffusion(nn.Module):
    """The denoiser and its noise schedule (buffers, so they travel in the state dict)."""

    def __init__(self, in_channels: int, image_size: int, width: int = 32, timesteps: int = 1000,
                 sample_steps: int = 50):
        super().__init__()
        if not 1 <= sample_steps <= timesteps:
            raise ValueError(f"sampling steps must be in [1, {timesteps}], got {sample_steps}")
        self.in_channels, self.image_size, self.timesteps, self.sample_steps = in_channels, image_size, timesteps, sample_steps
        self.unet = UNet(in_channels, image_size, width)
        # The paper's linear schedule is set for T = 1000; rescaled so another T keeps the same end points of ᾱ
        scale = 1000 / timesteps
        betas = torch.linspace(1e-4 * scale, 0.02 * scale, timesteps, dtype=torch.float64)
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, 0).float())

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(x, t)

    def loss(self, images: Tensor, generator: torch.Generator | None = None, per_example: bool = False) -> Tensor:
        """E_t,ε ||ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t)||² (mean over pixels) for images in [0, 1], t uniform,
        one per image: the batch's mean, or each image's (``per_example``)."""
        x0 = images * 2 - 1
        t = torch.randint(0, self.timesteps, (len(x0),), device=x0.device, generator=generator)
        eps = torch.randn(x0.shape, device=x0.device, generator=generator)
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        errors = (self(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps).pow(2).flatten(1).mean(1)
        return errors if per_example else errors.mean()

    def noise(self, seeds: Tensor | list[int]) -> Tensor:
        """x_T for each seed, each from its own generator: an image depends on its seed alone."""
        seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, Tensor) else seeds)]
        shape = (self.in_channels, self.image_size, self.image_size)
        x = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
        return (torch.stack(x) if x else torch.zeros(0, *shape)).to(self.alpha_bar.device)

    @torch.no_grad()
    def sample(self, seeds: Tensor | list[int], steps: int | None = None) -> Tensor:
        """DDIM with η = 0 on ``steps`` (default ``sample_steps``) evenly spaced timesteps: images in [0, 1]."""
        steps = steps or self.sample_steps
        was = self.training
        self.eval()
        try:
            x = self.noise(seeds)
            times = torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()
            for i, t in enumerate(times):
                a = self.alpha_bar[t]
                a_prev = self.alpha_bar[times[i + 1]] if i + 1 < len(times) else torch.ones_like(a)
                eps = self(x, torch.full((len(x),), t, device=x.device, dtype=torch.long))
                x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
                x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
            return (x.clamp(-1, 1) + 1) / 2
        finally:
            self.train(was)

    def sample_uint8(self, seeds: Tensor | list[int], steps: int | None = None) -> Tensor:
        """uint8 N×H×W (grey) or N×H×W×C images, on the CPU: the served form."""
        x = self.sample(seeds, steps).mul(255).round().to(torch.uint8).cpu().permute(0, 2, 3, 1)
        return x[..., 0] if x.shape[-1] == 1 else x
