"""Ensembles: probability averaging, the ensemble package, the EMA and snapshot hooks, the cyclic schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from components.ensembles import (
    EMAHook,
    SnapshotHook,
    config_hooks,
    hook_outputs,
    load_ensemble_package,
    mean_probabilities,
    member_names,
    recompute_batchnorm,
    save_ensemble_package,
)
from components.hooks import build_hooks
from components.models import Normalize
from components.optim import build_scheduler, lr_factor
from components.packaging import ModelSpec, load_package, save_package
from pipelines.services import names

SPEC = ModelSpec(name="convnet", in_channels=1, num_classes=10, image_size=8,
                 classes=tuple(str(i) for i in range(10)), width=8)


def _member(seed: int, mean: float, std: float):
    torch.manual_seed(seed)
    model = SPEC.build(Normalize(torch.tensor([mean]), torch.tensor([std])))
    with torch.no_grad():  # non-trivial BatchNorm statistics, different per member
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def members(tmp_path):
    out = []
    for i, (mean, std) in enumerate([(0.1, 0.3), (0.5, 0.2), (0.3, 0.4)]):
        model = _member(i, mean, std)
        out.append((f"m{i}", save_package(tmp_path / f"m{i}", model, SPEC), model))
    return out


def test_ensemble_probabilities_are_the_mean_of_its_members_on_a_fixed_batch(members, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(32, 8, 8), dtype=np.uint8)
    package = save_ensemble_package(tmp_path / "ensemble", [(name, path) for name, path, _ in members])
    ensemble, spec = load_package(package)  # dispatched by arch.json "format": "ensemble"
    classes, probs = ensemble.predict_uint8(images)
    expected = mean_probabilities([m for _, _, m in members], images)
    member_probs = torch.stack([m.predict_uint8(images)[1] for _, _, m in members])
    assert not torch.allclose(member_probs[0], member_probs[1], atol=1e-3)  # members really differ
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(probs.sum(1), torch.ones(32), atol=1e-6, rtol=0)
    assert torch.equal(classes, expected.argmax(1))
    # The evaluation loop's path (forward on [0, 1] floats) ranks classes the same way as serving.
    x = torch.from_numpy(images).unsqueeze(1).float() / 255
    with torch.no_grad():
        assert torch.equal(ensemble(x).argmax(1), classes)
    assert spec.name == "ensemble" and spec.num_classes == 10 and member_names(package) == ["m0", "m1", "m2"]


def test_ensemble_of_one_is_that_model(members, tmp_path):
    name, path, model = members[1]
    ensemble, _ = load_ensemble_package(save_ensemble_package(tmp_path / "one", [(name, path)]))
    images = np.random.default_rng(1).integers(0, 256, size=(8, 8, 8), dtype=np.uint8)
    torch.testing.assert_close(ensemble.predict_uint8(images)[1], model.predict_uint8(images)[1], atol=1e-6, rtol=1e-5)


def test_an_ensemble_member_may_itself_be_an_ensemble(members, tmp_path):
    # load_package hands itself to the ensemble loader, so members of any format load.
    inner = save_ensemble_package(tmp_path / "inner", [(n, p) for n, p, _ in members[:2]])
    outer = save_ensemble_package(tmp_path / "outer", [("inner", inner), ("m2", members[2][1])])
    model, spec = load_package(outer)
    images = np.random.default_rng(2).integers(0, 256, size=(8, 8, 8), dtype=np.uint8)
    inner_probs = mean_probabilities([m for _, _, m in members[:2]], images)
    expected = (inner_probs + members[2][2].predict_uint8(images)[1]) / 2
    torch.testing.assert_close(model.predict_uint8(images)[1], expected, atol=1e-6, rtol=1e-5)
    assert spec.name == "ensemble" and member_names(outer) == ["inner", "m2"]


def test_ensemble_refuses_members_of_other_data(members, tmp_path):
    other = ModelSpec(name="convnet", in_channels=1, num_classes=5, image_size=8,
                      classes=tuple("abcde"), width=8)
    save_package(tmp_path / "other", other.build(), other)
    with pytest.raises(ValueError, match="num_classes"):
        save_ensemble_package(tmp_path / "bad", [("m0", members[0][1]), ("other", tmp_path / "other")])


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)
        self.bn = nn.BatchNorm1d(1)


def _set(model: _Tiny, w: float, running_mean: float, batches: int) -> None:
    with torch.no_grad():
        model.fc.weight.fill_(w)
        model.fc.bias.fill_(-w)
        model.bn.running_mean.fill_(running_mean)
        model.bn.num_batches_tracked.fill_(batches)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_hook_matches_a_hand_computation(warmup):
    model = _Tiny()
    _set(model, 1.0, 0.0, 0)
    hook = EMAHook(0.9, SPEC.to_dict(), warmup=warmup)
    hook.setup(model)
    weights, shadow = [3.0, -2.0, 5.0], 1.0
    rm_shadow = 0.0
    for t, w in enumerate(weights):
        _set(model, w, running_mean=10.0 * w, batches=t + 1)
        hook.after_step(model, t)
        d = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
        shadow = d * shadow + (1 - d) * w
        rm_shadow = d * rm_shadow + (1 - d) * 10.0 * w
    assert hook.shadow["fc.weight"].flatten().tolist() == pytest.approx([shadow, shadow])
    assert hook.shadow["fc.bias"].item() == pytest.approx(-shadow)
    assert hook.shadow["bn.running_mean"].item() == pytest.approx(rm_shadow)  # float buffers: averaged
    assert hook.shadow["bn.num_batches_tracked"].item() == 3  # integer buffers: copied
    if warmup:  # the first update's decay is 1/10: the average leaves the initialisation fast
        assert hook.current_decay() == pytest.approx(min(0.9, 4 / 13))
    # state_dict/load_state_dict: a resumed hook continues exactly where the first left off
    resumed = EMAHook(0.9, SPEC.to_dict(), warmup=warmup)
    resumed.setup(_Tiny())
    resumed.load_state_dict(hook.state_dict())
    _set(model, 7.0, 0.0, 4)
    hook.after_step(model, 3)
    resumed.after_step(model, 3)
    for k in hook.shadow:
        assert torch.equal(hook.shadow[k], resumed.shadow[k])


def test_ema_hook_saves_a_loadable_package_of_the_averaged_weights(tmp_path):
    model = _member(0, 0.2, 0.3)
    hook = EMAHook(0.5, SPEC.to_dict(), warmup=False)
    hook.setup(model)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    hook.after_step(model, 0)
    hook.end_epoch(model, 0, tmp_path / "extras" / "00-EMAHook")
    loaded, spec = load_package(tmp_path / "extras" / "00-EMAHook" / "ema")
    name = "net.head.weight" if "net.head.weight" in first else next(k for k in first if k.endswith("weight"))
    torch.testing.assert_close(loaded.state_dict()[name], first[name] + 0.5)
    assert hook_outputs(tmp_path / "extras")["ema"] == tmp_path / "extras" / "00-EMAHook" / "ema"


def test_recompute_batchnorm_gives_the_exact_batch_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm1d(3))
    data = torch.randn(50, 3) * 2 + 1
    seen = recompute_batchnorm(net, [data[:20], data[20:40], data[40:]])
    assert seen == 50
    torch.testing.assert_close(net[0].running_mean, data.mean(0), atol=1e-5, rtol=1e-5)
    assert net[0].momentum == 0.1  # restored


def test_snapshot_hook_keeps_one_snapshot_per_cycle(tmp_path):
    hook, = build_hooks(config_hooks(0.0, 3, 6, SPEC, names.ENSEMBLE_SNAPSHOTS_TAKEN))
    assert isinstance(hook, SnapshotHook)
    model = _member(0, 0.2, 0.3)
    taken = []
    for epoch in range(6):
        with torch.no_grad():
            next(model.parameters()).fill_(float(epoch))
        out = tmp_path / f"ckpt{epoch}" / "extras" / "01-SnapshotHook"
        taken.append(hook.end_epoch(model, epoch, out)[names.ENSEMBLE_SNAPSHOTS_TAKEN])
    assert taken == [0, 1, 1, 2, 2, 3]  # at the end of epochs 2, 4, 6
    found = hook_outputs(tmp_path / "ckpt5" / "extras")["snapshots"]
    assert [p.name for p in found] == ["snapshot-1", "snapshot-2", "snapshot-3"]
    firsts = [float(next(load_package(p)[0].parameters()).detach().flatten()[0]) for p in found]
    assert firsts == [1.0, 3.0, 5.0]
    again = SnapshotHook(3, 6, SPEC.to_dict())
    again.load_state_dict(hook.state_dict())
    assert len(again.snapshots) == 3


def test_cyclic_cosine_schedule_restarts_at_each_cycle():
    total, cycles = 30, 3
    f = [lr_factor(s, schedule="cosine", total_steps=total, warmup_steps=0, cycles=cycles) for s in range(total)]
    assert [f[0], f[10], f[20]] == [1.0, 1.0, 1.0]  # a restart to the peak at each cycle start
    for c in range(cycles):
        cycle = f[10 * c:10 * (c + 1)]
        assert all(a > b for a, b in zip(cycle, cycle[1:]))  # decreasing within a cycle
        assert cycle[-1] < 0.03  # ends near 0: where the snapshot is taken
    assert f[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    # warm-up belongs to the first cycle; the later cycles are unchanged
    w = [lr_factor(s, schedule="cosine", total_steps=total, warmup_steps=4, cycles=cycles) for s in range(total)]
    assert w[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and w[10:] == f[10:]
    # the scheduler follows the factor
    opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.2)
    sched = build_scheduler(opt, schedule="cosine", total_steps=total, warmup_steps=0, cycles=cycles)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.2 * v for v in f])
    with pytest.raises(ValueError, match="cosine"):
        build_scheduler(opt, schedule="step", total_steps=total, warmup_steps=0, step_every=5, cycles=3)


def test_config_checks_of_the_ensemble_keys():
    from pipelines.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="train.snapshots"):
        load_config("ensemble", ["train.epochs=10", "train.snapshots=3"])
    with pytest.raises(ConfigError, match="ensemble.members"):
        load_config("ensemble", ["ensemble.members=[snapshots,bagging]"])
    with pytest.raises(ConfigError, match="ensemble.sweep_run"):
        load_config("ensemble", ["ensemble.members=[sweep]"])
    from pipelines.flows.ensemble import check

    with pytest.raises(ConfigError, match="train.ema_decay"):
        check(load_config("ensemble", ["train.ema_decay=0"]))
    cfg = load_config("ensemble", ["ensemble.members=[sweep,ema]", "ensemble.sweep_run=last"])
    assert cfg.ensemble.members == ("sweep", "ema") and cfg.train.snapshots == 1


def test_greedy_selection_keeps_complementary_members_and_drops_a_useless_one():
    from components.ensembles import greedy_selection

    labels = np.array([0, 1] * 50)
    n = len(labels)

    def leaning(right: np.ndarray) -> np.ndarray:  # 0.7 on the label where right, else 0.7 on the other class
        p = np.full((n, 2), 0.3)
        p[np.arange(n), np.where(right, labels, 1 - labels)] = 0.7
        return p

    half, odd = np.arange(n) < n // 2, np.arange(n) % 2 == 1
    a = leaning(half | ~odd)  # right on 75 %
    b = leaning(~half | odd)  # right on 75 %, wrong where a is right on the other 25 %
    noise = np.full((n, 2), 0.5)  # knows nothing
    chosen = greedy_selection([noise, a, b], labels)
    assert chosen[0] in (1, 2) and set(chosen) == {1, 2}  # both experts, the best first; never the noise
    mean = (a + b) / 2
    assert -np.log(mean[np.arange(n), labels]).mean() < min(-np.log(p[np.arange(n), labels]).mean() for p in (a, b))


def test_greedy_selection_stops_at_a_member_no_other_improves():
    from components.ensembles import greedy_selection

    labels = np.array([0, 1, 1, 0])
    perfect = np.eye(2)[labels] * 0.98 + 0.01
    worse = np.full((4, 2), 0.5)
    assert greedy_selection([worse, perfect, worse], labels) == [1]
    with pytest.raises(ValueError):
        greedy_selection([], labels)
