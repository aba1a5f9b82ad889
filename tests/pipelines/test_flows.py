"""kit.prepare, the ingest → preprocess start every image pipeline shares, on a real SQLite MLflow store.

No Ray: ingest of scikit-learn's digits runs in-process, and the preprocess stage (Ray Data) is
replaced by a stub where a test needs it; the slow end-to-end tests cover the real one.
"""

from __future__ import annotations

import os

import pytest
from mlflow import MlflowClient

from pipelines.config import load_config
from pipelines.flows import kit
from pipelines.services import names, tracking
from pipelines.stages import preprocess


@pytest.fixture
def store(mlflow_store, monkeypatch):
    """conftest's store (the cwd: data/ and mlruns/ land there), and afterwards no active experiment.

    tracking.pipeline_run sets one, which MLflow keeps in a module global and in $MLFLOW_EXPERIMENT_ID;
    left set, a later test's ``mlflow.start_run()`` looks for that experiment id in its own new store.
    """
    from mlflow.tracking import fluent

    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    saved = os.environ.get("MLFLOW_EXPERIMENT_ID")
    yield mlflow_store
    if saved is None:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    else:
        os.environ["MLFLOW_EXPERIMENT_ID"] = saved


def _cfg(*overrides):
    return load_config("quickstart", ["data=digits", "tracking.system_metrics=false", *overrides])


def _stages(parent: tracking.PipelineRun) -> list[str]:
    children = MlflowClient(parent.uri).search_runs(
        [parent.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.run_id}'",
        order_by=["attributes.start_time ASC"])
    return [c.data.tags[names.STAGE_TAG] for c in children]


def test_prepare_without_preprocess_ingests_tags_the_parent_and_returns_none(store, monkeypatch):
    monkeypatch.setattr(preprocess, "run", lambda *a: pytest.fail("preprocess is not among the stages"))
    cfg = _cfg("stages=[ingest]")
    out: dict = {}
    with tracking.pipeline_run(cfg, "test") as parent:
        assert kit.prepare(cfg, parent, kit.workdir_for(cfg, parent.run_id), out) is None
    assert list(out) == ["manifest"]
    run = MlflowClient(parent.uri).get_run(parent.run_id)
    assert run.data.tags[names.DATASET_VERSION] == out["manifest"].version == parent.tags[names.DATASET_VERSION]
    # the parent's dataset input is the train split (the ingest stage's run has every split)
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["digits-train"]
    assert _stages(parent) == ["ingest"]


def test_prepare_runs_preprocess_on_the_ingested_manifest(store, monkeypatch):
    calls = []

    def fake_preprocess(cfg, manifest, workdir):
        calls.append((manifest.version, workdir))
        return "prepared"

    monkeypatch.setattr(preprocess, "run", fake_preprocess)
    cfg = _cfg("stages=[ingest,preprocess]")
    out: dict = {}
    with tracking.pipeline_run(cfg, "test") as parent:
        workdir = kit.workdir_for(cfg, parent.run_id)
        prepared = kit.prepare(cfg, parent, workdir, out)
    assert prepared == out["prepared"] == "prepared"
    assert calls == [(out["manifest"].version, workdir)]
    assert _stages(parent) == ["ingest", "preprocess"]
