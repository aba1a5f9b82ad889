"""Generative models (§13): each is a :class:`GenerativeModel`, registered by name in :data:`GENERATORS`.

    from components.models.generative import build_generator
    net = build_generator("pixelcnn", in_channels=1, image_size=28, levels=256, width=32, depth=5)

* ``vae``: convolutional variational autoencoder, 256-way categorical decoder, β configurable - vae.py
* ``pixelcnn``: masked convolutions (type A then B), 256-way softmax per pixel value - pixelcnn.py
* ``dcgan``, ``cdcgan`` (class-conditional), ``ddpm`` (U-Net, DDIM sampling): judged by FID - adversarial.py
"""

from __future__ import annotations

from typing import Any, Callable

from components.models.generative.adversarial import CDCGAN, DCGAN, DDPM
from components.models.generative.base import GenerativeModel
from components.models.generative.pixelcnn import MaskedConv2d, PixelCNN
from components.models.generative.vae import VAE

#: name → class; each is built as ``cls(in_channels, image_size, levels, num_classes, **options)``.
GENERATORS: dict[str, Callable[..., GenerativeModel]] = {
    "vae": VAE,
    "pixelcnn": PixelCNN,
    "dcgan": DCGAN,
    "cdcgan": CDCGAN,
    "ddpm": DDPM,
}


def build_generator(name: str, *, in_channels: int, image_size: int, levels: int = 256, num_classes: int = 0,
                    **options: Any) -> GenerativeModel:
    if name not in GENERATORS:
        raise ValueError(f"unknown generative model {name!r}; known: {', '.join(GENERATORS)}")
    cls = GENERATORS[name]
    return cls(in_channels, image_size, levels, num_classes,
               **{k: v for k, v in options.items() if v is not None and k in cls.OPTIONS})


def generator_class(name: str) -> type[GenerativeModel]:
    if name not in GENERATORS:
        raise ValueError(f"unknown generative model {name!r}; known: {', '.join(GENERATORS)}")
    return GENERATORS[name]  # type: ignore[return-value]


__all__ = ["CDCGAN", "DCGAN", "DDPM", "GENERATORS", "GenerativeModel", "MaskedConv2d", "PixelCNN", "VAE", "build_generator", "generator_class"]
