"""`visionray ui`'s landing: the model-training view of the latest run, from a real (small) MLflow store.

    .venv/bin/python -m pytest -q tests/pipelines/test_dashboard.py

The browser's view of the same links is tests/pipelines/test_dashboard_browser.py (slow, Chromium).
"""

from __future__ import annotations

import json
import time

from pipelines.entry import cli
from pipelines.services import dashboard, names, tracking


def _pipeline_run(client, experiment_id: str, pipeline: str, stages: list[str], test_accuracy: float) -> str:
    parent = client.create_run(experiment_id, run_name=f"{pipeline}-{time.time_ns()}",
                               tags={names.PIPELINE_TAG: pipeline})
    client.set_terminated(parent.info.run_id)
    for i, stage in enumerate(stages, start=1):
        child = client.create_run(experiment_id, run_name=f"{i}-{stage}",
                                  tags={"mlflow.parentRunId": parent.info.run_id, names.STAGE_TAG: stage})
        if stage == "evaluate":
            client.log_metric(child.info.run_id, names.TEST_ACCURACY, test_accuracy)
            client.log_metric(child.info.run_id, "test/accuracy_cat", 0.5)  # per class: not a column
        client.set_terminated(child.info.run_id)
    return parent.info.run_id


def test_columns_are_the_results_then_the_models_column():
    cols = dashboard.columns(["train/loss", "test/loss", "test/accuracy", "test/accuracy_cat", "model/params",
                              "train/best_val_accuracy", "perf/images_per_s", "data/rows_train",
                              "rl/eval_return_mean"])
    assert cols == ["metrics.`rl/eval_return_mean`", "metrics.`test/accuracy`", "metrics.`test/loss`",
                    "metrics.`train/best_val_accuracy`", "attributes.`Models`"]


def test_the_latest_run_view_is_flat_by_run_name_and_the_all_runs_view_nests_newest_first():
    latest = dashboard.view_state(["metrics.`test/accuracy`"], since_ms=1234)
    assert latest["searchFilter"] == "attributes.start_time >= 1234"
    assert (latest["orderByKey"], latest["orderByAsc"]) == ("tags.`mlflow.runName`", True)
    every = dashboard.view_state([], since_ms=None)
    assert (every["searchFilter"], every["orderByKey"], every["orderByAsc"]) == ("", "attributes.start_time", False)
    envelope = json.loads(dashboard.saved_view("v", latest, 5))
    assert envelope["name"] == "v" and envelope["createdAt"] == 5 and json.loads(envelope["state"]) == latest


def test_landing_names_the_latest_runs_experiment_in_the_model_training_view(mlflow_store):
    client = mlflow_store.client()
    uri = mlflow_store.uri
    assert dashboard.landing(uri, "http://h:1").url == "http://h:1/#/experiments?workflowType=machine_learning"
    older = client.create_experiment(names.experiment_name("knn"))
    newer = client.create_experiment(names.experiment_name("quickstart"))
    stages = ["ingest", "preprocess", "train", "evaluate", "register"]
    _pipeline_run(client, newer, "quickstart", stages, 0.9)
    time.sleep(0.01)
    _pipeline_run(client, older, "knn", ["ingest", "preprocess", "knn"], 0.8)
    time.sleep(0.01)
    latest_id = _pipeline_run(client, newer, "quickstart", stages, 0.93)

    where = dashboard.landing(uri, "http://127.0.0.1:5000/")
    assert where.url == (f"http://127.0.0.1:5000/#/experiments/{newer}/runs?workflowType=machine_learning"
                         f"&viewStateShareKey={names.LATEST_RUN_VIEW}")
    assert where.all_runs_url.endswith(f"viewStateShareKey={names.ALL_RUNS_VIEW}")
    assert where.experiment == "visionray/quickstart"
    assert where.run_name == client.get_run(latest_id).info.run_name
    tags = client.get_experiment(newer).tags
    view = json.loads(tags[names.SAVED_VIEW_TAG_PREFIX + names.LATEST_RUN_VIEW])
    state = json.loads(view["state"])
    assert view["name"] == f"visionray: latest run ({where.run_name})"
    assert state["searchFilter"] == f"attributes.start_time >= {client.get_run(latest_id).info.start_time}"
    assert state["selectedColumns"] == ["metrics.`test/accuracy`", "attributes.`Models`"]
    assert names.SAVED_VIEW_TAG_PREFIX + names.ALL_RUNS_VIEW in tags
    assert not any(k.startswith(names.SAVED_VIEW_TAG_PREFIX) for k in client.get_experiment(older).tags)


def test_ui_against_a_server_prints_its_landing_url_and_starts_nothing(capsys, mlflow_store, monkeypatch):
    client = mlflow_store.client()
    exp = client.create_experiment(names.experiment_name("quickstart"))
    _pipeline_run(client, exp, "quickstart", ["ingest"], 0.9)
    # The store stands in for a tracking server here: ui prints the links on the server's own address.
    monkeypatch.setattr(tracking, "is_local_uri", lambda uri: False)
    monkeypatch.setattr(tracking, "check_store", lambda uri, timeout_s=10.0: None)
    assert cli.main(["ui"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{mlflow_store.uri}/#/experiments/{exp}/runs?workflowType=machine_learning"
                   f"&viewStateShareKey={names.LATEST_RUN_VIEW}"]
