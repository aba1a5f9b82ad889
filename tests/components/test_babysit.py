"""§3.1 and §6.2: SVM/softmax gradients against numerical ones, the first-iteration loss, overfitting 32 images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from components import engine
from components.babysit import LinearDiagnostics, expected_initial_loss, initial_loss
from components.losses import build_criterion, multiclass_svm_loss
from components.models import ImageClassifier, Normalize, build_model


def _numerical_grad(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(x)
    flat, g = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = float(flat[i])
        flat[i] = old + h
        plus = float(f(x))
        flat[i] = old - h
        minus = float(f(x))
        flat[i] = old
        g[i] = (plus - minus) / (2 * h)
    return grad


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_linear_classifier_loss_and_gradient_match_numerical_gradients(loss):
    """The course's gradient check on W of a linear classifier, L2 regularisation included."""
    torch.manual_seed(0)
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 4, (6,))
    w = torch.randn(5, 4, dtype=torch.float64) * 0.5
    reg = 0.1
    criterion = build_criterion(loss)

    def f(w_: torch.Tensor) -> torch.Tensor:
        return criterion(x @ w_, y) + reg * (w_ * w_).sum()

    w_autograd = w.clone().requires_grad_(True)
    f(w_autograd).backward()
    numerical = _numerical_grad(f, w.clone())
    np.testing.assert_allclose(w_autograd.grad.numpy(), numerical.numpy(), rtol=1e-5, atol=1e-7)


def test_svm_loss_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=(7, 5)), rng.integers(0, 5, 7)
    ref = np.mean([sum(max(0.0, s[i, j] - s[i, y[i]] + 1) for j in range(5) if j != y[i]) for i in range(7)])
    assert float(multiclass_svm_loss(torch.from_numpy(s), torch.from_numpy(y))) == pytest.approx(ref)


@pytest.mark.parametrize("loss,classes", [("softmax", 10), ("svm", 10), ("softmax", 5)])
@pytest.mark.parametrize("model", ["softmax", "hoglinear"])
def test_first_iteration_loss_is_ln_c_or_c_minus_1(model, loss, classes):
    torch.manual_seed(0)
    net = ImageClassifier(Normalize(torch.tensor([0.5]), torch.tensor([0.25])),
                          build_model(model, in_channels=1, num_classes=classes, image_size=28))
    images = np.random.default_rng(0).integers(0, 256, (128, 28, 28, 1), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, classes, 128)
    value = initial_loss(net, loss, images, labels)
    expected = expected_initial_loss(loss, classes)
    assert expected == (math.log(classes) if loss == "softmax" else classes - 1)
    assert value == pytest.approx(expected, rel=0.05)


def test_linear_diagnostics_hook_reports_the_first_loss_and_renders_templates(tmp_path):
    torch.manual_seed(0)
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 10, 64)
    np.savez(tmp_path / "batch.npz", image=images, label=labels)
    model = ImageClassifier(Normalize.identity(1), build_model("softmax", in_channels=1, num_classes=10, image_size=8))
    hook = LinearDiagnostics(str(tmp_path / "batch.npz"), "svm", [str(i) for i in range(10)],
                             {"initial": "linear/initial_loss", "expected": "linear/expected_initial_loss"})
    hook.setup(model)
    out = tmp_path / "extras"
    out.mkdir()
    metrics = hook.end_epoch(model, 0, out)
    assert metrics["linear/expected_initial_loss"] == 9.0
    assert metrics["linear/initial_loss"] == pytest.approx(9.0, rel=0.05)
    assert (out / "class_templates.png").stat().st_size > 1000
    assert hook.end_epoch(model, 1, None) == {}  # logged once, at the first epoch


def test_overfitting_32_images_reaches_near_zero_loss():
    """§6.2: with no regularisation a small net must memorise a small subset."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    d = load_digits()
    x = torch.from_numpy((d.images[:32] / 16.0).astype(np.float32))[:, None]
    y = torch.from_numpy(d.target[:32]).long()
    model = ImageClassifier(Normalize.identity(1), build_model("convnet", in_channels=1, num_classes=10,
                                                                image_size=8, width=8))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.0)
    stats = None
    for _ in range(60):
        stats = engine.train_one_epoch(model, nn.CrossEntropyLoss(), opt, [(x, y)],
                                       guard=engine.ExplosionGuard(3.0))
    assert stats.loss < 0.05 and stats.accuracy == 1.0
