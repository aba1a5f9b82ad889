"""HOG and colour histogram (§3.2) against plain NumPy loops; the features + linear model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.models import build_model
from components.models.features import HOG, ColorHistogram, FeaturesLinear


def _hog_reference(img: np.ndarray, cell: int, nbins: int, block: int, eps: float = 1e-5) -> np.ndarray:
    """Dalal-Triggs HOG written out with loops: img is (H, W) float64."""
    h, w = img.shape
    gx, gy = np.zeros_like(img), np.zeros_like(img)
    for r in range(h):
        for c in range(1, w - 1):
            gx[r, c] = img[r, c + 1] - img[r, c - 1]
    for r in range(1, h - 1):
        for c in range(w):
            gy[r, c] = img[r + 1, c] - img[r - 1, c]
    ch, cw = h // cell, w // cell
    cells = np.zeros((nbins, ch, cw))
    for r in range(ch * cell):
        for c in range(cw * cell):
            mag = math.hypot(gx[r, c], gy[r, c])
            ang = math.atan2(gy[r, c], gx[r, c]) % math.pi
            b = min(int(ang / (math.pi / nbins)), nbins - 1)
            cells[b, r // cell, c // cell] += mag / (cell * cell)
    out = []
    for br in range(ch - block + 1):
        for bc in range(cw - block + 1):
            v = cells[:, br:br + block, bc:bc + block].reshape(-1)
            out.append(v / math.sqrt((v ** 2).sum() + eps ** 2))
    return np.concatenate(out)


@pytest.mark.parametrize("size,cell,block", [(8, 4, 1), (12, 4, 2), (9, 3, 2)])
def test_hog_matches_a_loop_reference(size, cell, block):
    rng = np.random.default_rng(size)
    img = rng.random((size, size))
    got = HOG(cell=cell, orientations=9, block=block)(torch.from_numpy(img)[None, None]).numpy()[0]
    np.testing.assert_allclose(got, _hog_reference(img, cell, 9, block), rtol=1e-9, atol=1e-12)


def test_hog_averages_the_channels_and_ignores_brightness_offsets():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    hog = HOG(cell=4)
    np.testing.assert_allclose(hog(x).numpy(), hog(x.mean(1, keepdim=True)).numpy(), atol=1e-12)
    np.testing.assert_allclose(hog(x + 0.5).numpy(), hog(x).numpy(), atol=1e-9)


def test_color_histogram_matches_numpy_histogram():
    x = torch.randn(3, 3, 10, 10, dtype=torch.float64)
    got = ColorHistogram(bins=8, lo=-2.0, hi=2.0)(x).reshape(3, 3, 8).numpy()
    for n in range(3):
        for c in range(3):
            v = x[n, c].numpy().clip(-2, 2 - 1e-12)  # outside values land in the end bins
            ref, _ = np.histogram(v, bins=8, range=(-2, 2))
            np.testing.assert_allclose(got[n, c], ref / 100)


@pytest.mark.parametrize("c,s", [(1, 28), (3, 32)])
def test_features_linear_builds_from_conf_and_trains(c, s):
    net = build_model("hoglinear", in_channels=c, num_classes=10, image_size=s)
    assert isinstance(net, FeaturesLinear)
    x, y = torch.rand(8, c, s, s), torch.randint(0, 10, (8,))
    loss = torch.nn.functional.cross_entropy(net(x), y)
    assert abs(float(loss.detach()) - math.log(10)) < 0.1  # near-zero init: chance loss
    loss.backward()
    assert net.fc.weight.grad is not None and float(net.fc.weight.grad.abs().sum()) > 0
