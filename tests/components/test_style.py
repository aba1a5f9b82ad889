"""components.style: the Gram matrix by hand, the losses, the random multi-scale features, and the three
optimisations on tiny images.

    .venv/bin/python -m pytest -q tests/components/test_style.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from components.style import features, images, synthesis


def test_gram_matrix_against_a_hand_computation():
    f = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[3.0, 0.0], [1.0, 1.0]]]])  # N=1, C=2, H=W=2
    # channel 0 = (1, 2, 0, 1), channel 1 = (3, 0, 1, 1): <c0,c0> = 6, <c0,c1> = 4, <c1,c1> = 11; / (C·H·W = 8)
    expected = torch.tensor([[[6.0, 4.0], [4.0, 11.0]]]) / 8
    assert torch.allclose(synthesis.gram(f), expected)


def test_losses_are_zero_on_their_targets_and_relative():
    f = torch.rand(1, 4, 5, 5)
    assert float(synthesis.style_loss([f], [synthesis.gram(f)])) == 0.0
    assert float(synthesis.content_loss(f, f)) == 0.0
    assert float(synthesis.content_loss(torch.zeros_like(f), f)) == pytest.approx(1.0)  # relative to the target
    assert float(synthesis.tv_loss(torch.ones(1, 3, 4, 4))) == 0.0
    assert float(synthesis.tv_loss(torch.rand(1, 3, 4, 4))) > 0


def test_random_features_are_fixed_multi_scale_and_differentiable():
    net = features.RandomFeatures(filters=6, scales=(1, 2, 4), kernel=3, seed=1)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    maps = net(x)
    assert [tuple(m.shape) for m in maps] == [(2, 6, 16, 16), (2, 6, 8, 8), (2, 6, 4, 4)]
    sum(m.sum() for m in maps).backward()
    assert x.grad is not None and not any(p.requires_grad for p in net.parameters())
    again = features.RandomFeatures(filters=6, scales=(1, 2, 4), kernel=3, seed=1)
    assert torch.equal(net.weights, again.weights)  # the seed fixes the filters


def test_model_features_stop_before_the_head():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    maps = features.ModelFeatures(net, layers=2)(torch.rand(1, 3, 20, 20))  # RGB into a grey 8x8 net: no head
    assert [tuple(m.shape) for m in maps] == [(1, 4, 20, 20), (1, 4, 20, 20)]


def test_texture_synthesis_and_transfer_lower_the_style_loss():
    net = features.RandomFeatures(filters=8, scales=(1, 2), kernel=3)
    content, style = images.load("chelsea", 24), images.load("brick", 24)
    tex = synthesis.texture(net, style, steps=15, style_weight=1.0, optimizer="adam", lr=0.05, log_every=5)
    assert tex.history[-1]["style"] < tex.history[0]["style"] / 3
    assert [s for s, _ in tex.snapshots] == [5, 10, 15]
    out = synthesis.transfer(net, content, style, steps=6, style_weight=1.0, optimizer="lbfgs", log_every=3)
    assert out.history[-1]["style"] < out.history[0]["style"] and out.history[0]["content"] == pytest.approx(0, abs=1e-6)
    assert out.image.shape == (3, 24, 24) and 0 <= float(out.image.min()) and float(out.image.max()) <= 1


def test_dream_strengthens_its_layer():
    net = features.RandomFeatures(filters=4, scales=(1, 2), kernel=3)
    out = synthesis.dream(net, images.load("coffee", 24), layer=1, steps=5, lr=0.02, jitter=2, log_every=5)
    assert out.history[-1]["dream"] > out.history[0]["dream"]


def test_images_by_name_or_path(tmp_path):
    from PIL import Image

    assert images.load("gravel", 32).shape == (3, 32, 32)  # grey, repeated to RGB
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((10, 30, 3), 200, np.uint8)).save(path)
    x = images.load(str(path), 16)
    assert x.shape == (3, 16, 16) and float(x.mean()) == pytest.approx(200 / 255, abs=1e-3)
    assert not images.exists(str(tmp_path / "missing.png"))
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="bad.png"):
        images.read(str(tmp_path / "bad.png"))
    assert images.to_uint8(torch.ones(1, 2, 2)).shape == (2, 2)
