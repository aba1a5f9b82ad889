"""Tests for components.losses and components.optim."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from components.losses import (
    CRITERIA,
    MulticlassSVMLoss,
    build_criterion,
    multiclass_svm_loss,
)
from components.models import SoftmaxLinear
from components.optim import (
    OPTIMIZERS,
    SCHEDULES,
    build_optimizer,
    build_scheduler,
    lr_factor,
)

# --- losses ------------------------------------------------------------------


def _svm_loss_numpy(scores: np.ndarray, y: np.ndarray, margin: float) -> float:
    """CS231n's unvectorised loop, as the reference implementation."""
    total = 0.0
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            if j != y[i]:
                total += max(0.0, scores[i, j] - scores[i, y[i]] + margin)
    return total / scores.shape[0]


def test_svm_loss_matches_numpy_loop() -> None:
    rng = np.random.default_rng(0)
    for margin in (1.0, 0.5):
        scores = rng.normal(size=(6, 5))
        y = rng.integers(0, 5, size=6)
        got = multiclass_svm_loss(torch.from_numpy(scores), torch.from_numpy(y), margin)
        assert math.isclose(float(got), _svm_loss_numpy(scores, y, margin), rel_tol=1e-12)


def test_svm_loss_gradcheck() -> None:
    torch.manual_seed(0)
    # Scores spread out so no margin sits within gradcheck's eps of the hinge.
    scores = (torch.randn(4, 5, dtype=torch.float64) * 3).requires_grad_()
    y = torch.tensor([0, 3, 1, 4])
    assert torch.autograd.gradcheck(lambda s: multiclass_svm_loss(s, y), (scores,))


def test_svm_loss_gradient_matches_numerical_difference_of_numpy_loop() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(3, 4)) * 3
    y = np.array([2, 0, 3])
    s = torch.from_numpy(scores).requires_grad_()
    multiclass_svm_loss(s, torch.from_numpy(y)).backward()
    h = 1e-6
    numeric = np.zeros_like(scores)
    for idx in np.ndindex(*scores.shape):
        plus, minus = scores.copy(), scores.copy()
        plus[idx] += h
        minus[idx] -= h
        numeric[idx] = (_svm_loss_numpy(plus, y, 1.0) - _svm_loss_numpy(minus, y, 1.0)) / (2 * h)
    np.testing.assert_allclose(s.grad.numpy(), numeric, atol=1e-6)


def test_initial_loss_sanity_checks() -> None:
    # CS231n section 3.1: with tiny weights all scores are ~0, so the softmax
    # loss is ~ln(C) and the SVM loss ~(C - 1) * margin.
    torch.manual_seed(0)
    net = SoftmaxLinear(3, 10, 32, init_std=0.001)
    x = torch.rand(64, 3, 32, 32)
    y = torch.randint(0, 10, (64,))
    with torch.no_grad():
        scores = net(x)
    assert abs(float(build_criterion("softmax")(scores, y)) - math.log(10)) < 0.01
    assert abs(float(build_criterion("svm")(scores, y)) - 9.0) < 0.1


def test_build_criterion() -> None:
    assert set(CRITERIA) == {"softmax", "svm"}
    assert isinstance(build_criterion("softmax", label_smoothing=0.1), nn.CrossEntropyLoss)
    assert isinstance(build_criterion("svm"), MulticlassSVMLoss)
    with pytest.raises(ValueError, match="softmax.*svm"):
        build_criterion("hinge")
    with pytest.raises(ValueError, match="label_smoothing"):
        build_criterion("svm", label_smoothing=0.1)


# --- optimizers ----------------------------------------------------------------


def _quadratic_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_reduces_a_quadratic(name: str) -> None:
    model = _quadratic_model()
    opt = build_optimizer(name, model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def loss_fn() -> torch.Tensor:
        return sum(p.square().sum() for p in model.parameters())  # type: ignore[return-value]

    before = float(loss_fn().detach())
    for _ in range(3):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    assert float(loss_fn().detach()) < before


def test_weight_decay_skips_biases_and_norm_params() -> None:
    model = _quadratic_model()
    opt = build_optimizer("adamw", model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.5)
    decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
    assert len(decayed) == 1 and all(p.ndim >= 2 for p in decayed[0]["params"])
    undecayed = [p for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]]
    assert len(undecayed) == 3 and all(p.ndim == 1 for p in undecayed)  # bias, BN weight, BN bias


def test_optimizer_settings_and_errors() -> None:
    params = list(_quadratic_model().parameters())
    assert build_optimizer("sgd", params, lr=0.1, momentum=0.9, weight_decay=0.0).param_groups[0]["momentum"] == 0
    nesterov = build_optimizer("nesterov", params, lr=0.1, momentum=0.8, weight_decay=0.0)
    assert nesterov.param_groups[0]["nesterov"] and nesterov.param_groups[0]["momentum"] == 0.8
    with pytest.raises(ValueError, match="sgd"):
        build_optimizer("lbfgs", params, lr=0.1, momentum=0.9, weight_decay=0.0)
    with pytest.raises(ValueError):
        build_optimizer("sgd", params, lr=0.0, momentum=0.9, weight_decay=0.0)


# --- schedules -----------------------------------------------------------------


def _lrs(schedule: str, total: int, warmup: int, **kw: float) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.4)
    sched = build_scheduler(opt, schedule=schedule, total_steps=total, warmup_steps=warmup, **kw)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_starts_near_zero_and_reaches_lr() -> None:
    for schedule in SCHEDULES:
        lrs = _lrs(schedule, total=200, warmup=20, step_every=100)
        assert lrs[0] == pytest.approx(0.4 / 20)
        assert all(a < b for a, b in zip(lrs[:20], lrs[1:20]))
        assert lrs[19] == pytest.approx(0.4)


def test_cosine_ends_near_min() -> None:
    lrs = _lrs("cosine", total=100, warmup=10, min_lr_ratio=0.1)
    assert lrs[-1] == pytest.approx(0.04, rel=0.01)
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))
    after_end = lr_factor(1000, schedule="cosine", total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert after_end == pytest.approx(0.1)


def test_step_and_constant_schedules() -> None:
    lrs = _lrs("step", total=30, warmup=0, step_every=10, gamma=0.5)
    assert lrs[0] == lrs[9] == pytest.approx(0.4)
    assert lrs[10] == pytest.approx(0.2) and lrs[29] == pytest.approx(0.1)
    assert set(_lrs("constant", total=10, warmup=0)) == {0.4}
    with pytest.raises(ValueError, match="step_every"):
        _lrs("step", total=10, warmup=0)
    with pytest.raises(ValueError, match="schedule"):
        _lrs("linear", total=10, warmup=0)


def test_scheduler_pickles() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    sched = build_scheduler(opt, schedule="cosine", total_steps=10, warmup_steps=2)
    pickle.loads(pickle.dumps(sched.lr_lambdas[0]))
    assert "last_epoch" in sched.state_dict()
