"""Content and style images: scikit-image's bundled ones by name, or any image file, as 3×S×S floats in [0, 1].

    x = load("chelsea", 256)          # scikit-image's cat, centre-cropped to a square and resized
    x = load("~/photos/me.jpg", 256)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

#: scikit-image's bundled images the style pipeline accepts by name (contents first, then textures).
BUNDLED = ("astronaut", "chelsea", "coffee", "brick", "grass", "gravel", "camera", "rocket")


def exists(name: str) -> bool:
    """Whether ``name`` is a bundled image or an existing file."""
    return name in BUNDLED or Path(name).expanduser().is_file()


def read(name: str) -> np.ndarray:
    """The raw image (H×W or H×W×C, uint8) that ``name`` names; ValueError naming it when unreadable."""
    if name in BUNDLED:
        import skimage.data

        return np.asarray(getattr(skimage.data, name)())
    from PIL import Image, UnidentifiedImageError

    path = Path(name).expanduser()
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path} is not a readable image ({type(e).__name__}).") from None


def load(name: str, size: int) -> Tensor:
    """3×size×size float in [0, 1]: the centre square of the image, resized (grey images repeated to RGB)."""
    from PIL import Image

    pixels = read(name)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    pixels = pixels[..., :3]
    h, w = pixels.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(pixels[top:top + side, left:left + side].astype(np.uint8))
    resized = np.asarray(square.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    return torch.from_numpy(resized).permute(2, 0, 1).contiguous()


def to_uint8(image: Tensor) -> np.ndarray:
    """C×H×W float in [0, 1] → H×W×C uint8 (H×W for one channel), as an image artifact."""
    array = (image.detach().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return array[..., 0] if array.shape[-1] == 1 else array
