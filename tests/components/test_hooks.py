"""The training-loop plug-ins and the 3x-loss guard (§6.2)."""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict

import pytest
import torch
from torch import nn

from components.engine import ExplosionGuard, LossExplosion, train_one_epoch
from components.hooks import TrainHook, build_hooks


class CountingHook(TrainHook):
    def __init__(self, start: int = 0):
        self.steps = start

    def after_step(self, model, step):
        self.steps += 1


def test_build_hooks_instantiates_classes_with_kwargs():
    (hook,) = build_hooks([(CountingHook, {"start": 5})])
    assert isinstance(hook, CountingHook) and hook.steps == 5


def test_hook_specs_pickle_by_reference():  # as they cross to the Ray workers in the loop config
    spec = pickle.loads(pickle.dumps([(CountingHook, {"start": 2})]))
    assert spec[0][0] is CountingHook


@pytest.mark.parametrize("target", ["tests.components.test_hooks:CountingHook", OrderedDict, CountingHook(), None])
def test_build_hooks_rejects_anything_but_a_trainhook_class(target):
    with pytest.raises(TypeError, match="training hook"):
        build_hooks([(target, {})])


def test_guard_stops_above_three_times_the_first_loss():
    guard = ExplosionGuard(3.0, smoothing=0.0)
    guard.check(2.0, 0)
    guard.check(5.9, 1)  # 2.95x: still training
    with pytest.raises(LossExplosion, match="exceeds 3x its initial 2"):
        guard.check(6.1, 2)


def test_guard_floor_and_off_switch():
    guard = ExplosionGuard(3.0, floor=math.log(10), smoothing=0.0)  # a warm start's first loss of 0.1
    guard.check(0.1, 0)
    guard.check(0.5, 1)  # 5x the first loss but far below 3 ln 10: noise, not an explosion
    ExplosionGuard(0.0).check(1e9, 0)  # factor 0: off


def test_guard_reduces_before_comparing():
    guard = ExplosionGuard(3.0, reduce=lambda v: v / 10, smoothing=0.0)  # e.g. the mean over ranks
    guard.check(20.0, 0)
    guard.check(50.0, 1)  # 5.0 vs 2.0 initial
    with pytest.raises(LossExplosion):
        guard.check(70.0, 2)


def test_guard_rides_out_one_spike_but_stops_a_climb():
    guard = ExplosionGuard(3.0)  # smoothed: moving average with 0.9
    guard.check(2.3, 0)
    guard.check(12.0, 1)  # one bad batch: the average is 3.27, far below 6.9
    for step in range(2, 6):
        guard.check(2.0, step)
    with pytest.raises(LossExplosion, match="moving average"):
        for step in range(6, 40):
            guard.check(2.0 * 1.3 ** step, step)  # keeps climbing


def test_train_one_epoch_stops_an_absurd_learning_rate():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.randn(64, 1, 4, 4), torch.randint(0, 3, (64,))
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)]
    opt = torch.optim.SGD(model.parameters(), lr=1e4)
    with pytest.raises(LossExplosion, match="lower train.lr"):
        train_one_epoch(model, nn.CrossEntropyLoss(), opt, batches, guard=ExplosionGuard(3.0))
