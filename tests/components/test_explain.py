"""components.explain: attribution, faithfulness, adversarial and fooling images, features, on models whose
answers are known by hand (a linear model's gradient is its weight row).

    .venv/bin/python -m pytest -q tests/components/test_explain.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from components.explain import adversarial as adv
from components.explain import attribution as attr
from components.explain import embedding as emb
from components.explain import parts


def linear_model(seed: int = 0, classes: int = 3, shape=(1, 6, 6)) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), classes)).eval()
    return model


def weight_row(model: nn.Module, cls: int, shape=(1, 6, 6)) -> torch.Tensor:
    return model[1].weight[cls].detach().view(*shape)


def test_saliency_of_a_linear_model_is_its_weight_row():
    model, x = linear_model(), torch.rand(4, 1, 6, 6)
    target = torch.tensor([0, 1, 2, 1])
    grads = attr.gradients(model, x, target)
    smooth = attr.smoothgrad(model, x, target, samples=4)
    for i, c in enumerate(target.tolist()):
        assert torch.allclose(grads[i], weight_row(model, c), atol=1e-6)
        assert torch.allclose(smooth[i], weight_row(model, c), atol=1e-6)  # the gradient is the same everywhere


def test_integrated_gradients_of_a_linear_model_is_input_times_weights_and_complete():
    model, x = linear_model(1), torch.rand(3, 1, 6, 6)
    target = torch.tensor([2, 0, 1])
    ig = attr.integrated_gradients(model, x, target, steps=8)
    with torch.no_grad():
        difference = (model(x) - model(torch.zeros_like(x))).gather(1, target.view(-1, 1)).view(-1)
    for i, c in enumerate(target.tolist()):
        assert torch.allclose(ig[i], x[i] * weight_row(model, c, ), atol=1e-6)
    assert torch.allclose(ig.flatten(1).sum(1), difference, atol=1e-5)


def test_integrated_gradients_are_complete_for_a_nonlinear_net_given_enough_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    x, target = torch.rand(2, 1, 6, 6), torch.tensor([0, 2])
    ig = attr.integrated_gradients(model, x, target, steps=256)
    with torch.no_grad():
        difference = (model(x) - model(torch.zeros_like(x))).gather(1, target.view(-1, 1)).view(-1)
    assert torch.allclose(ig.flatten(1).sum(1), difference, rtol=1e-2, atol=1e-3)


def test_occluding_a_patch_the_model_ignores_changes_nothing():
    model = linear_model(2)
    with torch.no_grad():
        model[1].weight.view(3, 1, 6, 6)[:, :, :3, :3] = 0.0  # the top-left quarter is ignored
    x, target = torch.rand(2, 1, 6, 6), torch.tensor([0, 1])
    heat = attr.occlusion(model, x, target, patch=3, stride=3)
    assert torch.all(heat[:, :, :3, :3] == 0)
    assert heat[:, :, 3:, 3:].abs().sum() > 0  # elsewhere occlusion does move the probability


def test_deletion_of_the_pixels_that_carry_the_class_beats_a_random_order():
    model = linear_model(3)
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight.view(3, 1, 6, 6)[0, 0, 2:4, 2:4] = 5.0  # class 0 is "bright centre"
    x = torch.zeros(1, 1, 6, 6)
    x[..., 2:4, 2:4] = 1.0
    target = torch.tensor([0])
    good = attr.importance(attr.integrated_gradients(model, x, target), "integrated_gradients")
    backwards = -good
    assert attr.deletion_auc(model, x, target, good) < attr.deletion_auc(model, x, target, backwards)
    assert attr.insertion_auc(model, x, target, good) > attr.insertion_auc(model, x, target, backwards)


def test_pointing_game_hits_only_on_the_object():
    heat = torch.zeros(2, 8, 8)
    heat[0, 2, 2] = 1.0  # on the object
    heat[1, 7, 7] = 1.0  # far from it
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 1:4, 1:4] = True
    assert attr.pointing_game(heat, masks, tolerance=0).tolist() == [1.0, 0.0]
    heat[1] = 0
    heat[1, 4, 4] = 1.0  # one pixel off the object: a hit only within the tolerance
    assert attr.pointing_game(heat, masks, tolerance=0).tolist() == [1.0, 0.0]
    assert attr.pointing_game(heat, masks, tolerance=1).tolist() == [1.0, 1.0]


def test_fgsm_raises_the_loss_and_stays_in_the_ball_and_the_pixel_range():
    model, x = linear_model(4), torch.rand(16, 1, 6, 6)
    y = torch.randint(0, 3, (16,))
    loss = nn.functional.cross_entropy
    for eps in (0.05, 0.2):
        attacked = adv.fgsm(model, x, y, eps)
        with torch.no_grad():
            assert float(loss(model(attacked), y)) > float(loss(model(x), y))
        assert (attacked - x).abs().max() <= eps + 1e-6 and attacked.min() >= 0 and attacked.max() <= 1
        stronger = adv.pgd(model, x, y, eps, steps=10)
        assert (stronger - x).abs().max() <= eps + 1e-6
        with torch.no_grad():
            assert float(loss(model(stronger), y)) >= float(loss(model(attacked), y)) - 1e-4


def test_a_fooling_image_reaches_the_asked_confidence():
    model = linear_model(5)
    with torch.no_grad():
        model[1].weight.mul_(10)  # the default init's logits cannot reach 99 % anywhere in [0, 1]^36
    image, p, steps = adv.fooling_image(model, 2, (1, 6, 6), confidence=0.99, max_steps=500)
    assert p >= 0.99 and 0 < steps <= 500
    assert image.min() >= 0 and image.max() <= 1


def test_class_visualisation_raises_its_class_score():
    model = linear_model(6)
    start = torch.full((1, 1, 6, 6), 0.5)
    image = adv.class_visualisation(model, 1, (1, 6, 6), steps=50, jitter=1, blur_every=10)
    with torch.no_grad():
        assert float(model(image[None])[0, 1]) > float(model(start)[0, 1])


def test_penultimate_features_are_the_heads_input():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 7), nn.ReLU(), nn.Linear(7, 3)).eval()
    x = torch.rand(5, 1, 6, 6)
    with torch.no_grad():
        expected = net[2](net[1](net[0](x)))
    assert np.allclose(emb.penultimate(net, x, batch=2), expected.numpy(), atol=1e-6)


def test_knn_accuracy_and_trustworthiness_of_separated_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    points = rng.normal(size=(120, 2)) * 0.1 + labels[:, None] * 5.0
    assert emb.knn_accuracy(points, labels) == 1.0
    assert emb.knn_accuracy(rng.normal(size=(120, 2)), labels) < 0.7  # chance is 1/3
    assert emb.trustworthiness_of(points, points) == pytest.approx(1.0)
    nearest = emb.neighbours(points[:2], points, k=3)
    assert nearest[:, 0].tolist() == [0, 1]  # each query is its own nearest


def test_the_attribution_part_ranks_methods_and_includes_the_random_baseline():
    model, x = linear_model(7), torch.rand(6, 1, 6, 6)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    masks = torch.zeros(6, 6, 6, dtype=torch.bool)
    masks[:, 2:4, 2:4] = True
    out = parts.attributions(model, x, y, grid=3, masks=masks, patch=2, stride=2, samples=2, steps=4, batch=4)
    assert [r["rank"] for r in out["rows"]] == list(range(1, 6))
    assert {r["method"] for r in out["rows"]} == {*attr.METHODS, "random"}
    assert [r["deletion_auc"] for r in out["rows"]] == sorted(r["deletion_auc"] for r in out["rows"])
    assert all(0 <= r["pointing_game"] <= 1 for r in out["rows"])
    assert set(out["maps"]) == set(attr.METHODS) and out["maps"]["occlusion"].shape == (3, 6, 6)
