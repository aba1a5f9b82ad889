"""Generative models' building blocks: masked convolutions see no future pixel, the VAE's KL term and
bound, bits/dim on hand-computed cases, the two baselines, and the generation task's seams.

    .venv/bin/python -m pytest tests/components/test_generative.py
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.likelihood import (
    bits_per_dim,
    categorical_baseline_bits,
    discrete_nll,
    gaussian_kl,
    xz_bits,
)
from components.models.generative import MaskedConv2d, PixelCNN, build_generator
from components.tasks import build_task
from components.tasks.generation import GenStats, sample_grid


def _future_gradients(net: PixelCNN, size: int, channels: int, pixels) -> None:
    """For each (row, col, channel): d logits / d input is exactly zero at that value and every later one
    (raster order, channels in order within a pixel), and not zero everywhere before it."""
    torch.manual_seed(0)
    for r, c, ch in pixels:
        x = torch.rand(1, channels, size, size, requires_grad=True)
        net.logits(x)[0, ch, :, r, c].sum().backward()
        g = x.grad[0]  # C×H×W
        order = (torch.arange(size * size).view(size, size) * channels)[None] + torch.arange(channels).view(-1, 1, 1)
        i = (r * size + c) * channels + ch
        assert torch.count_nonzero(g[order >= i]) == 0, (r, c, ch)
        if i > 0:
            assert torch.count_nonzero(g[order < i]) > 0, (r, c, ch)


def test_pixelcnn_output_never_sees_its_own_or_later_pixels():
    net = PixelCNN(1, 8, levels=16, width=32, depth=2)
    _future_gradients(net, 8, 1, [(0, 0, 0), (0, 1, 0), (0, 7, 0), (1, 0, 0), (3, 4, 0), (4, 0, 0), (7, 7, 0)])


def test_colour_pixelcnn_predicts_r_then_g_then_b():
    net = PixelCNN(3, 6, levels=16, width=48, depth=1)  # wide: no colour group whose ReLUs all happen to be off
    _future_gradients(net, 6, 3, [(0, 0, 0), (0, 0, 1), (0, 0, 2), (2, 3, 0), (2, 3, 1), (2, 3, 2), (5, 5, 2)])


def test_mask_types_differ_only_at_the_centre():
    a, b = MaskedConv2d("A", 1, 1, 5).mask[0, 0], MaskedConv2d("B", 1, 1, 5).mask[0, 0]
    assert a[2, 2] == 0 and b[2, 2] == 1
    a[2, 2] = 1
    assert torch.equal(a, b) and b[:2].all() and b[2, :3].all() and not b[2, 3:].any() and not b[3:].any()
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2d("C", 1, 1, 3)


def test_kl_term_matches_the_closed_form_of_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(5, 7), torch.ones(5, 7))
    assert torch.allclose(gaussian_kl(mu, logvar), torch.distributions.kl_divergence(q, p).sum(1), atol=1e-5)
    # by hand: N(1, 1) against N(0, 1) is 1/2 nat per dimension; N(0, 1) against itself is 0
    assert gaussian_kl(torch.ones(1, 4), torch.zeros(1, 4)).item() == pytest.approx(2.0)
    assert gaussian_kl(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0


def test_bits_per_dim_on_hand_computed_cases():
    # a uniform 256-way guess costs exactly 8 bits for every pixel value
    target = torch.randint(0, 256, (3, 1, 4, 4))
    nll = discrete_nll(torch.zeros(3, 1, 256, 4, 4), target)
    assert torch.allclose(bits_per_dim(nll, 16), torch.full((3,), 8.0))
    # a 2×2 image whose true values get probability 1/2, 1/4, 1/4, 1: (1 + 2 + 2 + 0) / 4 = 1.25 bits/dim
    probs = torch.tensor([[0.5, 0.5], [0.75, 0.25], [0.75, 0.25], [0.0, 1.0]])  # rows: pixels; the true value is 1
    logits = probs.clamp_min(1e-30).log().T.reshape(1, 1, 2, 2, 2)
    nll = discrete_nll(logits, torch.ones(1, 1, 2, 2, dtype=torch.long))
    assert bits_per_dim(nll, 4).item() == pytest.approx(1.25, abs=1e-6)
    assert bits_per_dim(4 * math.log(2), 4) == pytest.approx(1.0)


def test_categorical_baseline_by_hand_and_xz_on_extremes():
    train = np.array([[0], [0], [1]], dtype=np.uint8)
    # add-one counts for the one pixel: value 0 seen 2+1, value 1 seen 1+1: p(0) = 3/5
    assert categorical_baseline_bits(train, np.array([[0]]), levels=2) == pytest.approx(-math.log2(3 / 5))
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (200, 28, 28), dtype=np.uint8)
    assert categorical_baseline_bits(noise[:100], noise[100:]) > 8.0  # nothing to learn: no better than raw bytes
    assert xz_bits(noise) > 7.9 and xz_bits(np.zeros((200, 28, 28), np.uint8)) < 0.05


def test_vae_loss_terms_and_importance_weighted_bound():
    torch.manual_seed(0)
    vae = build_generator("vae", in_channels=1, image_size=8, levels=256, width=8, latent=4, beta=2.0)
    x = torch.randint(0, 256, (6, 1, 8, 8)).float() / 255
    out = vae(x)
    assert torch.allclose(out["bits_per_dim"], out["recon_bits_per_dim"] + out["kl_bits_per_dim"])
    expected = (out["recon_bits_per_dim"] + 2 * out["kl_bits_per_dim"]).mean()
    assert out["loss"].detach().item() == pytest.approx(expected.detach().item(), rel=1e-5)
    iw, elbo = vae.iw_bound(x, k=20)
    assert iw.shape == (6,) and torch.all(iw <= elbo + 1e-4)  # log-mean-exp ≥ mean, on the same samples
    assert vae.interpolate(x[:2], x[2:4], steps=5).shape == (2, 5, 1, 8, 8)


@pytest.mark.parametrize("name", ["vae", "pixelcnn"])
def test_generation_is_a_function_of_the_seed(name):
    torch.manual_seed(0)
    net = build_generator(name, in_channels=1, image_size=4, levels=16, width=8, depth=1).eval()
    a, b = net.generate([5, 6, 7]), net.generate([7, 5])
    assert a.dtype == torch.uint8 and a.shape == (3, 1, 4, 4)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert name == "vae" or not torch.equal(a[0], a[1])  # an untrained VAE's mean images may all look alike


def test_pixelcnn_samples_on_a_band_of_rows_are_the_full_image_samples():
    torch.manual_seed(0)
    net = PixelCNN(1, 7, levels=8, width=8, depth=1).eval()  # the band (4 + 1 rows) is narrower from row 5
    assert torch.equal(net.generate([1, 2], band=True), net.generate([1, 2], band=False))


def test_generation_task_meter_prep_and_served_form():
    torch.manual_seed(0)
    task = build_task("generation", num_classes=10, model="pixelcnn", grid_key="samples/grid")
    assert (task.primary, task.higher_is_better, task.served_params()) == ("bits_per_dim", False, {})
    net = build_generator("pixelcnn", in_channels=1, image_size=8, width=8, depth=1)
    batch = {"image": np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8),
             "label": np.arange(4)}
    inputs, targets = task.batch_prep()(batch)
    outputs, loss = task.forward(net, inputs, targets)
    meter = task.meter()
    meter.add(outputs, targets, float(loss))
    both = meter.with_totals([a + b for a, b in zip(meter.totals(), meter.totals())]).compute()
    assert both["bits_per_dim"] == pytest.approx(float(outputs["bits_per_dim"].mean()), rel=1e-6)
    served = task.predict(net, np.array([3, 4], dtype=np.int64))["images"]
    assert served.shape == (2, 8, 8) and served.dtype == np.uint8
    assert np.array_equal(served, task.predict(net, np.array([3, 4]))["images"])
    vae = build_task("generation", num_classes=10, model="vae", grid_key="samples/grid")
    grid = vae.epoch_artifacts(build_generator("vae", in_channels=1, image_size=8, width=4, latent=2), 0)["samples/grid"]
    assert grid.shape == (8 * 10 + 2, 8 * 10 + 2) and grid.dtype == np.uint8
    inputs, outputs = task.served_schema(np.array([0]), {"image_shape": (8, 8)})
    assert inputs[0].dtype == "int64" and outputs[0].shape == (-1, 8, 8)
    assert build_task("generation", num_classes=10, model="vae", sample_every=2, grid_key="g").epoch_artifacts(net, 0) == {}


def test_sample_grid_tiles_colour_and_grey():
    grey = sample_grid(np.zeros((3, 1, 4, 4), np.uint8), side=2)
    colour = sample_grid(np.zeros((4, 3, 4, 4), np.uint8), side=2)
    assert grey.shape == (14, 14) and colour.shape == (14, 14, 3)
    assert GenStats(("bits_per_dim",)).compute() == {"loss": 0.0, "bits_per_dim": 0.0}


def test_binarised_variant_is_pixel_above_127_and_scored_over_two_levels():
    from components.likelihood import to_levels

    x = torch.tensor([0, 127, 128, 255], dtype=torch.float32).view(1, 1, 2, 2) / 255
    assert to_levels(x, 2).flatten().tolist() == [0, 0, 1, 1]
    assert to_levels(x, 256).flatten().tolist() == [0, 127, 128, 255]
    net = build_generator("pixelcnn", in_channels=1, image_size=2, levels=2, width=4, depth=1)
    assert 0 < float(net(x)["bits_per_dim"]) < 4  # two levels: a fresh net's guess is about 1 bit/dim
    assert set(net.generate([0, 1]).unique().tolist()) <= {0, 255}
