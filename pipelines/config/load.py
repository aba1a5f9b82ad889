"""Loading: ``conf/pipeline/NAME.yaml`` + its group files + ``key=value`` overrides → a validated
:class:`~pipelines.config.schema.Config`; and back to YAML (``visionray show``) and flat params (MLflow).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from pipelines.config.base import (
    CONF_DIR,
    GROUPS,
    ConfigError,
    _hints,
    available,
    close_match,
    walk_key,
)
from pipelines.config.schema import Config, ModelConfig


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` → ``{"train.lr": 0.1}``; the form MLflow params take."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class _WarnOnDuplicates(yaml.SafeLoader):
    """YAML keeps the last of two equal keys in a mapping without a word: say so, naming the file and line."""

    path = ""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                print(f"visionray: warning: {self.path} sets {key} twice in one mapping (line "
                      f"{key_node.start_mark.line + 1}); the last value is used.", file=sys.stderr)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    loader = type("Loader", (_WarnOnDuplicates,), {"path": str(path)})
    try:
        data = yaml.load(path.read_text(), Loader=loader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values.")
    return data


def _group_file(group: str, name: str, key: str) -> dict[str, Any]:
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{key}={name} is not a known {group} config; "
                          + _suggest(name, available(group), f"{key}={{}}"))
    return _read_yaml(path)


def model_config(name: str, key: str) -> ModelConfig:
    """``conf/model/<name>.yaml`` as a validated ModelConfig; a ConfigError names ``key`` (the setting
    that asked for it: zoo.models, ensemble.models)."""
    return build(ModelConfig, _group_file("model", name, key), "model.")


def _suggest(word: str, choices: Sequence[str], form: str = "{}") -> str:
    """``did you mean X?`` when ``word`` is close to one of ``choices`` (shown in ``form``), else the list."""
    match = close_match(word, choices)
    if match:
        return f"did you mean {form.format(match)}?"
    return f"choose one of: {', '.join(map(str, choices))}."


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split ``key=value`` tokens into group selections and dotted key assignments."""
    groups: dict[str, str] = {}
    keys: dict[str, str] = {}
    for token in overrides:
        key, sep, value = token.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{token}' must look like key=value (for example train.epochs=3).")
        target = groups if key in GROUPS else keys
        if key in target and target[key] != value.strip():  # last wins, as in Hydra, but never silently
            print(f"visionray: warning: {key} is given twice ({target[key]} then {value.strip()}); the last "
                  f"value is used.", file=sys.stderr)
        target[key] = value.strip()
    return groups, keys


def load_config(pipeline: str, overrides: Sequence[str] = ()) -> Config:
    """Compose ``conf/pipeline/<pipeline>.yaml`` with its group files and the overrides."""
    path = CONF_DIR / "pipeline" / f"{pipeline}.yaml"
    if not path.is_file():
        raise ConfigError(f"pipeline '{pipeline}' does not exist; " + _suggest(pipeline, available("pipeline")))
    spec = _read_yaml(path)
    group_sel, dotted = parse_overrides(overrides)
    if "pipeline" in dotted:  # it names the experiment (visionray/<pipeline>): never a silent rename
        raise ConfigError(f"pipeline={dotted['pipeline']} is not an override; the pipeline is the PIPELINE "
                          f"argument (one of: {', '.join(available('pipeline'))}).")
    defaults = dict(spec.pop("defaults", {}) or {})
    unknown = set(defaults) - set(GROUPS)
    if unknown:
        raise ConfigError(f"{path} defaults names unknown group '{sorted(unknown)[0]}'; groups are: "
                          f"{', '.join(GROUPS)}.")
    defaults.update(group_sel)
    tree: dict[str, Any] = {"pipeline": pipeline}
    for group, name in defaults.items():
        tree[group] = _group_file(group, name, group)
    tree = _merge(tree, spec)
    for key, raw in dotted.items():
        tree = _assign(tree, key, raw)
    return build(Config, tree, "")


def _assign(tree: dict[str, Any], key: str, raw: str) -> dict[str, Any]:
    walk_key(Config, key)  # the error names the first part that does not exist
    parts = key.split(".")
    nested: Any = {}
    node = nested
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = _RawString(raw)
    return _merge(tree, nested)


class _RawString(str):
    """A command-line value: still text, converted by the field's type in :func:`build`."""


def build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    """Validate ``data`` against dataclass ``cls``; unknown keys and bad values raise ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}.")
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = prefix.rstrip(".") or "the top level"
            match = close_match(str(key), names)
            guess = f"did you mean {prefix}{match}? " if match else ""
            raise ConfigError(f"unknown key '{prefix}{key}': {guess}{'(' if guess else ''}{where} takes "
                              f"{', '.join(sorted(names))}{')' if guess else ''}.")
    kwargs = {k: _coerce(_hints(cls)[k], v, f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field without a value
        raise ConfigError(f"{prefix or 'config'}: {e}.") from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, _RawString):
            raise ConfigError(f"{key} is a section; set one of its keys, e.g. {key}.<key>=VALUE.")
        return build(tp, value or {}, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, _RawString) and value.lower() in ("null", "none", "~", "")):
            return None
        return _coerce(args[0], value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}={value} is not allowed; "
                              + _suggest(str(value), [str(c) for c in choices], f"{key}={{}}"))
        return str(value)
    if origin in (collections.abc.Mapping, dict):  # tune.space
        if isinstance(value, _RawString):
            try:
                value = yaml.safe_load(value) or {}
            except yaml.YAMLError:
                raise ConfigError(f"{key}={value} must be a YAML mapping, e.g. {{train.lr: {{loguniform: [0.001, 0.1]}}}}.") from None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}.")
        return {str(k): v for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, _RawString):
            value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}.")
        item = typing.get_args(tp)[0]
        if item in (int, float):  # tuple[int, ...] (model.hidden), tuple[float, ...] (charlm.temperatures)
            return tuple(_coerce(item, v, key) for v in value)
        return tuple(str(v) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key}={value} is not allowed; use true or false.")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value} must be a whole number.")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            raise ConfigError(f"{key}={value} must be a whole number.") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value} must be a number.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value} must be a number.") from None
        if not math.isfinite(number):  # inf and nan compare False with every bound a check sets
            raise ConfigError(f"{key}={value} must be a finite number.")
        return number
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be text, got {value!r}.")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp!r}.")  # a bug in the schema, not user input


def dump(cfg: Config) -> str:
    """The resolved config as YAML, in schema order (what `visionray show` prints)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


def describe_pipelines() -> list[tuple[str, str]]:
    return [(name, str(_read_yaml(CONF_DIR / "pipeline" / f"{name}.yaml").get("description", "")))
            for name in available("pipeline")]
