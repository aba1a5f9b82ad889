"""``check_shared_storage`` against a REAL 2-node Ray cluster whose second node cannot see the "shared" path.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_storage_check.py

Both nodes run on this machine: a head (``ray start --head --block`` on 127.0.0.1, which Ray reports by the
machine's own address; private temp dir, its own ports, token authentication with a token of its own) and
a worker node (node IP 127.0.0.2, so the error names it) started inside a private mount namespace
(``unshare --mount``) where a tmpfs is mounted over the "shared" directory: the driver's marker file there
is invisible to that node, as a local disk on another machine would be. A directory outside the tmpfs is
seen by both and must pass. Needs root (mount namespaces); skipped otherwise. Both nodes are stopped by
process group; never ``ray stop``.

The driver runs in a subprocess: the session's local Ray (``ray_local``) may already own this process.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from pipelines.services.runtime import free_ports
from tests import processes

pytestmark = pytest.mark.slow

BIN = processes.BIN
ROOT = Path(__file__).resolve().parents[2]
_SCRUB = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")
WORKER_IP = "127.0.0.2"  # any 127/8 address is loopback on Linux

DRIVER = r"""
import json, sys, time
import ray
from pipelines.services import runtime

address, hidden, visible = sys.argv[1:4]
runtime._use_given_token()  # RAY_AUTH_TOKEN given: token mode, as ray_session does
ray.init(address=address, _node_ip_address="127.0.0.1", logging_level="WARNING")
deadline = time.monotonic() + 180
while len([n for n in ray.nodes() if n.get("Alive")]) < 2:
    assert time.monotonic() < deadline, f"the worker node never joined: {ray.nodes()}"
    time.sleep(1)
out = {"nodes": sorted(n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive"))}
for name, path in (("hidden", hidden), ("visible", visible)):
    try:
        runtime.check_shared_storage({"cluster.storage_path": path}, timeout_s=180)
        out[name] = None
    except runtime.StorageNotShared as e:
        out[name] = str(e)
print("RESULT " + json.dumps(out), flush=True)
"""


def clean_env(**extra: str) -> dict[str, str]:
    return processes.clean_env(_SCRUB, **extra)


def node_ports(ports: list[int]) -> list[str]:
    """Every port a node opens, its own (six of ``ports``, all distinct): two nodes share this machine."""
    flags = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"]
    return [*(f"{flag}={port}" for flag, port in zip(flags, ports, strict=True)),
            "--min-worker-port=0", "--max-worker-port=0"]  # 0: random ports, no clash between the nodes


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the node's process group (``ray start --block`` tears its node down), then SIGKILL what is left."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    with_group = proc.poll() is None
    if with_group:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in tree:  # children that left the group
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=10)


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ray start exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"port {port} never opened:\n{log.read_text()[-3000:]}")


def can_hide_a_directory() -> str | None:
    """None when this process may mount a tmpfs in a private mount namespace, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    probe = tempfile.mkdtemp(prefix="vrs-probe-", dir="/tmp")
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               'mount -t tmpfs tmpfs "$0"', probe],
                              capture_output=True, text=True, timeout=30, check=False)
        return None if done.returncode == 0 else f"unshare --mount + mount tmpfs refused: {done.stderr.strip()}"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def test_a_node_that_cannot_see_the_storage_path_is_named():
    why = can_hide_a_directory()
    if why:
        pytest.skip(why)
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="vrs-", dir="/tmp"))  # short: Ray's Unix sockets live below it
    hidden, visible = root / "shared", root / "visible"
    hidden.mkdir()
    visible.mkdir()
    token = secrets.token_hex(32)
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    gcs, client, *ports = free_ports(14)
    head_cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                "--num-cpus=1", "--include-dashboard=false", f"--ray-client-server-port={client}",
                *node_ports(ports[:6]), f"--temp-dir={root / 'ray'}", "--disable-usage-stats"]
    worker_cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                  'mount -t tmpfs vrs-hidden "$0" && exec "$@"', str(hidden),
                  str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs}", "--block",
                  f"--node-ip-address={WORKER_IP}", "--num-cpus=1", *node_ports(ports[6:]), f"--temp-dir={root / 'ray'}",
                  "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []
    head_log, worker_log = root / "head.log", root / "worker.log"
    try:
        with open(head_log, "w") as hl:
            procs.append(subprocess.Popen(head_cmd, env=env, stdout=hl, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        wait_port(gcs, procs[0], head_log)
        with open(worker_log, "w") as wl:
            procs.append(subprocess.Popen(worker_cmd, env=env, stdout=wl, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        driver = subprocess.run([sys.executable, "-c", DRIVER, f"127.0.0.1:{gcs}", str(hidden), str(visible)],
                                cwd=ROOT, env=clean_env(RAY_AUTH_TOKEN=token), capture_output=True, text=True,
                                timeout=420, check=False)
        lines = [ln for ln in driver.stdout.splitlines() if ln.startswith("RESULT ")]
        assert driver.returncode == 0 and lines, (
            f"driver exited {driver.returncode}:\n{driver.stdout[-3000:]}\n{driver.stderr[-3000:]}\n"
            f"worker log:\n{worker_log.read_text()[-2000:]}")
        out = json.loads(lines[-1].removeprefix("RESULT "))
        # Ray reports the head by the machine's own address even when told 127.0.0.1; the worker keeps its own.
        assert len(out["nodes"]) == 2 and WORKER_IP in out["nodes"], out
        head_ip = next(ip for ip in out["nodes"] if ip != WORKER_IP)
        message = out["hidden"]
        assert message, "a path the worker node cannot see passed the check"
        assert f"cluster.storage_path={hidden}" in message
        assert f"node(s) {WORKER_IP} of this 2-node cluster cannot see {hidden}" in message
        assert head_ip not in message  # the head sees it
        assert out["visible"] is None, out["visible"]
        assert not list(hidden.iterdir()) and not list(visible.iterdir())  # the markers are gone
    finally:
        for p in reversed(procs):
            stop_group(p)
        shutil.rmtree(root, ignore_errors=True)
    print(f"2-node storage check took {time.perf_counter() - started:.1f} s")
