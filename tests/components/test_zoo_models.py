"""Tests for the zoo families: every conf/model file builds and trains one step at 28x28x1 and
32x32x3, Maxout against a plain reference, init statistics, hand-counted parameters, the diagnostic."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from components.diagnostics import activation_stats, collapse_ratio, probe_modules
from components.models import (
    ACTIVATIONS,
    INITS,
    MLP,
    BasicBlock,
    Bottleneck,
    DenseNet,
    GoogLeNet,
    Inception,
    Maxout,
    ResNet,
    WideResNet,
    accepted_options,
    build_model,
    count_macs,
    count_parameters,
)
from components.models.layers import init_linear, init_std
from components.packaging import ModelSpec, load_package, save_package
from components.plots import activation_stats_figure, zoo_figure
from pipelines.config import ConfigError, available, load_config
from pipelines.config.schema import GENERATIVE_MODELS
from pipelines.dispatch import DETECTOR_MODELS

#: Classifiers and segmentation nets; generators and detectors have their own tests (test_generative.py,
#: test_detection_task.py), as they take targets a single cross-entropy step does not describe.
MODEL_CONFS = [m for m in available("model") if m not in GENERATIVE_MODELS and m not in DETECTOR_MODELS]


def _spec(conf: str, channels: int, size: int, *overrides: str) -> ModelSpec:
    """The ModelSpec the train stage builds from conf/model/<conf>.yaml (pipelines.stages.train.model_spec)."""
    from pipelines.stages.train import model_spec

    cfg = load_config("train", [f"model={conf}", *overrides])

    @dataclasses.dataclass
    class _Manifest:  # only the two fields model_spec reads
        shape: tuple[int, int, int]
        classes: tuple[str, ...]

    return model_spec(cfg, _Manifest((size, size, channels), tuple("abcdefghij")))


@pytest.mark.parametrize("conf", MODEL_CONFS)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_every_model_conf_builds_and_trains_a_step(conf: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    spec = _spec(conf, channels, size)
    model = spec.build().train().to(memory_format=torch.channels_last)
    x = torch.rand(4, channels, size, size).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the train stage's bf16 + channels_last path
        out = model(x)
    if spec.task == "segmentation":  # a score per pixel for background and each of the 10 classes
        assert out.shape == (4, 11, size, size)
        target = torch.randint(0, 11, (4, size, size))
    else:
        assert out.shape == (4, 10)
        target = torch.arange(4)
    loss = nn.functional.cross_entropy(out.float(), target)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert count_parameters(model) > 0 and count_macs(model, (channels, size, size)) > 0


@pytest.mark.parametrize("conf,overrides", [
    ("mlp", ("model.activation=maxout", "model.hidden=[32,16]", "model.init=xavier")),
    ("resnext", ()), ("densenet", ("model.growth=6", "model.depth=22"))])
def test_package_round_trip_keeps_family_options(conf: str, overrides: tuple[str, ...], tmp_path) -> None:
    torch.manual_seed(0)
    spec = _spec(conf, 1, 28, *overrides)
    assert all(getattr(spec, o.split("=")[0].split(".")[1]) is not None for o in overrides)
    model = spec.build().eval()
    save_package(tmp_path / conf, model, spec)
    loaded, loaded_spec = load_package(tmp_path / conf)
    assert loaded_spec == spec
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_old_package_without_new_fields_still_loads(tmp_path) -> None:
    # arch.json as written before the zoo families: no activation/init/hidden/block/groups/growth keys.
    spec = ModelSpec(name="resnet", in_channels=1, num_classes=10, image_size=28, classes=tuple("0123456789"),
                     depth=8, width=4)
    model = spec.build()
    save_package(tmp_path, model, spec)
    arch = json.loads((tmp_path / "arch.json").read_text())
    for key in ("activation", "init", "hidden", "block", "groups", "growth"):
        arch.pop(key)
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    loaded, loaded_spec = load_package(tmp_path)
    assert loaded_spec.block is None and isinstance(loaded.net, ResNet)
    # The train stage's spec of a plain ResNet equals the old one, so retrain still warm-starts from it.
    assert _spec("resnet20", 1, 28).to_dict() == {**ModelSpec.from_dict(arch).to_dict(), "classes": list("abcdefghij"),
                                                    "depth": 20, "width": 16}


def test_options_are_routed_only_to_families_that_take_them() -> None:
    assert set(accepted_options("mlp")) == {"hidden", "activation", "init"}
    assert set(accepted_options("resnet")) == {"depth", "width", "block", "groups"}
    assert accepted_options("densenet") == ("depth", "growth")
    kw = {"in_channels": 1, "num_classes": 10, "image_size": 28}
    with pytest.raises(ValueError, match="activation does not apply to 'vgg'"):
        build_model("vgg", activation="tanh", **kw)
    with pytest.raises(ValueError, match="ResNeXt"):
        build_model("resnet", groups=4, **kw)
    with pytest.raises(ConfigError, match="model.depth"):
        load_config("train", ["model=wide_resnet", "model.depth=20"])
    with pytest.raises(ConfigError, match="model.groups"):
        load_config("train", ["model=resnet20", "model.groups=4"])
    assert load_config("train", ["model=mlp", "model.hidden=[32, 16]"]).model.hidden == (32, 16)
    with pytest.raises(ConfigError, match="'vggg'.*neither a conf/model file"):
        load_config("zoo", ["zoo.models=[mlp,vggg]"])
    assert load_config("zoo", ["zoo.models=[mlp,pipelines.flows.zoo:majority_class]"]).zoo.models[1] == \
        "pipelines.flows.zoo:majority_class"


# --- hand-written pieces against plain references -----------------------------------------------


def test_maxout_matches_a_max_over_separate_linear_layers() -> None:
    torch.manual_seed(0)
    m = Maxout(5, 3, pieces=4)
    x = torch.randn(7, 5)
    w = m.linear.weight.detach().view(3, 4, 5)  # unit j, piece k
    b = m.linear.bias.detach().view(3, 4)
    expected = torch.empty(7, 3)
    for n in range(7):  # the definition, one sample and one unit at a time
        for j in range(3):
            expected[n, j] = max(float(w[j, k] @ x[n] + b[j, k]) for k in range(4))
    torch.testing.assert_close(m(x), expected)
    # The gradient reaches only the winning piece.
    m(x[:1]).sum().backward()
    grad = m.linear.weight.grad.view(3, 4, 5)
    assert int((grad.abs().sum(-1) > 0).sum()) == 3


@pytest.mark.parametrize("init,expected", [("small", lambda n: 0.01), ("xavier", lambda n: 1 / math.sqrt(n)),
                                           ("he", lambda n: math.sqrt(2 / n))])
def test_init_weight_std(init: str, expected) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(1000, 500)
    init_linear(layer, init)
    assert init_std(init, 1000) == pytest.approx(expected(1000))
    assert float(layer.weight.detach().std()) == pytest.approx(expected(1000), rel=0.02)  # 500k samples: ~0.1% error
    assert abs(float(layer.weight.detach().mean())) < 0.01 * expected(1000)
    assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("init", INITS)
def test_mlp_every_activation_and_init(activation: str, init: str) -> None:
    torch.manual_seed(0)
    net = MLP(1, 10, 8, hidden=(16, 16), activation=activation, init=init, batchnorm=True, dropout=0.1)
    x = torch.rand(6, 1, 8, 8)
    net(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    if activation == "prelu":
        assert sum(isinstance(m, nn.PReLU) for m in net.modules()) == 2


def test_parameter_counts_by_hand() -> None:
    # MLP 784-100-10 without BN: (784*100 + 100) + (100*10 + 10).
    mlp = MLP(1, 10, 28, hidden=(100,), batchnorm=False)
    assert count_parameters(mlp) == 784 * 100 + 100 + 100 * 10 + 10
    # Maxout doubles the hidden affine map: 784*(2*100) + 2*100.
    maxout = MLP(1, 10, 28, hidden=(100,), activation="maxout", batchnorm=False)
    assert count_parameters(maxout) == 784 * 200 + 200 + 100 * 10 + 10
    # One Inception module, no BN (biases on): 1x1 | 1x1-3x3 | 1x1-5x5 | pool-1x1 from 8 channels.
    inc = Inception(8, 4, 2, 6, 1, 3, 5, batchnorm=False)
    by_hand = (8 * 4 + 4) + (8 * 2 + 2 + 2 * 9 * 6 + 6) + (8 * 1 + 1 + 1 * 25 * 3 + 3) + (8 * 5 + 5)
    assert count_parameters(inc) == by_hand and inc.out_channels == 4 + 6 + 3 + 5
    # Published sizes: ResNet-32 0.46M (He et al. 2016 Table 6), WRN-16-4 2.7M, DenseNet-BC-100 k=12 0.8M.
    assert 0.46e6 < count_parameters(ResNet(3, 10, 32, depth=32)) < 0.47e6
    assert 2.7e6 < count_parameters(WideResNet(3, 10, 32, depth=16, widen=4)) < 2.8e6
    assert 0.76e6 < count_parameters(DenseNet(3, 10, 32, depth=100, growth=12)) < 0.81e6


def test_resnet_bottleneck_and_resnext_structure() -> None:
    net = ResNet(3, 10, 32, depth=29, block="bottleneck", width=16)
    blocks = list(net.stages)
    assert len(blocks) == 9 and all(isinstance(b, Bottleneck) for b in blocks)
    assert blocks[-1].conv3.out_channels == 4 * 64
    resnext = ResNet(3, 10, 32, depth=29, block="bottleneck", width=32, groups=8)
    assert resnext.stages[0].conv2.groups == 8
    # A grouped 3x3 has 1/groups of the weights of a dense one.
    assert resnext.stages[0].conv2.weight.numel() * 8 == 32 * 32 * 9
    with pytest.raises(ValueError, match="9n\\+2"):
        ResNet(3, 10, 32, depth=21, block="bottleneck")
    assert all(isinstance(b, BasicBlock) for b in ResNet(3, 10, 32, depth=20).stages)


def test_googlenet_has_inception_modules_with_bottlenecks() -> None:
    net = GoogLeNet(3, 10, 32, width=64)  # the paper's channel counts
    modules = [m for m in net.modules() if isinstance(m, Inception)]
    assert len(modules) == 4
    assert modules[0].out_channels == 256 and modules[1].out_channels == 480  # Table 1: 3a, 3b
    assert modules[0].b3[0][0].kernel_size == (1, 1)  # the 1x1 reduce before the 3x3


# --- the init diagnostic --------------------------------------------------------------------------


def test_diagnostic_shows_collapse_for_tanh_small_init_and_not_for_relu_he() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 1, 16, 16)
    bad = MLP(1, 10, 16, hidden=(256,) * 6, activation="tanh", init="small")
    good = MLP(1, 10, 16, hidden=(256,) * 6, activation="relu", init="he")
    bad_stats, good_stats = activation_stats(bad, x), activation_stats(good, x)
    assert len(bad_stats) == len(good_stats) == 6
    assert all(math.isfinite(s.mean) and math.isfinite(s.std) for s in bad_stats + good_stats)
    # Each tanh layer with N(0, 0.01) weights shrinks the std by ~sqrt(256) * 0.01 = 0.16.
    assert collapse_ratio(bad_stats) < 1e-3
    assert 0.5 < collapse_ratio(good_stats) < 2.0
    fig = activation_stats_figure(bad_stats, "tanh + small")
    assert len(fig.axes) == 2 + 6


@pytest.mark.parametrize("name", ["resnet", "googlenet", "densenet", "convnet", "wide_resnet"])
def test_diagnostic_probes_every_family_and_leaves_the_model_alone(name: str) -> None:
    torch.manual_seed(0)
    net = build_model(name, in_channels=1, num_classes=10, image_size=16).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stats = activation_stats(net, torch.rand(8, 1, 16, 16))
    assert len(stats) == len(probe_modules(net)) >= 3
    assert all(math.isfinite(s.std) and s.std > 0 and len(s.sample) > 0 for s in stats)
    assert not net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN stats untouched


def test_zoo_figure_draws_one_point_per_model() -> None:
    rows = [{"model": "mlp", "test_accuracy": 0.88, "params": 2.7e5, "seconds": 30.0},
            {"model": "knn", "test_accuracy": 0.85, "params": 0, "seconds": 5.0}]
    fig = zoo_figure(rows)
    offsets = fig.axes[0].collections[0].get_offsets()
    assert np.allclose(np.asarray(offsets)[:, 1], [0.88, 0.85])
