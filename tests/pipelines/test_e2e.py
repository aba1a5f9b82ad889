"""End to end: the real quickstart pipeline, shrunk, on a local Ray and an MLflow SQLite store.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_e2e.py

One shrunk run (the session's ``quickstart_run``) is checked against ../shared/CONTRACT.md from
several angles; a second, worse run checks the champion gate; a run that blows up checks that
failures are recorded. Nothing is mocked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.services import names
from tests.conftest import shrunk_config, store_context

pytestmark = pytest.mark.slow

STAGES = ("ingest", "preprocess", "train", "evaluate", "register")
EPOCH_METRICS = (names.TRAIN_LOSS, names.TRAIN_ACCURACY, names.VAL_LOSS, names.VAL_ACCURACY, names.LR,
                 names.IMAGES_PER_S)
MODEL = "digits-classifier"


def _experiment_runs(client, pipeline: str = "quickstart"):
    exp = client.get_experiment_by_name(names.experiment_name(pipeline))
    assert exp is not None, f"experiment {names.experiment_name(pipeline)} is missing"
    return client.search_runs([exp.experiment_id], max_results=1000)


def _children(client, parent_id: str, pipeline: str = "quickstart"):
    return [r for r in _experiment_runs(client, pipeline) if r.data.tags.get("mlflow.parentRunId") == parent_id]


def _artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifact_paths(client, run_id, f.path) if f.is_dir else {f.path}
    return out


@pytest.fixture(scope="module")
def run(quickstart_run):
    client = quickstart_run.store.client()
    parent = client.get_run(quickstart_run.run_id)
    children = {r.data.tags[names.STAGE_TAG]: r for r in _children(client, quickstart_run.run_id)}
    return quickstart_run, client, parent, children


def test_one_parent_run_with_a_child_per_stage(run):
    qs, client, parent, children = run
    runs = _experiment_runs(client)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [qs.run_id]
    assert parent.info.status == "FINISHED"
    assert sorted(children) == sorted(STAGES)
    assert len(_children(client, qs.run_id)) == len(STAGES), "a stage logged more than one child run"
    for stage, child in children.items():
        assert child.info.status == "FINISHED", stage
        assert child.data.tags[names.STAGE_TAG] == stage
        assert child.data.tags["mlflow.parentRunId"] == qs.run_id
        assert child.info.experiment_id == parent.info.experiment_id


def test_stages_read_top_down_and_the_parent_row_has_the_headline(run):
    qs, client, parent, children = run
    # MLflow nests children under their parent only when sorted by start time; ascending, or by name,
    # the numbered names read in pipeline order.
    oldest_first = client.search_runs([parent.info.experiment_id], order_by=["attributes.start_time ASC"],
                                      filter_string=f"tags.`mlflow.parentRunId` = '{qs.run_id}'")
    assert [r.info.run_name for r in oldest_first] == [f"{i}-{s}" for i, s in enumerate(STAGES, start=1)]
    train = children["train"].data.metrics
    for key in (names.TEST_ACCURACY, names.TEST_LOSS, names.best_val("accuracy"), names.BEST_EPOCH,
                names.IMAGES_PER_S, names.PEAK_MEMORY_GIB):
        assert key in parent.data.metrics, key
    assert parent.data.metrics[names.best_val("accuracy")] == train[names.best_val("accuracy")]
    assert 1 <= train[names.BEST_EPOCH] <= qs.cfg.train.epochs  # numbered like the steps, from 1
    note = parent.data.tags[names.RUN_NOTE_TAG]
    assert note.startswith("**quickstart** · ") and "finished" in note and "test accuracy **" in note
    assert f"models:/{MODEL}/1" in note


def test_the_version_explains_itself_with_one_run_id(run):
    qs, client, parent, children = run
    v1 = client.get_model_version(MODEL, "1")
    assert v1.run_id == v1.tags[names.RUN_ID] == qs.run_id  # MLflow's source run is the pipeline run
    model = client.get_logged_model(v1.source.removeprefix("models:/"))
    assert model.name == qs.cfg.model.name and model.source_run_id == qs.run_id
    linked = {m.key: m for m in model.metrics}
    assert linked[names.TEST_ACCURACY].value == parent.data.metrics[names.TEST_ACCURACY]
    assert linked[names.TEST_ACCURACY].dataset_name == "digits-test"
    assert "image classifier" in v1.description and "reproduce: `test`" in v1.description


def test_every_run_carries_config_and_provenance(run):
    qs, client, parent, children = run
    for r in [parent, *children.values()]:
        where = r.data.tags.get(names.STAGE_TAG, "parent")
        for tag in (names.GIT_SHA, names.COMMAND, names.DATASET_VERSION):
            assert r.data.tags.get(tag), f"{where} run lacks tag {tag}"
        assert r.data.tags[names.COMMAND] == "test"
        assert r.data.tags[names.DATASET_VERSION] == children["ingest"].data.tags[names.DATASET_VERSION]
        assert r.data.params["train.epochs"] == "2"
        assert r.data.params["data.name"] == "digits"
        assert names.CONFIG_ARTIFACT in _artifact_paths(client, r.info.run_id), where
    config = client.download_artifacts(qs.run_id, names.CONFIG_ARTIFACT)
    assert "epochs: 2" in open(config).read()


def test_train_logs_one_point_per_epoch(run):
    qs, client, parent, children = run
    train_id = children["train"].info.run_id
    epochs = qs.cfg.train.epochs
    for key in EPOCH_METRICS:
        history = client.get_metric_history(train_id, key)
        steps = [m.step for m in history]
        assert sorted(steps) == list(range(1, epochs + 1)), f"{key}: steps {steps}"  # epoch 1, 2, ...
        assert all(np.isfinite(m.value) for m in history), key
    accuracy = [m.value for m in client.get_metric_history(train_id, names.VAL_ACCURACY)]
    assert all(0 <= a <= 1 for a in accuracy)


def test_the_quickstart_says_which_precision_auto_ran_as(run):
    import torch

    from components import engine

    qs, client, parent, children = run
    assert qs.cfg.train.precision == "auto"
    # a local run: the workers' CPU is this machine's
    assert children["train"].data.tags[names.PRECISION_TAG] == engine.resolve_precision("auto", torch.device("cpu"))


def test_the_train_and_parent_runs_say_where_the_start_up_went(run):
    qs, client, parent, children = run
    train = children["train"].data.metrics
    phases = {k.removeprefix(names.STARTUP_PHASE_PREFIX).removesuffix("_s"): v for k, v in train.items()
              if k.startswith(names.STARTUP_PHASE_PREFIX)}
    # from the pipeline's start: the MLflow runs, Ray, the stages before train, then the Train workers
    assert {"tracking", "ray", "ingest", "preprocess", "train_setup", "worker_group", "workers", "worker_setup",
            "first_step"} <= set(phases), phases
    assert all(v >= 0 for v in phases.values())
    assert sum(phases.values()) == pytest.approx(train[names.STARTUP_SECONDS], rel=1e-6)
    assert 0 < train[names.STARTUP_SECONDS] < parent.data.metrics[names.PIPELINE_SECONDS]
    assert parent.data.metrics[names.STARTUP_SECONDS] == train[names.STARTUP_SECONDS]  # beside peak memory


def test_test_metrics_on_evaluate_and_parent(run):
    qs, client, parent, children = run
    for r in (parent, children["evaluate"]):
        assert r.data.metrics[names.TEST_ACCURACY] > 0.5  # digits is easy: 2 epochs reach ~0.9
        assert np.isfinite(r.data.metrics[names.TEST_LOSS])
    assert parent.data.metrics[names.TEST_ACCURACY] == children["evaluate"].data.metrics[names.TEST_ACCURACY]


def test_stage_artifacts_and_dataset_input(run):
    qs, client, parent, children = run
    evaluate = _artifact_paths(client, children["evaluate"].info.run_id)
    for plot in ("plots/confusion_matrix.png", "plots/per_class_accuracy.png", "plots/curves.png"):
        assert plot in evaluate
    assert "plots/augmentation_grid.png" in _artifact_paths(client, children["preprocess"].info.run_id)
    assert names.CURVES_PLOT in _artifact_paths(client, children["train"].info.run_id)  # on train too
    assert names.REPORT_ARTIFACT in _artifact_paths(client, parent.info.run_id)
    ingest = children["ingest"]
    assert names.MANIFEST_ARTIFACT in _artifact_paths(client, ingest.info.run_id)
    manifest = json.load(open(client.download_artifacts(ingest.info.run_id, names.MANIFEST_ARTIFACT)))
    assert manifest["version"] == ingest.data.tags[names.DATASET_VERSION]
    inputs = ingest.inputs.dataset_inputs
    assert inputs, "the ingest run logged no dataset input"
    assert {i.dataset.name for i in inputs} >= {"digits-train", "digits-val", "digits-test"}
    assert all(manifest["version"].startswith(i.dataset.digest) for i in inputs)


def test_first_version_is_the_champion(run):
    qs, client, parent, children = run
    v1 = client.get_model_version_by_alias(MODEL, names.CHAMPION)
    assert str(v1.version) == "1"
    assert v1.tags[names.RUN_ID] == qs.run_id
    assert v1.tags[names.DATASET_VERSION] == parent.data.tags[names.DATASET_VERSION]
    assert v1.tags[names.GIT_SHA] == parent.data.tags[names.GIT_SHA]
    assert float(v1.tags[names.TEST_ACCURACY_TAG]) == pytest.approx(parent.data.metrics[names.TEST_ACCURACY],
                                                                     abs=1e-6)
    assert names.CHAMPION in parent.data.tags[names.DECISION_TAG]


def test_champion_predicts_raw_images(run):
    """Preprocessing travels inside the model: raw uint8 N×8×8, any batch size (the example has 2)."""
    import mlflow.pyfunc

    from components.data.sources import digits

    qs, client, parent, children = run
    raw = digits().splits["all"]
    images, labels = raw.images[..., 0], raw.labels
    with store_context(qs.store):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@{names.CHAMPION}")
    out = model.predict(images[:3])
    assert out["class"].shape == (3,)
    assert out["probabilities"].shape == (3, 10)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert set(out["class"].tolist()) <= set(range(10))
    assert (model.predict(images[:300])["class"] == labels[:300]).mean() > 0.5


def test_the_ray_data_feed_trains_as_well_as_the_in_memory_one(quickstart_run):
    """The session's run fed its workers from memory (``data.feed=auto`` on digits); Ray Datasets, the feed
    of splits over 256 MiB, train the same recipe as well."""
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("quickstart", "data.feed=ray_data", "registry.enabled=false")
    with store_context(quickstart_run.store):
        result = run_pipeline(cfg, command="test")
    client = quickstart_run.store.client()
    streamed = client.get_run(result.run_id).data.metrics[names.TEST_ACCURACY]
    in_memory = client.get_run(quickstart_run.run_id).data.metrics[names.TEST_ACCURACY]
    assert streamed >= 0.9 and in_memory >= 0.9, (streamed, in_memory)
    assert client.get_run(result.run_id).data.params["data.feed"] == "ray_data"


def test_a_worse_run_becomes_the_challenger(quickstart_run):
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("quickstart", "train.epochs=1", "train.lr=1e-5")
    with store_context(quickstart_run.store):
        result = run_pipeline(cfg, command="test")
    client = quickstart_run.store.client()
    decision = result.outputs["decision"]
    champion = str(quickstart_run.outputs["decision"].version)
    # Other tests share this session's store and may have registered versions of their own: compare
    # against the versions these two runs made, not against fixed numbers.
    assert decision.alias == names.CHALLENGER and str(decision.version) != champion
    assert str(client.get_model_version_by_alias(MODEL, names.CHALLENGER).version) == str(decision.version)
    assert str(client.get_model_version_by_alias(MODEL, names.CHAMPION).version) == champion
    challenger = client.get_model_version(MODEL, str(decision.version))
    assert challenger.tags[names.RUN_ID] == result.run_id
    assert float(challenger.tags[names.TEST_ACCURACY_TAG]) < float(client.get_model_version(MODEL, champion).tags[
        names.TEST_ACCURACY_TAG])
    # its report compares its config with the champion's: the two keys this run changed
    report = open(client.download_artifacts(result.run_id, names.REPORT_ARTIFACT)).read()
    assert f"{MODEL} v{champion} (champion before this run)" in report
    assert "<td>train.epochs</td><td>1</td><td>2</td>" in report and "<td>train.lr</td>" in report
    parents = {r.info.run_id: r for r in _experiment_runs(client) if "mlflow.parentRunId" not in r.data.tags}
    assert {quickstart_run.run_id, result.run_id} <= set(parents)
    assert all(parents[i].info.status == "FINISHED" for i in (quickstart_run.run_id, result.run_id))


def test_a_failing_stage_marks_its_runs_failed(ray_local, mlflow_store):
    """A learning rate of 1e9 blows the loss up in the first steps (past 3x its start, or to inf): the
    engine raises LossExplosion, every worker stops at the same step, the driver reports it without
    retrying."""
    from components.engine import LossExplosion
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("quickstart", "train.lr=1e9", "stages=[ingest,preprocess,train]")
    with pytest.raises(LossExplosion, match="lower train.lr"):
        run_pipeline(cfg, command="test")
    client = mlflow_store.client()
    runs = _experiment_runs(client)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags[names.STAGE_TAG]: r for r in _children(client, parent.info.run_id)}
    assert sorted(children) == ["ingest", "preprocess", "train"]
    assert children["ingest"].info.status == children["preprocess"].info.status == "FINISHED"
    for r in (parent, children["train"]):
        assert r.info.status == "FAILED"
        assert "LossExplosion: training " in r.data.tags[names.ERROR_TAG]
        assert "error.txt" in _artifact_paths(client, r.info.run_id)
