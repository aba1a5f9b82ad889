"""Pictures of segmentations: prediction over ground truth, as one PNG, in NumPy and Pillow only (no
matplotlib: a Ray Train worker draws these after an epoch, and workers never import it).

    from components.dense_plots import overlay_grid, png_bytes

    grid = overlay_grid(images, true_masks, predicted_masks)   # (rows*H*scale, 3*W*scale, 3) uint8
    open("preview.png", "wb").write(png_bytes(grid))

Each row is one image: the image itself, the ground-truth mask blended over it, the prediction blended
over it. Class 0 (background) is left unpainted; 255 (ignored) is grey.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["PALETTE", "colourise", "overlay_grid", "png_bytes"]

#: One colour per class id (class 0, background, is not painted); repeats after 16 classes.
PALETTE = np.array([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40],
    [128, 0, 0], [170, 255, 195], [0, 0, 128]], dtype=np.uint8)
IGNORED_COLOUR = np.array([128, 128, 128], dtype=np.uint8)


def colourise(mask: np.ndarray) -> np.ndarray:
    """(…, H, W) class ids → (…, H, W, 3) colours."""
    ids = np.asarray(mask).astype(np.int64)
    out = PALETTE[np.where(ids == 0, 0, (ids - 1) % (len(PALETTE) - 1) + 1)]
    out[ids == 255] = IGNORED_COLOUR
    return out


def _rgb(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def _blend(images: np.ndarray, masks: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    colours = colourise(masks).astype(np.float32)
    painted = (np.asarray(masks) != 0)[..., None]
    mixed = (1 - alpha) * images.astype(np.float32) + alpha * colours
    return np.where(painted, mixed, images).round().astype(np.uint8)


def overlay_grid(images: np.ndarray, true_masks: np.ndarray, predicted: np.ndarray, scale: int = 3,
                 gap: int = 2) -> np.ndarray:
    """Rows of [image | truth over image | prediction over image], enlarged ``scale`` times (nearest)."""
    rgb = _rgb(images)
    n, h, w, _ = rgb.shape
    panels = np.stack([rgb, _blend(rgb, true_masks), _blend(rgb, predicted)], axis=1)  # (n, 3, h, w, 3)
    panels = panels.repeat(scale, axis=2).repeat(scale, axis=3)
    hs, ws = h * scale, w * scale
    grid = np.full((n * (hs + gap) - gap, 3 * (ws + gap) - gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        for j in range(3):
            grid[i * (hs + gap):i * (hs + gap) + hs, j * (ws + gap):j * (ws + gap) + ws] = panels[i, j]
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 (H, W, 3) array as PNG file contents."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
