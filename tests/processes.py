"""Helpers for tests that start real processes (Ray nodes, MLflow servers, the CLI)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

#: This venv's bin: a subprocess's (or a Ray job's) ``python`` and ``ray`` must be the ones under test.
BIN = Path(sys.executable).parent


def clean_env(scrub: Iterable[str], **extra: str) -> dict[str, str]:
    """This process's environment without ``scrub``, this venv first on PATH, plus ``extra``. Never with
    the embedded runtime's "one node only" switch, which an earlier test's local Ray set in this process:
    a user's shell starting a cluster node does not have it, and a joining node refuses to start with it."""
    drop = set(scrub) | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
