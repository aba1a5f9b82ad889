"""A warm local Ray that later runs attach to, so that they skip Ray's start.

    visionray up            # starts a local Ray head (loopback only, token auth) and records it
    visionray run quickstart  # attaches to it: no Ray start, one line says so
    visionray down          # stops exactly the processes of that head (never `ray stop`, which stops every Ray)

The head is ``ray start --head`` with the embedded runtime's settings (``runtime.ray_env(local=True)``: its
node address is loopback, so every server listens on 127.0.0.1; Ray turns token authentication on for it)
and its own temporary directory, whose path is in the command line of every process of that head: that is
how ``down`` finds them, and how :func:`current` tells a live head from a stale record. The record is
``warm-ray.json`` in ``$VISIONRAY_STATE_DIR`` (default ``~/.cache/visionray``). A run given an address
(``RAY_ADDRESS``, ``cluster.address``) never attaches to the warm head.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STATE_ENV = "VISIONRAY_STATE_DIR"


class WarmRuntimeError(RuntimeError):
    """The warm runtime could not be started; the message says why."""


def state_file() -> Path:
    return Path(os.environ.get(STATE_ENV) or Path.home() / ".cache" / "visionray") / "warm-ray.json"


def processes(temp_dir: str) -> list[Any]:
    """Every process of the head that owns ``temp_dir``: those naming it on their command line (GCS, raylet,
    dashboard, agents) and all their descendants (workers)."""
    import psutil

    found: dict[int, Any] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in arg for arg in p.info["cmdline"] or ()):
                found[p.pid] = p
                found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _alive(record: dict[str, Any]) -> bool:
    import psutil

    for p in processes(record["temp_dir"]):
        try:
            if p.name() == "gcs_server":
                return True
        except psutil.Error:
            continue
    return False


def current() -> dict[str, Any] | None:
    """The warm head's record (``address``, ``dashboard``, ``temp_dir``, ``num_cpus``, ``started``) when it
    is running; ``None`` when there is none (a record whose head died is removed)."""
    path = state_file()
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if _alive(record):
        return record
    path.unlink(missing_ok=True)
    return None


def up(ray_env: dict[str, str], ports: tuple[int, int], num_cpus: int | None = None,
       timeout_s: float = 300) -> tuple[dict[str, Any], bool]:
    """Start the warm head (or find the running one): its record, and whether this call started it.
    ``ray_env``: the embedded runtime's settings; ``ports``: free ones for its GCS and its dashboard
    (``runtime.start_warm`` gives both)."""
    running = current()
    if running:
        return running, False
    temp_dir = tempfile.mkdtemp(prefix="vr-warm-", dir="/tmp")  # short: Ray's socket paths live under it
    port, dashboard = ports
    env = {**os.environ, **ray_env, "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}"}
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={temp_dir}",
               "--disable-usage-stats", *([f"--num-cpus={num_cpus}"] if num_cpus else [])]
    started = time.time()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        failed = done.returncode != 0
        why = (done.stderr or done.stdout).strip().splitlines()[-5:]
    except subprocess.TimeoutExpired:
        failed, why = True, [f"ray start did not finish in {timeout_s:.0f} s"]
    if failed:
        _stop(temp_dir)
        raise WarmRuntimeError("the warm local Ray did not start: " + " / ".join(why))
    record = {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dashboard}", "temp_dir": temp_dir,
              "num_cpus": num_cpus, "started": started, "start_seconds": time.time() - started}
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    return record, True


def down() -> int:
    """Stop the warm head's processes and forget it; how many processes were stopped (0: none was up)."""
    path = state_file()
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    stopped = _stop(record["temp_dir"])
    path.unlink(missing_ok=True)
    return stopped


def _stop(temp_dir: str) -> int:
    import psutil

    victims = processes(temp_dir)
    for p in victims:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(victims, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return len(victims)
