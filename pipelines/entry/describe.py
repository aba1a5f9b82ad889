"""What `visionray show` and `visionray models` print: the config a pipeline will use, its keys' help,
and the registered models.

    visionray show quickstart            # effective_yaml: the sections quickstart uses, resolved values
    visionray show quickstart --help     # fields_text: each of their keys, its type, default and help
    visionray models                     # models_text: each registered model, its versions and aliases
"""

from __future__ import annotations

import shutil
import textwrap
import time
from typing import Any

import yaml

from pipelines.config import Config, flatten, usage


def effective_yaml(cfg: Config) -> str:
    """The sections ``cfg``'s pipeline uses, with the values it will use, as YAML in schema order."""
    return yaml.safe_dump(_plain(usage.effective(cfg)), sort_keys=False, default_flow_style=False,
                          allow_unicode=True, width=1000)  # a description stays on its line


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def fields_text(cfg: Config) -> str:
    """Each key of the sections ``cfg``'s pipeline uses: ``key=TYPE``, its help, its default and, where
    this pipeline (with its overrides) uses another value, that value."""
    used = flatten(usage.effective(cfg))
    width = min(shutil.get_terminal_size((100, 24)).columns, 120)
    lines = [f"{cfg.pipeline}: the keys it uses (set any with key=value; `visionray show {cfg.pipeline}` prints "
             f"the values; config groups: data=, model=, train=, cluster=)"]
    section = ""
    for f in usage.fields(cfg):
        if f.key.split(".")[0] != section:
            section = f.key.split(".")[0]
            lines += ["", f"{section}:"]
        default = _shown(f.default)
        note = f"default: {default}"
        if f.key in used and _shown(used[f.key]) != default:
            note += f"; {cfg.pipeline}: {_shown(used[f.key])}"
        elif f.key not in used:
            note += f"; not used by {cfg.pipeline} as configured"
        lines += textwrap.wrap(f"{f.key}={_placeholder(f.type)}", width, initial_indent="  ",
                               subsequent_indent="      ")
        lines += textwrap.wrap(f"{f.help} ({note})", width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines) + "\n"


def _placeholder(type_name: str) -> str:
    if type_name.startswith("one of: "):
        return type_name[len("one of: "):]
    nullable = type_name.endswith(" or null")
    base = type_name.removesuffix(" or null")
    shown = {"int": "INT", "float": "NUMBER", "bool": "true|false", "text": "TEXT", "mapping": "{YAML}"}.get(
        base, f"[{base.removeprefix('list of ').upper()},...]" if base.startswith("list of ") else base.upper())
    return f"{shown}|null" if nullable else shown


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, dict):
        return yaml.safe_dump(value, default_flow_style=True).strip() if value else "{}"
    return str(value)


def models_text(listing: list[dict[str, Any]]) -> str:
    """One block per registered model: a line per version, newest first, with its aliases, its test
    metrics (the version's run, else the gate's primary metric from its tags), when it was registered
    and the run it came from."""
    from pipelines.services import names

    lines: list[str] = []
    for model in listing:
        count = len(model["versions"])
        lines.append(f"{model['name']}  ({count} version{'s' if count != 1 else ''})")
        if model["description"]:
            lines.append(f"  {model['description'].splitlines()[0]}")
        for v in model["versions"]:
            metrics = dict(v["metrics"])
            tags = v["tags"]
            if not metrics and tags.get(names.PRIMARY_METRIC_TAG) and tags.get(names.PRIMARY_VALUE_TAG):
                metrics[tags[names.PRIMARY_METRIC_TAG]] = tags[names.PRIMARY_VALUE_TAG]
            if not metrics and tags.get(names.TEST_ACCURACY_TAG):
                metrics[names.TEST_ACCURACY] = tags[names.TEST_ACCURACY_TAG]
            shown = "  ".join(f"{k} {_number(val)}" for k, val in metrics.items()) or "no test metrics"
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(v["created_ms"] / 1000)) if v["created_ms"] else ""
            aliases = ",".join(v["aliases"]) or "-"
            run = f"run {v['run_id'][:12]}" if v["run_id"] else ""
            lines.append(f"  v{v['version']:<3} {aliases:<20} {shown}   {when}   {run}".rstrip())
        lines.append("")
    return "\n".join(lines)


def _number(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{int(number):,}" if number.is_integer() and abs(number) >= 1000 else f"{number:.4g}"  # counts
