"""`visionray up` / `visionray down`: a warm local Ray that a run attaches to, stopped by its own process ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from pipelines.services import warm


def test_no_record_or_a_dead_heads_record_means_no_warm_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv(warm.STATE_ENV, str(tmp_path))
    assert warm.current() is None and warm.down() == 0
    warm.state_file().write_text(json.dumps({"address": "127.0.0.1:1", "dashboard": "http://127.0.0.1:2",
                                             "temp_dir": str(tmp_path / "vr-warm-gone")}))
    assert warm.current() is None
    assert not warm.state_file().exists()  # the stale record is removed


def test_processes_are_found_by_their_head_s_directory_with_their_children(tmp_path):
    marker = str(tmp_path / "vr-warm-test")
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                               "time.sleep(60)", marker])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for _ in range(50):
            if psutil.Process(parent.pid).children():
                break
            psutil.wait_procs([], timeout=0.1)
        found = {p.pid for p in warm.processes(marker)}
        child = psutil.Process(parent.pid).children()[0].pid
        assert found == {parent.pid, child} and other.pid not in found
        assert warm._stop(marker) == 2
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        assert other.poll() is None  # another process is left alone
    finally:
        for p in (parent, other):
            p.kill()
            p.wait()


def test_attached_to_a_warm_head_the_samplers_count_its_processes(tmp_path):
    from pipelines.services import runtime

    marker = str(tmp_path / "vr-warm-test")
    # an orphan, as a warm head's processes are to a run: started by `visionray up`, not by this process
    pid = int(subprocess.run(["sh", "-c", f'"{sys.executable}" -c "import time; time.sleep(60)" {marker} '
                              '>/dev/null 2>&1 & echo $!'], capture_output=True, text=True, check=True).stdout)
    try:
        assert pid not in {p.pid for p in runtime._process_tree()}
        runtime._WARM_TEMP_DIR[:] = [marker]
        assert pid in {p.pid for p in runtime._process_tree()}
        watcher = runtime.MemoryWatcher()
        assert watcher.sample() >= psutil.Process(pid).memory_full_info().pss
    finally:
        runtime._WARM_TEMP_DIR.clear()
        psutil.Process(pid).kill()


def _cli(*args: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_a_run_attaches_to_the_warm_runtime_and_down_stops_only_its_processes(tmp_path):
    from tests.conftest import SHRINK

    env = {**os.environ, warm.STATE_ENV: str(tmp_path / "state")}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):  # the default store, ./mlruns of the run's directory
        env.pop(key, None)
    elsewhere = tmp_path / "elsewhere"  # `up` in one directory, the run in another: the run's files are its own
    elsewhere.mkdir()
    up = _cli("up", "--num-cpus", "2", env=env, cwd=elsewhere)
    assert up.returncode == 0, up.stderr[-2000:]
    record = json.loads((tmp_path / "state" / "warm-ray.json").read_text())
    try:
        head = {p.pid for p in warm.processes(record["temp_dir"])}
        assert head, "the head's processes carry its directory"
        again = _cli("up", env=env, cwd=tmp_path)  # a second `up` finds it
        assert again.returncode == 0 and "already running" in again.stdout
        run = _cli("run", "quickstart", *SHRINK, "registry.enabled=false", "cluster.num_cpus=1", env=env,
                   cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "cluster.num_cpus=1 is not applied to the warm Ray (2 CPUs)" in run.stdout + run.stderr
        assert (tmp_path / "mlruns").is_dir() and not any(elsewhere.iterdir())
        assert f"the warm local Ray at {record['address']}" in run.stdout + run.stderr
        assert all(psutil.pid_exists(pid) for pid in head)  # the run left the head up for the next one
    finally:
        down = _cli("down", env=env, cwd=tmp_path)
    assert down.returncode == 0 and "stopped the warm local Ray" in down.stdout, down.stdout + down.stderr
    psutil.wait_procs([psutil.Process(pid) for pid in head if psutil.pid_exists(pid)], timeout=10)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in head)
    assert not (tmp_path / "state" / "warm-ray.json").exists()
    assert "no warm local Ray" in _cli("down", env=env, cwd=tmp_path).stdout
