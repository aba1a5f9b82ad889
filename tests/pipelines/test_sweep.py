"""The sweep pipeline end to end on a real local Ray (2 CPUs) and a real MLflow store.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_sweep.py

Four tiny digits trials give exactly four nested trial runs with distinct sampled values and a
registered winner; an absurd learning rate ends as a stopped trial (§6.2's 3x-loss rule), not a
failed sweep; a sweep killed mid-way restores with ``resume=last`` and keeps one run per trial.
"""

from __future__ import annotations

import os
import signal

import pytest

from pipelines.services import names
from tests.conftest import shrunk_config

pytestmark = pytest.mark.slow

#: One worker per trial, two trials at once on the 2-CPU test cluster (the third CPU slot is Ray Data's).
TINY = ("cluster.num_workers=1", "train.epochs=2", "tune.seed=1",
        "tune.space={train.lr: {loguniform: [0.01, 0.3]}, model.dropout: {uniform: [0.0, 0.3]}, "
        "train.batch_size: {choice: [64, 128]}}")


def _runs(client, experiment="visionray/sweep"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.data.tags.get(names.STAGE_TAG) == names.TRIAL]
    return parents, trials


def test_a_sweep_of_four_trials_logs_four_nested_runs_and_registers_the_winner(ray_local, mlflow_store):
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("sweep", *TINY, "tune.num_samples=4")
    result = run_pipeline(cfg, command="test")
    client = mlflow_store.client()
    parents, trials = _runs(client)
    assert [p.info.run_id for p in parents] == [result.run_id]
    assert len(trials) == 4
    assert all(t.data.tags["mlflow.parentRunId"] == result.run_id for t in trials)
    lrs = {t.data.params[f"{names.TRIAL_PARAM_PREFIX}train.lr"] for t in trials}
    assert len(lrs) == 4  # distinct sampled values
    assert all(t.info.status == "FINISHED" for t in trials)
    for t in trials:
        steps = [m.step for m in client.get_metric_history(t.info.run_id, names.VAL_ACCURACY)]
        assert steps and steps == list(range(1, len(steps) + 1))  # per-epoch metrics in each trial's own run
        assert t.data.metrics[names.TRIAL_EPOCHS] == len(steps)  # epochs counted from the 1-based reports
        assert names.BEST_VAL_ACCURACY in t.data.metrics
        assert t.data.tags[names.TRIAL_STATUS_TAG] in ("completed", "early_stopped")
        assert [a.path for a in client.list_artifacts(t.info.run_id, "best_model")]  # the ensemble reads it

    parent = client.get_run(result.run_id)
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {names.BEST_OVERRIDES_ARTIFACT, "best_command.txt"} <= artifacts
    assert {"trials.json", "trials.csv"} <= {a.path.split("/")[-1] for a in client.list_artifacts(result.run_id, "sweep")}
    assert "parallel_coordinates.png" in {a.path.split("/")[-1] for a in client.list_artifacts(result.run_id, "plots")}
    assert parent.data.metrics[names.SWEEP_TRIALS] == 4
    assert 0 < parent.data.metrics[names.SWEEP_CPU_UTILIZATION]
    best_value = max(t.data.metrics[names.BEST_VAL_ACCURACY] for t in trials)
    assert parent.data.metrics[names.SWEEP_BEST_METRIC] == pytest.approx(best_value)
    # Trials may tie on the tiny digits split (e.g. two at 0.98): the winner is any one of the best.
    tied = [t.info.run_id for t in trials if t.data.metrics[names.BEST_VAL_ACCURACY] == best_value]
    best_trial = next(t for t in trials if t.info.run_id in tied and t.info.run_id in parent.data.tags[names.BEST_TRIAL_TAG])
    overrides = client.download_artifacts(result.run_id, names.BEST_OVERRIDES_ARTIFACT)
    assert f"train.lr={best_trial.data.params[names.TRIAL_PARAM_PREFIX + 'train.lr']}" in open(overrides).read()

    decision = result.outputs["decision"]
    version = client.get_model_version(decision.name, str(decision.version))
    assert version.tags[names.RUN_ID] == result.run_id
    assert names.TEST_ACCURACY in parent.data.metrics


def test_an_absurd_learning_rate_ends_as_a_stopped_trial_not_a_failed_sweep(ray_local, mlflow_store):
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("sweep", "cluster.num_workers=1", "train.epochs=2", "tune.num_samples=1",
                        "tune.space={train.lr: {choice: [100000.0]}}", "train.optimizer=sgd")
    result = run_pipeline(cfg, command="test")
    client = mlflow_store.client()
    parents, trials = _runs(client)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 1
    trial = trials[0]
    assert trial.info.status == "FINISHED"
    assert trial.data.tags[names.TRIAL_STATUS_TAG] == "stopped_loss"
    assert "initial" in trial.data.tags["visionray.stopped"] or "diverged" in trial.data.tags["visionray.stopped"]
    assert client.get_run(result.run_id).data.metrics["sweep/trials_stopped_loss"] == 1
    # the epoch the loss rule cut is compute all the same: the trial's wall time x the CPUs its one worker
    # held, from Tune's start of it to its end (a Ray Train run does not start and stop inside a second)
    row, = result.outputs["rows"]
    held = cfg.cluster.num_workers * cfg.cluster.cpus_per_worker
    assert row["cpu_s"] == pytest.approx(row["wall_s"] * held) and row["wall_s"] > 1.0
    assert "decision" not in result.outputs  # nothing worth registering


def test_an_interrupted_sweep_restores_and_keeps_one_run_per_trial(tmp_path, session_ray_address):
    """Both drivers join the session Ray; killing the first driver's process group ends its trials too (Ray
    kills the actors a dead driver owned)."""
    from mlflow import MlflowClient

    from tests.pipelines.test_fault_tolerance import Cli

    args = ["run", "sweep", "data=digits", *TINY, "tune.num_samples=3", "tune.max_concurrent=1",
            "tune.asha=false", "tracking.system_metrics=false", "cluster.max_failures=0"]
    first = Cli(args, tmp_path, session_ray_address)
    try:
        first.wait_for("epoch 2/2 done", timeout=900)  # the first trial is through; kill the sweep
        os.killpg(first.proc.pid, signal.SIGKILL)
        assert first.finish(timeout=120) != 0
    finally:
        first.kill()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    parents, trials_before = _runs(client)
    assert len(parents) == 1 and parents[0].info.status != "FINISHED"
    assert 1 <= len(trials_before) <= 3

    second = Cli(["run", "sweep", "resume=last"], tmp_path, session_ray_address)
    try:
        rc = second.finish(timeout=1500)
    finally:
        second.kill()
    assert rc == 0, second.output[-3000:]
    assert "restoring round coarse" in second.output
    parents, trials = _runs(client)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 3  # the interrupted trial continued its own run: no duplicates
    assert {t.info.run_id for t in trials_before} <= {t.info.run_id for t in trials}
    assert len({t.data.tags[names.TRIAL_ID_TAG] for t in trials}) == 3
    assert all(t.info.status == "FINISHED" for t in trials)
    assert parents[0].data.metrics[names.SWEEP_TRIALS] == 3
