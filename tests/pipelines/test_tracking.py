"""Tracking on a real SQLite MLflow store: URIs, parent/child runs, failure marking, resume lookup."""

from __future__ import annotations

import socket

import mlflow
import pytest
from mlflow import MlflowClient

from pipelines.config import load_config
from pipelines.services import names, tracking


@pytest.fixture
def store(tmp_path, monkeypatch):
    from tests.conftest import _reset_mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    while mlflow.active_run():
        mlflow.end_run()
    yield tmp_path
    _reset_mlflow(None)  # ends runs and forgets the active experiment these tests set


def cfg(*overrides):
    return load_config("quickstart", ["data=digits", "tracking.system_metrics=false", "train.epochs=3", *overrides])


def test_uri_precedence(store, monkeypatch):
    assert tracking.resolve_uri(None) == f"sqlite:///{store / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert tracking.resolve_uri(None) == "http://127.0.0.1:9"
    assert tracking.resolve_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert tracking.artifact_root(f"sqlite:///{store}/mlruns/mlflow.db") == (store / "mlruns" / "artifacts").as_uri()
    assert tracking.artifact_root("http://h:5000") is None


def test_unreachable_server_is_named_quickly():
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(tracking.TrackingUnavailable, match=f"127.0.0.1:{port}"):
        tracking.check_store(f"http://127.0.0.1:{port}", timeout_s=5)


def test_secret_looking_keys_are_never_logged():
    params = tracking.config_params(cfg())
    assert params["train.epochs"] == "3"
    assert "resume" not in params
    fake = {"registry.api_key": "x", "tracking.password": "y"}
    from pipelines.config.secrets import mask_key

    masked = {k: mask_key(k, v) for k, v in fake.items()}
    assert set(masked.values()) == {"***"}


