"""pipelines.services.runtime: process clean-up (no Ray) and the code a driver ships to a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest


def test_a_failed_start_kills_only_the_processes_it_started():
    from pipelines.services.runtime import _kill_new_children

    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        before = {c.pid for c in psutil.Process().children(recursive=True)}
        newer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        _kill_new_children(before)
        newer.wait(timeout=10)
        assert not psutil.pid_exists(newer.pid)  # killed (and reaped)
        assert older.poll() is None  # left alone
    finally:
        older.kill()
        older.wait()


def test_ray_settings_reach_local_and_remote_workers_and_yield_to_the_user(monkeypatch):
    from pipelines.entry import jobs
    from pipelines.services import runtime

    for key in {**runtime.RAY_ENV, **runtime.LOCAL_RAY_ENV}:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_DATA_LOG_LEVEL", "INFO")  # the user's own choice wins
    expected = {**runtime.RAY_ENV, "RAY_DATA_LOG_LEVEL": "INFO"}
    assert runtime.ray_env() == expected
    assert all(os.environ[k] == v for k, v in expected.items())  # a local Ray inherits them
    assert runtime.shipped_code()["env_vars"] == expected  # a driver on RAY_ADDRESS
    env = jobs.runtime_env("http://127.0.0.1:5000")["env_vars"]  # a submitted job
    assert {k: env[k] for k in expected} == expected
    assert float(expected["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]) < 2.0  # Ray's default costs ~4 s per fit
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in env  # a cluster keeps watching for preemption
    assert runtime.ray_env(local=True)["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"


DRIVER = """
import json, ray
from pipelines.config import load_config
from pipelines.services.runtime import ray_session

with ray_session(load_config("quickstart").cluster):  # RAY_ADDRESS is set: the code is shipped
    @ray.remote
    def rebuild():
        import pipelines
        from pipelines.config import CONF_DIR, load_config
        return pipelines.__file__, str(CONF_DIR), len(load_config("sweep").zoo.models)

    print("RESULT " + json.dumps(ray.get(rebuild.remote(), timeout=300)))
"""


@pytest.mark.slow
def test_code_shipped_to_a_remote_cluster_carries_conf(session_ray_address, tmp_path):
    """A driver on RAY_ADDRESS ships components, pipelines and conf/: a worker that imports the shipped
    packages (not this checkout) still finds conf/ and rebuilds a pipeline's config from it."""
    import json
    import os

    env = {**os.environ, "RAY_ADDRESS": session_ray_address}
    done = subprocess.run([sys.executable, "-c", DRIVER], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    where, conf, members = json.loads(lines[-1][len("RESULT "):])
    repo = Path(__file__).resolve().parents[2]
    assert not where.startswith(str(repo)), where  # the shipped copy, as on another machine
    assert not conf.startswith(str(repo)) and Path(conf, "pipeline", "sweep.yaml").is_file(), conf
    assert members >= 1


@pytest.mark.slow
def test_the_embedded_ray_listens_on_loopback_only(ray_local):
    """Every TCP port the local Ray's processes (GCS, raylet, agents, workers) listen on is on 127.0.0.1,
    none on all interfaces or the machine's outward address; a second driver still joins it by address."""
    import ipaddress

    import ray

    @ray.remote
    def pid() -> int:
        return os.getpid()

    worker = ray.get(pid.remote())  # at least one worker process is up and listening
    ray_processes = {p.pid for p in psutil.Process().children(recursive=True)}
    assert worker in ray_processes
    listening = {(psutil.Process(c.pid).name(), c.laddr.ip) for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in ray_processes}
    names = {name for name, _ in listening}
    assert {"gcs_server", "raylet"} <= names, names
    wide = {(name, ip) for name, ip in listening
            if not ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback}
    assert not wide, wide
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")


def test_the_embedded_rays_workers_run_at_the_drivers_priority(ray_local):
    """Ray starts workers at nice 15 (for a shared cluster node); on one machine they are the user's job
    and run at the driver's priority, as torch.distributed.run's processes would."""
    import ray

    @ray.remote
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote()) == os.nice(0)
