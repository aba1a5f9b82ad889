"""What every config module shares: where ``conf/`` is, its groups, the error type and field helpers."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import typing
from dataclasses import field
from pathlib import Path
from typing import Any


def _find_conf() -> Path:
    """``conf/`` beside the code; on a worker of a remote Ray cluster, the copy the driver shipped
    with the packages (``services.runtime.ray_session``: an importable folder named ``conf``)."""
    beside = Path(__file__).resolve().parents[2] / "conf"
    if beside.is_dir():
        return beside
    shipped = importlib.util.find_spec("conf")
    if shipped is not None and shipped.submodule_search_locations:
        return Path(next(iter(shipped.submodule_search_locations)))
    return beside


CONF_DIR = _find_conf()
#: Config groups: a bare ``GROUP=NAME`` override selects ``conf/GROUP/NAME.yaml``.
GROUPS = ("data", "model", "train", "cluster")


class ConfigError(ValueError):
    """A config key or value the user got wrong; the message is one sentence naming the key."""


def _doc(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if default is dataclasses.MISSING and "default_factory" not in kw:
        return field(metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text}, **kw)


def _check(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {what}.")


def close_match(word: str, choices: typing.Iterable[str]) -> str | None:
    """The choice ``word`` most likely misspells (difflib's ratio of at least 0.6), or None. Among equally
    close choices the one sharing the longest start wins (resnet21: resnet20, not resnet32)."""
    found = difflib.get_close_matches(word, list(choices), n=5)
    if not found:
        return None
    ratio = {c: difflib.SequenceMatcher(None, word, c).ratio() for c in found}
    return max(found, key=lambda c: (ratio[c], len(os.path.commonprefix([word, c]))))


def available(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def walk_key(root: type, key: str) -> None:
    """Check that the dotted ``key`` names a value of the dataclass ``root``'s schema; the ConfigError
    names the first part of the key that does not exist."""
    parts = key.split(".")
    cls: Any = root
    for i, part in enumerate(parts):
        names = {f.name: f for f in dataclasses.fields(cls)}
        if part not in names:
            where = ".".join(parts[:i]) or "the top level"
            match = close_match(part, names)
            guess = f"did you mean {'.'.join([*parts[:i], match, *parts[i + 1:]])}? " if match else ""
            raise ConfigError(f"unknown key '{key}': {guess}{'(' if guess else ''}{where} takes "
                              f"{', '.join(names)}{')' if guess else ''}.")
        ftype = _hints(cls)[part]
        if i < len(parts) - 1:
            if not (isinstance(ftype, type) and dataclasses.is_dataclass(ftype)):
                raise ConfigError(f"unknown key '{key}': {'.'.join(parts[:i + 1])} is a value, not a section.")
            cls = ftype