def test_parent_and_child_runs_follow_the_contract(store):
    c = cfg()
    with tracking.pipeline_run(c, "visionray run quickstart data=digits") as parent:
        with tracking.stage_run("ingest", parent) as child:
            tracking.log_metrics({names.QUARANTINED: 0})
    client = MlflowClient(parent.uri)
    exp = client.get_experiment_by_name("visionray/quickstart")
    assert exp is not None and exp.artifact_location.endswith("mlruns/artifacts")
    p, k = client.get_run(parent.run_id), client.get_run(child)
    assert p.info.status == k.info.status == "FINISHED"
    assert k.data.tags["mlflow.parentRunId"] == parent.run_id
    assert k.info.experiment_id == p.info.experiment_id == exp.experiment_id
    assert k.data.tags[names.STAGE_TAG] == "ingest"
    for run in (p, k):
        assert run.data.params["train.epochs"] == "3"
        assert {names.GIT_SHA, names.COMMAND} <= set(run.data.tags)
        assert names.CONFIG_ARTIFACT in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_stages_are_numbered_and_the_parent_repeats_their_headline_metrics_and_describes_the_run(store):
    c = cfg()
    with tracking.pipeline_run(c, "visionray run quickstart data=digits") as parent:
        running = MlflowClient(parent.uri).get_run(parent.run_id).data.tags[names.RUN_NOTE_TAG]
        for stage in c.stages:
            with tracking.stage_run(stage, parent):
                if stage == "train":
                    tracking.log_metrics({names.VAL_ACCURACY: 0.5, names.IMAGES_PER_S: 1234.0}, step=1)
                    tracking.log_metrics({names.best_val("accuracy"): 0.91, names.BEST_EPOCH: 2})
                if stage == "evaluate":
                    tracking.log_metrics({names.TEST_ACCURACY: 0.875, names.TEST_LOSS: 0.4,
                                          names.per_class_accuracy(names.TEST, "cat"): 0.7})
        tracking.log_metrics({names.PEAK_MEMORY_GIB: 1.5})
        parent.set_tags({names.DECISION_TAG: "champion: models:/digits-classifier/1"})
    client = MlflowClient(parent.uri)
    children = client.search_runs([parent.experiment_id], order_by=["attributes.start_time ASC"],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'")
    assert [r.info.run_name for r in children] == ["1-ingest", "2-preprocess", "3-train", "4-evaluate", "5-register"]
    run = client.get_run(parent.run_id)
    assert {k: run.data.metrics[k] for k in (names.TEST_ACCURACY, names.TEST_LOSS, names.best_val("accuracy"),
                                            names.BEST_EPOCH, names.IMAGES_PER_S)} == {
        names.TEST_ACCURACY: 0.875, names.TEST_LOSS: 0.4, names.best_val("accuracy"): 0.91,
        names.BEST_EPOCH: 2, names.IMAGES_PER_S: 1234.0}
    # Per-class accuracies and per-epoch curves stay on their stage: the runs table needs the headline only.
    assert names.per_class_accuracy(names.TEST, "cat") not in run.data.metrics
    assert names.VAL_ACCURACY not in run.data.metrics
    assert "running" in running and "quickstart" in running
    note = run.data.tags[names.RUN_NOTE_TAG]
    for part in ("**quickstart**", "convnet on digits", "3 epochs", "finished", "test accuracy **0.875**",
                 "test loss 0.4", "best val accuracy 0.91 (epoch 2)", "1,234 images/s", "peak memory 1.5 GiB",
                 "champion: models:/digits-classifier/1", "`visionray run quickstart data=digits`"):
        assert part in note, part


def test_headline_metrics_come_from_the_pipeline_stages_only_and_never_replace_the_parents_own():
    stages = ("ingest", "train", "evaluate")
    got = tracking.headline_metrics(
        [("train", {names.BEST_EPOCH: 3, names.LR: 0.1}), (names.TRIAL, {names.TEST_ACCURACY: 0.1}),
         ("evaluate", {names.TEST_ACCURACY: 0.8, names.TEST_LOSS: 0.5})],
        stages, already={names.TEST_LOSS: 0.6})
    assert got == {names.BEST_EPOCH: 3.0, names.TEST_ACCURACY: 0.8}
    assert tracking.stage_run_name("train", stages) == "2-train"
    assert tracking.stage_run_name("scratch", stages) == "scratch"  # not a pipeline stage: its own name


def test_a_failing_stage_marks_both_runs_failed_with_the_error(store):
    c = cfg()
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.pipeline_run(c, "test") as parent:
            with tracking.stage_run("train", parent) as child:
                raise RuntimeError("boom")
    client = MlflowClient(parent.uri)
    for run_id in (parent.run_id, child):
        run = client.get_run(run_id)
        assert run.info.status == "FAILED"
        assert "boom" in run.data.tags[names.ERROR_TAG]
    assert "error.txt" in [a.path for a in client.list_artifacts(child)]
    assert "failed: RuntimeError: boom" in client.get_run(parent.run_id).data.tags[names.RUN_NOTE_TAG]


def test_resume_continues_the_same_runs(store):
    c = cfg()
    with pytest.raises(KeyboardInterrupt):
        with tracking.pipeline_run(c, "first") as parent:
            with tracking.stage_run("train", parent) as child:
                raise KeyboardInterrupt
    run_id, text = tracking.find_resumable("quickstart", parent.uri, "last")
    assert run_id == parent.run_id and "epochs: 3" in text
    with tracking.pipeline_run(c, "second", resume_run_id=run_id) as again:
        with tracking.stage_run("train", again) as child_again:
            pass
    assert again.run_id == parent.run_id and child_again == child
    client = MlflowClient(parent.uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    with pytest.raises(tracking.TrackingUnavailable, match="already finished"):
        tracking.find_resumable("quickstart", parent.uri, run_id)
    with pytest.raises(tracking.TrackingUnavailable, match="no unfinished quickstart run"):
        tracking.find_resumable("quickstart", parent.uri, "last")
    with pytest.raises(tracking.TrackingUnavailable, match="no such MLflow run"):
        tracking.find_resumable("quickstart", parent.uri, "0" * 32)


_DATASET_RACE = """
import sys, time
from pathlib import Path
import mlflow
from pipelines.services import tracking
uri, folder, start, rounds = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
mlflow.set_tracking_uri(uri)
experiment = mlflow.set_experiment("race").experiment_id
for i in range(rounds):
    with mlflow.start_run(experiment_id=experiment):
        time.sleep(max(0.0, start + 0.5 * i - time.time()))  # both processes reach log_input together
        tracking.log_dataset("digits", f"{i:036d}", folder, "train", "x")
print("ok")
"""


def test_two_runs_logging_the_same_new_dataset_at_once_both_succeed(tmp_path):
    """Two retrains started together log the same new dataset: both must link it, neither may fail on
    the store's unique key (it did, in a full-suite run, as sqlite3.IntegrityError)."""
    import subprocess
    import sys
    import time

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment("race")  # the schema exists before the race starts
    start, rounds = time.time() + 8, 8
    procs = [subprocess.Popen([sys.executable, "-c", _DATASET_RACE, uri, str(tmp_path), str(start), str(rounds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(err[-2000:] for _, err in outs)
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 2 * rounds and all(len(r.inputs.dataset_inputs) == 1 for r in runs)


def test_epochs_are_numbered_from_one_and_a_restart_backfills_only_the_missing_ones(store):
    """The training loop logs epoch n at step n (1, 2, ...); a checkpoint from before the numbering
    (history from 0) is renumbered, and a restarted worker backfills only the epochs MLflow lacks."""
    from pipelines.stages.train import renumbered

    old = {names.TRAIN_LOSS: [(0, 2.0), (1, 1.5)]}
    assert renumbered(old, base=0) == {names.TRAIN_LOSS: [(1, 2.0), (2, 1.5)]}
    assert renumbered(renumbered(old, base=0), base=1) == {names.TRAIN_LOSS: [(1, 2.0), (2, 1.5)]}
    with tracking.pipeline_run(cfg(), "test") as parent:
        with tracking.stage_run("train", parent) as run_id:
            logger = tracking.RunLogger(parent.uri, run_id)
            assert logger.log_epoch({names.TRAIN_LOSS: 2.0}, 1)
            restarted = tracking.RunLogger(parent.uri, run_id)
            assert restarted.backfill({names.TRAIN_LOSS: [(1, 9.0), (2, 1.5)]}) == 1
            assert not restarted.log_epoch({names.TRAIN_LOSS: 9.0}, 2)  # logged by the backfill: it stands
    history = MlflowClient(parent.uri).get_metric_history(run_id, names.TRAIN_LOSS)
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 1.5)]
