"""The ``retrain`` pipeline end to end on a real local Ray and a real MLflow SQLite store.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_retrain.py
    VISIONRAY_RETRAIN_RACES=20 .venv/bin/python -m pytest -m slow tests/pipelines/test_retrain.py -k concurrent

The session's shrunk quickstart run (a copy of its store: retrain moves the champion) makes v1 the
champion on digits (split seed 0). Then: unchanged data is a quick no-op; new data (another split seed)
trains a challenger that is registered and gated on the same new test split; two retrains started
together as real processes promote exactly once (one race by default; VISIONRAY_RETRAIN_RACES for more).
"""

from __future__ import annotations

import os
import time

import pytest

from pipelines.flows.retrain import LOCKED, NOOP, PROMOTED, REJECTED
from pipelines.services import names
from tests.conftest import Store, shrunk_config, store_context
from tests.pipelines.test_fault_tolerance import Cli

pytestmark = pytest.mark.slow

MODEL = "digits-classifier"
QUICK = ("train.epochs=1", "train.max_steps_per_epoch=4")


@pytest.fixture(scope="module")
def champion_store(quickstart_run, tmp_path_factory) -> Store:
    store = quickstart_run.copy_store(tmp_path_factory.mktemp("retrain") / "store")
    assert str(store.client().get_model_version_by_alias(MODEL, names.CHAMPION).version) == "1"
    return store


def _parents(client):
    exp = client.get_experiment_by_name(names.experiment_name("retrain"))
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"])
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def test_unchanged_data_is_a_quick_noop(champion_store):
    from pipelines.dispatch import run_pipeline

    with store_context(champion_store):
        started = time.perf_counter()
        result = run_pipeline(shrunk_config("retrain"), command="test")
        elapsed = time.perf_counter() - started
    decision = result.outputs["decision"]
    assert decision.outcome == NOOP and decision.champion_version == 1
    assert elapsed <= 30, f"a no-op took {elapsed:.1f} s"
    client = champion_store.client()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[names.RETRAIN_OUTCOME_TAG] == NOOP
    assert "no new data" in run.data.tags[names.DECISION_TAG]
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1  # nothing registered


def test_new_data_trains_and_gates_a_challenger_on_the_same_split(champion_store, capsys):
    """min_improvement=1 cannot be met: the new version is registered complete, as challenger."""
    from pipelines.dispatch import run_pipeline

    with store_context(champion_store):
        result = run_pipeline(shrunk_config("retrain", "data.split_seed=1", "retrain.min_improvement=1", *QUICK),
                              command="test")
    d = result.outputs["decision"]
    assert "warm start from champion v1" in capsys.readouterr().err
    assert d.outcome == REJECTED and d.champion_version == 1 and d.challenger_version == 2
    client = champion_store.client()
    assert str(client.get_model_version_by_alias(MODEL, names.CHAMPION).version) == "1"
    assert str(client.get_model_version_by_alias(MODEL, names.CHALLENGER).version) == "2"
    run = client.get_run(result.run_id)
    assert run.data.tags[names.RETRAIN_OUTCOME_TAG] == REJECTED
    assert run.data.tags[names.RETRAIN_CHALLENGER_VERSION_TAG] == "2"
    assert run.data.tags[names.RETRAIN_CHAMPION_VERSION_TAG] == "1"
    m = run.data.metrics
    assert m[names.RETRAIN_CHALLENGER_ACCURACY] == pytest.approx(d.challenger_accuracy)
    assert m[names.RETRAIN_CHAMPION_ACCURACY] == pytest.approx(d.champion_accuracy)
    assert m[names.RETRAIN_CHALLENGER_ACCURACY] == m[names.TEST_ACCURACY]
    assert 0.3 < m[names.RETRAIN_CHAMPION_ACCURACY] <= 1  # the real v1, re-scored on the new split
    v2 = client.get_model_version(MODEL, "2")
    assert v2.tags[names.DATASET_VERSION] == run.data.tags[names.DATASET_VERSION]
    assert v2.tags[names.DATASET_VERSION] != client.get_model_version(MODEL, "1").tags[names.DATASET_VERSION]
    assert float(v2.tags[names.TEST_ACCURACY_TAG]) == pytest.approx(d.challenger_accuracy, abs=1e-6)
    assert v2.tags[names.RUN_ID] == result.run_id
    assert not [m for m in client.search_registered_models() if m.name.endswith(names.LOCK_SUFFIX)]


def test_concurrent_retrains_promote_exactly_once(champion_store, session_ray_address):
    """Two real ``visionray run retrain`` processes started together on new data, N times. Both join the
    session's Ray (as two retrains on one cluster do); the lock under test is in the MLflow registry."""
    # One race runs the path (each costs two drivers and a training); raise it to hunt for races.
    races = int(os.environ.get("VISIONRAY_RETRAIN_RACES", "1"))
    client = champion_store.client()
    for i in range(races):
        versions_before = len(client.search_model_versions(f"name='{MODEL}'"))
        parents_before = len(_parents(client))
        args = ["run", "retrain", "data=digits", f"data.split_seed={100 + i}", "retrain.min_improvement=-1",
                "cluster.max_failures=0", "tracking.system_metrics=false", "train.batch_size=64", *QUICK]
        started = time.perf_counter()
        clis = [Cli(args, champion_store.root, session_ray_address) for _ in range(2)]
        try:
            codes = [c.finish(timeout=600) for c in clis]
        finally:
            for c in clis:
                c.kill()
        assert codes == [0, 0], "\n\n".join(c.output[-3000:] for c in clis)
        new = _parents(client)[parents_before:]
        outcomes = sorted(r.data.tags[names.RETRAIN_OUTCOME_TAG] for r in new)
        assert len(new) == 2 and outcomes.count(PROMOTED) == 1, (i, outcomes)
        assert set(outcomes) - {PROMOTED} <= {LOCKED, NOOP}, (i, outcomes)
        assert len(client.search_model_versions(f"name='{MODEL}'")) == versions_before + 1
        winner = next(r for r in new if r.data.tags[names.RETRAIN_OUTCOME_TAG] == PROMOTED)
        champion = client.get_model_version_by_alias(MODEL, names.CHAMPION)
        assert champion.tags[names.RUN_ID] == winner.info.run_id
        assert any("holds the lock" in c.output or "no new data" in c.output for c in clis)
        assert all(r.info.status == "FINISHED" for r in new)
        print(f"race {i + 1}/{races}: {outcomes} in {time.perf_counter() - started:.0f} s")
    assert not [m for m in client.search_registered_models() if m.name.endswith(names.LOCK_SUFFIX)]
