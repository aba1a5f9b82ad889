"""Real processes: a stopped driver resumes its run; a Ray Train worker killed mid-run is replaced.

One chain of CLI drivers in subprocesses that join the session's Ray (as ``RAY_ADDRESS=... visionray run``
joins a cluster): the test watches their output and kills real processes by pid, then checks what survived
in the real MLflow store: one parent run, and a metric history with every epoch exactly once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from mlflow import MlflowClient

from pipelines.services import names

pytestmark = pytest.mark.slow

# Small batches make the digits epochs long enough (~1-3 s each) to be interrupted mid-run.
RUN = ["run", "quickstart", "data=digits", "train.batch_size=16", "train.epochs=6", "cluster.num_workers=2",
       "tracking.system_metrics=false"]


class Cli:
    """``python -m pipelines ...`` in its own process group, with its output collected line by line.

    By default the driver starts its own local Ray (inside its process group: killing the group kills that
    Ray too). Given ``ray_address`` (the ``session_ray_address`` fixture) it joins that running Ray instead,
    as ``RAY_ADDRESS=... visionray run`` does on a cluster, which saves a Ray start-up per driver.
    """

    def __init__(self, args, cwd, ray_address: str | None = None):
        # RAY_API_SERVER_ADDRESS names the session Ray's dashboard: kept only when joining that Ray.
        scrub = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if ray_address is None else ("RAY_ADDRESS",)
        env = {k: v for k, v in os.environ.items() if k not in scrub}
        if ray_address is not None:
            env["RAY_ADDRESS"] = ray_address
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{cwd}/mlruns/mlflow.db"
        self.proc = subprocess.Popen([sys.executable, "-m", "pipelines", *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r}:\n{''.join(self.lines[-40:])}")
            time.sleep(0.2)

    def finish(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()
            self._reader.join(timeout=10)

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _train_workers(root_pid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()) or p.name().startswith("ray::RayTrainWorker"):
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def _runs(cwd):
    client = MlflowClient(f"sqlite:///{cwd}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("visionray/quickstart")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    train = [r for r in runs if r.data.tags.get(names.STAGE_TAG) == "train"]
    return client, parents, train


def _assert_every_epoch_once(client, run_id, epochs):
    for key in (names.TRAIN_LOSS, names.VAL_ACCURACY, names.LR):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(1, epochs + 1)), f"{key}: steps {steps}"


def _stop(cli: Cli, at: str, sig: int) -> None:
    """Wait for ``at`` in the output, then stop the driver: SIGINT to the driver alone (Ctrl-C), or SIGKILL to
    its whole process group at once (a crash)."""
    try:
        cli.wait_for(at)
        if sig == signal.SIGINT:
            cli.proc.send_signal(signal.SIGINT)
        else:
            os.killpg(cli.proc.pid, signal.SIGKILL)
        rc = cli.finish(timeout=120)
    finally:
        cli.kill()
    assert rc != 0


def test_stopped_drivers_and_a_killed_worker_resume_the_same_mlflow_run(tmp_path, session_ray_address):
    """One chain of three drivers, six epochs trained in all: Ctrl-C (the run is marked KILLED); in the resumed
    run, the whole driver process tree killed at once (a crash: the run is left RUNNING); in the second resume,
    a Ray Train worker killed by pid (Ray replaces it and training resumes from the last checkpoint). Each time
    the same MLflow runs continue, and every epoch is logged exactly once.

    The drivers join the session Ray (as ``RAY_ADDRESS=... visionray run`` joins a cluster), whose raylet, and
    so every Ray Train worker, is a child of this test process; a driver that starts its own local Ray is
    covered by test_store_failures."""
    _stop(Cli(RUN, tmp_path, session_ray_address), "epoch 2/6 done", signal.SIGINT)
    client, parents, _ = _runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status != "FINISHED"
    run_id = parents[0].info.run_id

    resumed = Cli(["run", "quickstart", "resume=last"], tmp_path, session_ray_address)
    # The checkpoint of epoch 3 is this driver's own: a resume past it proves it resumed, not restarted.
    _stop(resumed, "epoch 4/6 done", signal.SIGKILL)
    assert "resuming from the checkpoint of epoch" in resumed.output
    client, parents, _ = _runs(tmp_path)
    assert [p.info.run_id for p in parents] == [run_id] and parents[0].info.status != "FINISHED"

    second = Cli(["run", "quickstart", "resume=last"], tmp_path, session_ray_address)
    try:
        # Ray Train's controller registers a reported checkpoint asynchronously: a kill in the same
        # instant as "epoch N done" may restart from epoch N-1 (at most one epoch of work repeated).
        second.wait_for("epoch 5/6 done")
        workers = _train_workers(os.getpid())
        assert workers, "no Ray Train worker process found"
        workers[-1].kill()
        rc = second.finish()
    finally:
        second.kill()
    assert rc == 0, second.output[-3000:]
    resumes = [int(e) for e in re.findall(r"resuming from the checkpoint of epoch (\d+)", second.output)]
    assert len(resumes) == 2 and resumes[-1] in (4, 5), second.output[-3000:]  # ≤ 1 finished epoch repeated
    client, parents, train = _runs(tmp_path)
    assert [p.info.run_id for p in parents] == [run_id]  # the same run continued: no duplicate
    assert parents[0].info.status == "FINISHED"
    assert len(train) == 1
    _assert_every_epoch_once(client, train[0].info.run_id, 6)
    assert parents[0].data.metrics[names.TEST_ACCURACY] > 0.5
