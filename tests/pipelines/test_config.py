"""conf/ → load_config → one frozen, validated Config: fast, no Ray, no MLflow."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipelines import config
from pipelines.config import (
    CONF_DIR,
    GROUPS,
    Config,
    ConfigError,
    TrainConfig,
    available,
    build,
    describe_pipelines,
    dump,
    flatten,
    load_config,
    parse_overrides,
)

PIPELINES = available("pipeline")


def _error(overrides, pipeline="quickstart") -> str:
    with pytest.raises(ConfigError) as info:
        load_config(pipeline, overrides)
    message = str(info.value)
    assert "\n" not in message, "a ConfigError is one sentence on one line"
    return message


# --------------------------------------------------------------------------- the real conf/


def test_contract_pipelines_present():
    assert {"quickstart", "train"} <= set(PIPELINES)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_pipeline_loads_without_overrides(pipeline):
    cfg = load_config(pipeline)
    assert isinstance(cfg, Config)
    assert cfg.pipeline == pipeline
    assert cfg.description, f"conf/pipeline/{pipeline}.yaml needs a description for `visionray list`"
    assert cfg.stages


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_file_loads(group):
    for name in available(group):
        cfg = load_config("quickstart", [f"{group}={name}"])
        assert isinstance(cfg, Config)


def test_describe_pipelines_matches_files():
    rows = describe_pipelines()
    assert [name for name, _ in rows] == PIPELINES
    for name, description in rows:
        assert description == load_config(name).description


# --------------------------------------------------------------------------- group selection


def test_group_selection_reads_the_group_file():
    cfg = load_config("quickstart", ["model=resnet20"])
    assert cfg.model.name == "resnet"
    assert cfg.model.depth == 20
    assert load_config("quickstart", ["model=resnet56"]).model.depth == 56
    assert load_config("quickstart").model.name == "convnet"


def test_group_selection_applies_before_dotted_keys_whatever_the_order():
    cfg = load_config("quickstart", ["model.width=32", "model=resnet20"])
    assert (cfg.model.name, cfg.model.depth, cfg.model.width) == ("resnet", 20, 32)


def test_data_group_selection():
    cfg = load_config("quickstart", ["data=digits"])
    assert cfg.data.name == "digits"
    assert cfg.data.val_fraction == 0.15
    assert cfg.data.augment.flip is False


def test_pipeline_keys_override_group_files():
    # bench.yaml sets registry.enabled: false on top of its defaults
    assert load_config("bench").registry.enabled is False
    assert load_config("quickstart").registry.enabled is True


def test_unknown_group_file_names_key_and_choices():
    message = _error(["model=nope"])
    assert "model=nope" in message
    for name in available("model"):
        assert name in message


def test_unknown_pipeline_names_it_and_lists_choices():
    with pytest.raises(ConfigError) as info:
        load_config("nope")
    assert "'nope'" in str(info.value)
    for name in PIPELINES:
        assert name in str(info.value)


# --------------------------------------------------------------------------- dotted overrides by type


def test_int_override():
    cfg = load_config("quickstart", ["train.epochs=3", "seed=7", "data.augment.cutout=4"])
    assert cfg.train.epochs == 3 and type(cfg.train.epochs) is int
    assert cfg.seed == 7
    assert cfg.data.augment.cutout == 4


@pytest.mark.parametrize("raw, value", [("0.01", 0.01), ("1e-3", 1e-3), ("2", 2.0), ("5.0e-4", 5e-4)])
def test_float_override(raw, value):
    cfg = load_config("quickstart", [f"train.lr={raw}"])
    assert cfg.train.lr == pytest.approx(value)
    assert type(cfg.train.lr) is float


def test_float_in_yaml_written_without_a_dot():
    # PyYAML reads `1e-3` (no dot) as a string; the schema still makes it a float
    assert build(TrainConfig, {"lr": "1e-3"}, "train.").lr == pytest.approx(1e-3)


@pytest.mark.parametrize("raw", ["x", "3.5", "", "true"])
def test_bad_int_names_the_key(raw):
    message = _error([f"train.epochs={raw}"])
    assert "train.epochs" in message and "whole number" in message


def test_bad_float_names_the_key():
    message = _error(["train.lr=fast"])
    assert "train.lr=fast" in message and "number" in message


@pytest.mark.parametrize("raw, value", [
    ("true", True), ("True", True), ("yes", True), ("on", True), ("1", True),
    ("false", False), ("FALSE", False), ("no", False), ("off", False), ("0", False),
])
def test_bool_spellings(raw, value):
    assert load_config("quickstart", [f"cluster.use_gpu={raw}"]).cluster.use_gpu is value


def test_bad_bool_names_the_key():
    message = _error(["cluster.use_gpu=maybe"])
    assert "cluster.use_gpu=maybe" in message and "true or false" in message


@pytest.mark.parametrize("raw", ["null", "None", "~", ""])
def test_null_for_optional(raw):
    cfg = load_config("quickstart", ["registry.name=foo", f"registry.name={raw}"])
    assert cfg.registry.name is None
    assert load_config("quickstart", [f"data.path={raw}"]).data.path is None


def test_optional_takes_a_value():
    cfg = load_config("quickstart", ["data.path=/some/dir", "tracking.uri=sqlite:///x.db?a=b"])
    assert cfg.data.path == "/some/dir"
    assert cfg.tracking.uri == "sqlite:///x.db?a=b", "only the first '=' splits key from value"


def test_literal_choices():
    cfg = load_config("quickstart", ["train.optimizer=adamw", "train.precision=bf16",
                                     "train.schedule=step", "data.normalization=mean_image"])
    assert (cfg.train.optimizer, cfg.train.precision) == ("adamw", "bf16")
    assert cfg.train.schedule == "step"
    assert cfg.data.normalization == "mean_image"


def test_bad_literal_names_the_allowed_choices():
    message = _error(["train.optimizer=lbfgs"])
    assert "train.optimizer=lbfgs" in message
    for choice in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"):
        assert choice in message
    message = _error(["train.precision=fp8"])
    assert "train.precision=fp8" in message and "fp32" in message and "bf16" in message


def test_bad_data_choice_via_dotted_key():
    message = _error(["data.name=mnist"])
    assert "data.name=mnist" in message and "fashion_mnist" in message


@pytest.mark.parametrize("raw, stages", [
    ("[ingest,preprocess]", ("ingest", "preprocess")),
    ("[ingest, preprocess, train]", ("ingest", "preprocess", "train")),
    ("ingest", ("ingest",)),
])
def test_list_override(raw, stages):
    cfg = load_config("quickstart", [f"stages={raw}"])
    assert cfg.stages == stages
    assert isinstance(cfg.stages, tuple)


def test_later_override_wins():
    assert load_config("quickstart", ["train.epochs=3", "train.epochs=4"]).train.epochs == 4


def test_overrides_do_not_leak_between_loads():
    before = load_config("quickstart")
    load_config("quickstart", ["train.epochs=3", "model=resnet20"])
    cfg = load_config("quickstart")
    assert cfg == before and cfg.train.epochs != 3 and cfg.model.name == "convnet"


# --------------------------------------------------------------------------- override syntax


def test_parse_overrides_splits_groups_from_keys():
    groups, keys = parse_overrides(["model=resnet20", "train.epochs=3", "seed=1", "data=digits"])
    assert groups == {"model": "resnet20", "data": "digits"}
    assert keys == {"train.epochs": "3", "seed": "1"}


@pytest.mark.parametrize("token", ["train.epochs", "=3", " =3"])
def test_malformed_override(token):
    message = _error([token])
    assert repr(token) in message or f"'{token}'" in message
    assert "key=value" in message


# --------------------------------------------------------------------------- frozen


def test_config_is_frozen():
    cfg = load_config("quickstart")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.data.augment.flip = False  # type: ignore[misc]
    assert isinstance(cfg.stages, tuple)


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("key, where, sample", [
    ("foo", "the top level", "seed"),
    ("train.epochz", "train", "epochs"),
    ("data.pathx", "data", "val_fraction"),
    ("data.augment.flipp", "data.augment", "crop_padding"),
    ("cluster.workers", "cluster", "num_workers"),
    ("tracking.url", "tracking", "uri"),
    ("registry.nam", "registry", "enabled"),
    ("model.layers", "model", "depth"),
    ("bench.step", "bench", "warmup_steps"),
])
def test_unknown_key_names_full_key_and_allowed_keys(key, where, sample):
    message = _error([f"{key}=1"])
    assert f"'{key}'" in message
    assert f"{where} takes" in message
    assert sample in message


def test_unknown_key_lists_every_allowed_key():
    message = _error(["train.epochz=1"])
    for f in dataclasses.fields(TrainConfig):
        assert f.name in message


def test_unknown_section_names_first_missing_part():
    message = _error(["optim.lr=1"])
    assert "'optim.lr'" in message and "the top level takes" in message


def test_key_below_a_value():
    message = _error(["train.epochs.max=1"])
    assert "'train.epochs.max'" in message and "train.epochs is a value" in message


@pytest.mark.parametrize("key", ["tracking", "data.augment"])
def test_section_set_to_a_value(key):
    message = _error([f"{key}=x"])
    assert key in message and "section" in message


def test_unknown_key_in_yaml_data_names_full_key():
    with pytest.raises(ConfigError) as info:
        build(Config, {"pipeline": "p", "data": {"augment": {"flipp": True}}}, "")
    assert "'data.augment.flipp'" in str(info.value)
    assert "crop_padding" in str(info.value)


def test_pipeline_name_is_not_an_override():
    # the experiment is visionray/<pipeline>: a key must not silently rename the run
    message = _error(["pipeline=other"])
    assert "pipeline" in message


# --------------------------------------------------------------------------- semantic checks


@pytest.mark.parametrize("overrides, key", [
    (["train.epochs=0"], "train.epochs"),
    (["train.batch_size=0"], "train.batch_size"),
    (["train.lr=0"], "train.lr"),
    (["train.lr=-1"], "train.lr"),
    (["train.label_smoothing=1"], "train.label_smoothing"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["data.val_fraction=0"], "data.val_fraction"),
    (["data.val_fraction=0.6", "data.test_fraction=0.5"], "data.test_fraction"),
    (["data.channels=2"], "data.channels"),
    (["data.augment.brightness=1"], "data.augment.brightness"),
    (["model=resnet20", "model.depth=21"], "model.depth"),
    (["model.dropout=1"], "model.dropout"),
    (["cluster.num_workers=0"], "cluster.num_workers"),
])
def test_semantic_checks_name_the_key(overrides, key):
    assert key in _error(overrides)


def test_resnet_depth_check_only_for_resnet():
    assert load_config("quickstart", ["model.depth=21"]).model.depth == 21  # convnet ignores depth
    assert "model.depth" in _error(["model.depth=21"], pipeline="train")  # train uses resnet20
    assert load_config("train", ["model.depth=32"]).model.depth == 32


# --------------------------------------------------------------------------- flatten, names, dump


def test_flatten_gives_dotted_keys():
    assert flatten({"train": {"lr": 0.1}, "seed": 0}) == {"train.lr": 0.1, "seed": 0}
    flat = flatten(load_config("quickstart", ["train.epochs=3"]).to_dict())
    assert flat["train.epochs"] == 3
    assert flat["data.augment.crop_padding"] == 2
    assert flat["pipeline"] == "quickstart"
    assert flat["stages"] == ["ingest", "preprocess", "train", "evaluate", "register"]
    assert not any(isinstance(v, dict) for v in flat.values())
    assert all(k.split(".")[-1] for k in flat)


def test_to_dict_is_plain_data():
    d = load_config("quickstart").to_dict()
    assert isinstance(d["train"], dict) and isinstance(d["data"]["augment"], dict)
    assert isinstance(d["stages"], list)


@pytest.mark.parametrize("overrides, name", [
    ([], "fashion-mnist-classifier"),
    (["model=resnet20"], "fashion-mnist-classifier"),
    (["data=digits"], "digits-classifier"),
    (["data=cifar10"], "cifar10-classifier"),
    (["registry.name=my-model"], "my-model"),
    (["data=digits", "registry.name=my-model"], "my-model"),
])
def test_registered_model_name(overrides, name):
    assert load_config("quickstart", overrides).registered_model_name == name


def test_registered_model_name_shared_across_pipelines():
    assert load_config("train").registered_model_name == load_config("quickstart").registered_model_name


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_dump_round_trips(pipeline):
    cfg = load_config(pipeline)
    assert yaml.safe_load(dump(cfg)) == cfg.to_dict()


def test_dump_round_trips_with_overrides():
    cfg = load_config("quickstart", ["train.epochs=3", "train.lr=1e-3", "registry.name=x",
                                     "data.path=/tmp/d", "stages=[ingest,preprocess]",
                                     "train.optimizer=adam", "cluster.use_gpu=yes"])
    text = dump(cfg)
    assert yaml.safe_load(text) == cfg.to_dict()
    assert build(Config, yaml.safe_load(text), "") == cfg, "a dumped config loads back to the same Config"


def test_dump_is_in_schema_order():
    keys = list(yaml.safe_load(dump(load_config("quickstart"))))
    assert keys == [f.name for f in dataclasses.fields(Config)]


def test_conf_dir_is_beside_the_code():
    assert CONF_DIR == Path(config.__file__).resolve().parents[2] / "conf"
    assert (CONF_DIR / "pipeline" / "quickstart.yaml").is_file()


def test_compare_asha_without_asha_is_refused_naming_the_key():
    message = _error(["tune.compare_asha=true", "tune.asha=false"], pipeline="sweep")
    assert message.startswith("tune.compare_asha") and "tune.asha=true" in message
    assert load_config("sweep", ["tune.compare_asha=true"]).tune.asha


def test_flip_tta_needs_flip_augmentation_and_reaches_the_model_spec():
    message = _error(["model.tta=flip", "data.augment.flip=false"])
    assert "model.tta" in message and "data.augment.flip" in message
    from pipelines.stages.train import model_spec

    cfg = load_config("quickstart", ["model.tta=flip", "data.augment.flip=true"])
    manifest = type("M", (), {"shape": (28, 28, 1), "classes": tuple("abcdefghij")})()
    assert model_spec(cfg, manifest).tta == "flip"
    assert model_spec(load_config("quickstart"), manifest).tta is None  # specs of older packages compare equal
    message = _error(["model.tta=flip_shift", "data.augment.crop_padding=0"])
    assert "model.tta" in message and "data.augment.crop_padding" in message
    assert model_spec(load_config("quickstart", ["model.tta=flip_shift"]), manifest).tta == "flip_shift"
