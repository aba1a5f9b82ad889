"""``visionray submit`` / ``visionray jobs`` against a REAL Ray head and a REAL MLflow server.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_jobs.py      # ~3 min on 2 cores

The module starts ``ray start --head --block`` on 127.0.0.1 (private temp dir, its own ports, token
authentication on with a token of its own) and ``mlflow server`` on loopback (SQLite backend,
``--serve-artifacts``), and stops both by process id at the end; never ``ray stop``, which would
stop every Ray on the machine. The CLI runs in subprocesses, as a user runs it.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from pipelines.services.runtime import free_port, free_ports
from tests import processes

pytestmark = pytest.mark.slow

BIN = processes.BIN
SHRUNK = ["quickstart", "data=digits", "train.epochs=1", "train.batch_size=64", "tracking.system_metrics=false"]
_SCRUB = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE",
          "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def clean_env(**extra: str) -> dict[str, str]:
    return processes.clean_env(_SCRUB, **extra)


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:  # up, and asking for the token
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} never answered:\n{log.read_text()[-3000:]}")


def stop_tree(proc: subprocess.Popen) -> None:
    """SIGTERM the process (``ray start --block`` tears its node down), then SIGKILL what is left, by pid."""
    try:
        tree = [proc, *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    for p in tree:
        try:
            p.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass


@dataclass(frozen=True)
class Cluster:
    dashboard: str  # the Jobs API URL
    token: str
    mlflow: str  # the tracking server URI
    root: Path
    client: str  # the Ray Client address, ray://127.0.0.1:PORT

    def cli(self, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
        base = {"RAY_AUTH_TOKEN": self.token, "MLFLOW_TRACKING_URI": self.mlflow, **env}
        base = {k: v for k, v in base.items() if v is not None}
        return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=self.root, env=clean_env(**base),
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="vrj-", dir="/tmp"))  # short: Ray's Unix sockets live below it
    token = secrets.token_hex(32)
    dash, mport, cport, gcs, agent, agent_grpc, env_agent, metrics = free_ports(8)
    ray_log, mlflow_log = root / "ray.log", root / "mlflow.log"
    ray_cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               f"--port={gcs}", "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={dash}", f"--ray-client-server-port={cport}",
               f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
               f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
               f"--temp-dir={root / 'ray'}", "--disable-usage-stats"]
    mlflow_cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                  "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
                  "--host", "127.0.0.1", "--port", str(mport), "--workers", "1"]
    procs = []
    try:
        with open(ray_log, "w") as rl, open(mlflow_log, "w") as ml:
            procs.append(subprocess.Popen(ray_cmd, env=clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token),
                                          stdout=rl, stderr=subprocess.STDOUT, start_new_session=True))
            procs.append(subprocess.Popen(mlflow_cmd, env=clean_env(), cwd=root, stdout=ml,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        wait_http(f"http://127.0.0.1:{mport}/health", procs[1], mlflow_log)
        wait_http(f"http://127.0.0.1:{dash}/api/version", procs[0], ray_log)
        work = root / "work"
        work.mkdir()
        yield Cluster(f"http://127.0.0.1:{dash}", token, f"http://127.0.0.1:{mport}", work, f"ray://127.0.0.1:{cport}")
    finally:
        for p in procs:
            stop_tree(p)
        shutil.rmtree(root, ignore_errors=True)


def test_submit_follow_trains_and_registers_on_the_server(cluster):
    started = time.perf_counter()
    done = cluster.cli("submit", "--address", cluster.dashboard, "--follow", *SHRUNK)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    job_id = done.stdout.splitlines()[0].strip()
    assert job_id.startswith("quickstart-")
    assert "quickstart: done in" in done.stdout  # the job's own output, streamed
    print(f"submit --follow took {elapsed:.1f} s")

    from mlflow import MlflowClient

    client = MlflowClient(cluster.mlflow, registry_uri=cluster.mlflow)
    exp = client.get_experiment_by_name("visionray/quickstart")
    parents = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["git_sha"] != "unknown"  # sent with the job: .git stays behind
    assert parents[0].data.metrics["test/accuracy"] > 0.5
    versions = client.search_model_versions("name='digits-classifier'")
    assert [v.run_id for v in versions], "no version of digits-classifier on the server"
    assert client.list_artifacts(parents[0].info.run_id)  # artifacts went through the server's proxy

    listed = cluster.cli("jobs", "list", "--address", cluster.dashboard)
    assert listed.returncode == 0 and job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    status = cluster.cli("jobs", "status", job_id, "--address", cluster.dashboard)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    logs = cluster.cli("jobs", "logs", job_id, "--address", cluster.dashboard)
    assert logs.returncode == 0 and "stage register" in logs.stdout


def test_jobs_stop_stops_a_submitted_job(cluster):
    sent = cluster.cli("submit", "--address", cluster.dashboard, *SHRUNK, "train.epochs=20")
    assert sent.returncode == 0, sent.stderr
    job_id = sent.stdout.strip()
    stopped = cluster.cli("jobs", "stop", job_id, "--address", cluster.dashboard)
    assert stopped.returncode == 0 and job_id in stopped.stdout, stopped.stderr
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = cluster.cli("jobs", "status", job_id, "--address", cluster.dashboard)
        if "STOPPED" in status.stdout:
            break
        time.sleep(2)
    assert "STOPPED" in status.stdout, status.stdout + status.stderr
    followed = cluster.cli("jobs", "logs", "--follow", job_id, "--address", cluster.dashboard)
    assert followed.returncode == 1  # a stopped job is not a success


def test_an_unreachable_address_is_named(cluster):
    wrong = f"http://127.0.0.1:{free_port()}"
    done = cluster.cli("submit", "--address", wrong, *SHRUNK, timeout=120)
    assert done.returncode == 1  # a connection failure, not bad usage
    assert wrong in done.stderr and "cannot reach the Ray cluster" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_missing_token_is_refused_with_a_clear_sentence(cluster, tmp_path):
    # No RAY_AUTH_TOKEN and a HOME without ~/.ray/auth_token: nothing to send.
    done = cluster.cli("submit", "--address", cluster.dashboard, *SHRUNK, RAY_AUTH_TOKEN=None,
                       HOME=str(tmp_path), timeout=120)
    assert done.returncode == 1, done.stderr  # the cluster refused the connection
    assert "requires an authentication token" in done.stderr and "RAY_AUTH_TOKEN" in done.stderr


def test_a_wrong_token_is_refused_with_a_clear_sentence(cluster):
    done = cluster.cli("jobs", "list", "--address", cluster.dashboard, RAY_AUTH_TOKEN="not-the-token", timeout=120)
    assert done.returncode == 1
    assert "rejected the authentication token" in done.stderr and cluster.dashboard in done.stderr


def test_a_local_tracking_store_is_refused_for_a_cluster(cluster):
    local = f"sqlite:///{cluster.root}/mlruns/mlflow.db"
    done = cluster.cli("submit", "--address", cluster.dashboard, *SHRUNK, MLFLOW_TRACKING_URI=local, timeout=120)
    assert done.returncode == 2
    assert local in done.stderr and "MLflow server" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unknown_job_is_named(cluster):
    done = cluster.cli("jobs", "status", "no-such-job", "--address", cluster.dashboard, timeout=120)
    assert done.returncode == 2
    assert "no job no-such-job" in done.stderr


def test_a_pipeline_runs_through_ray_client(cluster):
    """RAY_ADDRESS=ray://head:10001 (the README's cluster mode): the driver connects as a Ray Client, ships
    the code, and the flow runs as a task on the head; one pipeline run, FINISHED, in the tracking store."""
    from mlflow import MlflowClient

    client = MlflowClient(cluster.mlflow)

    def parents() -> list:
        exp = client.get_experiment_by_name("visionray/quickstart")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]

    before = {r.info.run_id for r in parents()}
    done = cluster.cli("run", *SHRUNK, RAY_ADDRESS=cluster.client)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    new = [r for r in parents() if r.info.run_id not in before]
    assert len(new) == 1 and new[0].info.status == "FINISHED"
    assert new[0].data.metrics["test/accuracy"] > 0.5
    assert "quickstart: done in" in done.stderr
