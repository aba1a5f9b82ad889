"""pipelines.config.usage: which sections a pipeline uses (and logs as params), the values it will use,
each field's help; its copies of the model families' options and the sources' shapes stay true.

    .venv/bin/python -m pytest -q tests/pipelines/test_config_usage.py
"""

from __future__ import annotations

import inspect
import typing

import pytest

from pipelines.config import ModelName, available, load_config, usage
from pipelines.config.base import close_match

SHARED = ("cluster", "tracking")


@pytest.mark.parametrize("pipeline, overrides, sections", [
    ("quickstart", [], ("data", "model", "train", "registry")),
    ("train", [], ("data", "model", "train", "registry")),
    ("quickstart", ["stages=[ingest]"], ("data",)),
    ("quickstart", ["registry.enabled=false"], ("data", "model", "train")),
    ("retrain", [], ("data", "model", "train", "registry", "retrain")),
    ("knn", [], ("data", "registry", "knn")),
    ("zoo", [], ("data", "train", "zoo")),
    ("transfer", ["transfer.source=models:/m/1"], ("data", "train", "transfer")),
    ("sweep", [], ("data", "model", "train", "registry", "tune")),
    ("sweep", ["tune.base=rl"], ("registry", "tune", "rl")),
    ("ensemble", [], ("data", "model", "train", "registry", "ensemble")),
    ("compress", [], ("data", "model", "train", "registry", "compress")),
    ("rl", [], ("registry", "rl")),
    ("rl_atari", [], ("registry", "rl")),
    ("charlm", [], ("data", "train", "registry", "charlm")),
    ("caption", [], ("data", "model", "train", "registry", "caption")),
    ("bench", [], ("data", "model", "train", "bench")),
    ("bench_charlm", [], ("data", "train", "bench", "charlm")),
    ("explain", [], ("data", "explain")),
    ("style", [], ("style",)),
])
def test_used_sections(pipeline, overrides, sections):
    cfg = load_config(pipeline, overrides)
    assert set(usage.used_sections(cfg)) == set(SHARED + sections)
    assert usage.used_sections(cfg) == tuple(s for s in usage.section_names() if s in usage.used_sections(cfg))


def test_every_pipeline_file_has_an_answer():
    for name in available("pipeline"):
        used = usage.used_sections(load_config(name))
        assert set(SHARED) <= set(used), name


def test_only_the_used_sections_are_logged_as_params():
    from pipelines.services import tracking

    params = tracking.config_params(load_config("quickstart"))
    sections = {k.split(".")[0] for k in params if "." in k}
    assert sections == {"data", "model", "train", "cluster", "tracking", "registry"}
    assert params["train.epochs"] == "6" and params["pipeline"] == "quickstart" and "resume" not in params
    full = len(tracking.flatten(load_config("quickstart").to_dict()))
    assert len(params) < full / 2, (len(params), full)  # 168 keys before
    rl = tracking.config_params(load_config("rl"))
    assert "rl.algo" in rl and not any(k.startswith(("data.", "model.", "train.")) for k in rl)


def test_effective_resolves_what_the_config_leaves_open():
    quick = usage.effective(load_config("quickstart"))
    assert quick["registry"]["name"] == "fashion-mnist-classifier"
    assert (quick["data"]["image_size"], quick["data"]["channels"]) == (28, 1)
    assert set(quick["model"]) == {"name", "width", "dropout", "batchnorm", "tta", "init_diagnostic"}
    assert "bptt" not in quick["train"] and "freeze" not in quick["train"]
    assert usage.effective(load_config("quickstart", ["model.width=0"]))["model"]["width"] == 32  # convnet's
    resnet = usage.effective(load_config("train", ["model=resnet56"]))["model"]
    assert resnet["depth"] == 56 and resnet["block"] == "basic" and "hidden" not in resnet
    folder = usage.effective(load_config("train", ["data=image_folder", "data.image_size=64"]))["data"]
    assert (folder["image_size"], folder["channels"]) == (64, 3)
    assert usage.effective(load_config("train", ["registry.name=mine"]))["registry"]["name"] == "mine"
    assert usage.effective(load_config("rl", ["rl.algo=dqn"]))["registry"]["name"] == "cartpole-v1-dqn"
    text = usage.effective(load_config("charlm"))
    assert "image_size" not in text["data"] and "augment" not in text["data"] and "bptt" in text["train"]
    assert usage.effective(load_config("caption"))["model"] == {"dropout": 0.1}
    assert (usage.effective(load_config("caption"))["data"]["image_size"]) == 56


def test_fields_carry_type_default_and_help():
    fields = {f.key: f for f in usage.fields(load_config("quickstart"))}
    epochs = fields["train.epochs"]
    assert (epochs.type, epochs.default, epochs.help) == ("int", 6, "passes over the training split")
    assert fields["train.optimizer"].type.startswith("one of: sgd|")
    assert fields["data.path"].type == "text or null" and fields["data.classes"].type == "list of text"
    assert fields["data.augment.flip"].type == "bool"
    assert all(f.help for f in fields.values())
    assert {k.split(".")[0] for k in fields} == set(usage.used_sections(load_config("quickstart")))


def test_value_choices_and_all_keys():
    assert "adamw" in usage.value_choices("train.optimizer")
    assert usage.value_choices("cluster.use_gpu") == ["true", "false"]
    assert usage.value_choices("train.epochs") == usage.value_choices("nope.x") == []
    keys = usage.all_keys()
    assert "train.epochs" in keys and "rl.ppo.lr" in keys and "seed" in keys and "train" not in keys


def test_close_match_prefers_the_longer_shared_start():
    assert close_match("resnet21", available("model")) == "resnet20"
    assert close_match("epoch", ["epochs", "batch_size"]) == "epochs"
    assert close_match("zzz", ["epochs"]) is None


def test_family_options_are_the_builders_keyword_parameters():
    from components.models import option_defaults
    from components.models.detectors import DETECTOR_OPTIONS, DETECTORS
    from components.models.generative import generator_class
    from pipelines.config.schema import GENERATIVE_MODELS

    families = typing.get_args(ModelName)
    assert set(usage.FAMILY_OPTIONS) == set(families)
    for name in families:
        if name in GENERATIVE_MODELS:  # a generative model's width/depth defaults: its class's keywords
            defaults = inspect.signature(generator_class(name)).parameters
            assert usage.FAMILY_OPTIONS[name] == {k: defaults[k].default for k in ("width", "depth")
                                                  if k in generator_class(name).OPTIONS}, name
            continue
        expected = DETECTOR_OPTIONS if name in DETECTORS else option_defaults(name)
        assert usage.FAMILY_OPTIONS[name] == expected, name


def test_source_shapes_are_what_the_readers_give():
    from components.data.sources import (
        digits,
        fashion_grid,
        fashion_mnist,
        locate_fashion_mnist,
    )

    assert digits().shape == usage.SOURCE_SHAPES["digits"]
    if locate_fashion_mnist(None) is None:
        pytest.skip("Fashion-MNIST is not installed (dataset-fashion-mnist)")
    source = fashion_mnist(None)
    assert source.shape == usage.SOURCE_SHAPES["fashion_mnist"]
    assert fashion_grid("val", n=2, source=source).images.shape[1:] == usage.SOURCE_SHAPES["fashion_grid"]
