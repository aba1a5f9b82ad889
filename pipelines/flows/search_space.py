"""A sweep's search space (``tune.space`` in conf) and what a sampled point means as a config.

A space maps dotted config keys, or a config group, to one distribution::

    tune:
      space:
        train.lr: {loguniform: [0.003, 0.5]}        # §6.2: learning rates on a log scale
        model: {choice: [convnet, resnet20]}         # a group: selects conf/model/<name>.yaml
        model.dropout: {uniform: [0.0, 0.5]}

A trial's config is the pipeline's config with its sampled values applied as overrides (groups first,
then dotted keys), through the same validation as the command line, so any key can be searched.
:func:`refine` shrinks a space around the best points (coarse to fine); :func:`train_overrides` turns
a winning config into the ``visionray run train key=value ...`` command that retrains it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from pipelines import config as config_module
from pipelines.config import GROUPS, Config, ConfigError, build, flatten, load_config

#: Sections of a config a ``train`` run reads; the rest (tune, ensemble, ...) is the sweep's own.
TRAIN_SECTIONS = ("seed", "data", "model", "train", "cluster")
#: Keys set by the sweep for its own concurrency, not part of what a trial found.
SWEEP_ONLY_KEYS = ("cluster.torch_threads",)


def tune_domains(space: Mapping[str, Any]) -> dict[str, Any]:
    """``tune.space`` as Ray Tune sampling domains, one per key (keys keep their dots)."""
    from ray import tune

    make = {"loguniform": lambda a: tune.loguniform(a[0], a[1]),
            "uniform": lambda a: tune.uniform(a[0], a[1]),
            "randint": lambda a: tune.randint(int(a[0]), int(a[1])),
            "choice": lambda a: tune.choice(list(a))}
    out = {}
    for key, spec in space.items():
        (kind, args), = spec.items()
        out[key] = make[kind](args)
    return out


def apply(cfg: Config, values: Mapping[str, Any]) -> Config:
    """``cfg`` with sampled ``values`` applied: group selections first, then dotted keys."""
    tree = cfg.to_dict()
    for key, value in values.items():
        if key in GROUPS:
            tree[key] = config_module._group_file(key, str(value), key)
    for key, value in values.items():
        if key not in GROUPS:
            tree = config_module._assign(tree, key, _text(value))
    return build(Config, tree, "")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def refine(space: Mapping[str, Any], best: Sequence[Mapping[str, Any]], margin: float = 0.25) -> dict[str, Any]:
    """Coarse to fine (§6.2): each range shrunk to the span of the ``best`` points, widened by
    ``margin`` of that span on each side (log scale for loguniform) and kept inside the original;
    a choice keeps only the values the best points took."""
    out: dict[str, Any] = {}
    for key, spec in space.items():
        (kind, args), = spec.items()
        seen = [p[key] for p in best if key in p]
        if not seen:
            out[key] = spec
            continue
        if kind == "choice":
            kept = [a for a in args if a in seen]
            out[key] = {"choice": kept or list(args)}
            continue
        lo, hi = float(args[0]), float(args[1])
        log = kind == "loguniform"
        f = (lambda v: math.log(v)) if log else (lambda v: v)
        g = (lambda v: math.exp(v)) if log else (lambda v: v)
        a, b = f(min(seen)), f(max(seen))
        pad = max(b - a, 0.1 * (f(hi) - f(lo))) * margin  # a single point still gets a small range
        new_lo, new_hi = max(f(lo), a - pad), min(f(hi), b + pad)
        if kind == "randint":
            new_lo, new_hi = math.floor(g(new_lo)), max(math.ceil(g(new_hi)), math.floor(g(new_lo)) + 1)
            out[key] = {kind: [int(new_lo), int(min(new_hi, hi))]}
        else:
            out[key] = {kind: [g(new_lo), g(new_hi)]}
    return out


def train_overrides(winner: Config) -> list[str]:
    """The fewest ``key=value`` tokens that make ``visionray run train`` train ``winner``'s recipe:
    for each group, the file that leaves the fewest differences among those of the winner's own kind (its
    ``model.name``, ``data.name``: a convnet's recipe starts from a convnet file, not from whichever other
    model's file happens to differ in fewer keys), then every dotted key that differs."""
    want = _train_view(winner)
    chosen: list[str] = []
    for group in ("data", "model", "train", "cluster"):
        best: tuple[bool, int, str] | None = None  # (another kind, differences, file), smallest wins
        for name in config_module.available(group):
            try:
                trial = _train_view(load_config("train", [*chosen, f"{group}={name}"]))
            except ConfigError:
                continue
            diff = sum(1 for k, v in trial.items() if k.startswith(f"{group}.") and want.get(k) != v)
            other_kind = trial.get(f"{group}.name", None) != want.get(f"{group}.name", None)
            best = min(best, (other_kind, diff, name)) if best else (other_kind, diff, name)
        if best is not None:
            chosen.append(f"{group}={best[2]}")
    base = _train_view(load_config("train", chosen))
    keys = [f"{k}={_text(v)}" for k, v in want.items() if base.get(k) != v]
    defaults = config_module._read_yaml(config_module.CONF_DIR / "pipeline" / "train.yaml").get("defaults", {})
    return [t for t in chosen if defaults.get(t.split("=")[0]) != t.split("=")[1]] + keys


def _train_view(cfg: Config) -> dict[str, Any]:
    flat = flatten({k: v for k, v in cfg.to_dict().items() if k in TRAIN_SECTIONS})
    return {k: v for k, v in flat.items() if k not in SWEEP_ONLY_KEYS}


def command(tokens: Sequence[str]) -> str:
    import shlex

    return "visionray run train " + " ".join(shlex.quote(t) for t in tokens)
