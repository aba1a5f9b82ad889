"""The toolkit end to end on a real local Ray and a real MLflow store: knn, overfit mode, softmax, transfer.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_toolkit.py      # ~6 min on 2 idle cores
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.services import names
from tests.conftest import shrunk_config, store_context

pytestmark = pytest.mark.slow


def _child(client, parent_id: str, stage: str):
    runs = client.search_runs([client.get_run(parent_id).info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent_id}'")
    return next(r for r in runs if r.data.tags.get(names.STAGE_TAG) == stage)


def test_knn_pipeline_cross_validates_benchmarks_and_registers_a_served_model(ray_local, mlflow_store):
    import mlflow

    from components.data.sources import digits
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("knn", "knn.k_choices=[1,3,25]", "knn.cv_rows=600", "knn.bench_rows=200",
                        "knn.batch_size=100")
    result = run_pipeline(cfg, command="test")
    client = mlflow_store.client()
    metrics = client.get_run(result.run_id).data.metrics
    assert metrics[names.TEST_ACCURACY] > 0.9  # digits: kNN is ~98%
    assert metrics[names.KNN_BEST_K] in (1, 3)  # k=25 of ~500 references per fold over-smooths
    assert metrics[names.KNN_VS_SKLEARN] > 0 and metrics["bench/knn_sklearn_agreement"] > 0.95
    cv = client.get_metric_history(_child(client, result.run_id, "knn").info.run_id, names.KNN_CV_ACCURACY)
    assert sorted(m.step for m in cv) == [1, 3, 25]
    # Registered like any model: raw uint8 images in, classes out, through the pyfunc path.
    model = mlflow.pyfunc.load_model("models:/digits-classifier@champion")
    images = digits().splits["all"].images[:16, ..., 0]
    served = model.predict(images)
    classes = np.asarray(served["class"] if isinstance(served, dict) else served.iloc[:, 0])
    assert classes.shape == (16,) and (classes == digits().splits["all"].labels[:16]).mean() > 0.8


def test_overfit_mode_reaches_near_zero_loss_on_32_images(ray_local, mlflow_store):
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("quickstart", "train.overfit_rows=32", "train.epochs=3", "model.width=16",
                        "stages=[ingest,preprocess,train]")
    result = run_pipeline(cfg, command="test")
    train = _child(mlflow_store.client(), result.run_id, "train")
    assert train.data.tags[names.OVERFIT_TAG] == "passed"
    assert train.data.metrics[names.OVERFIT_FINAL_LOSS] < 0.05
    assert names.TRAIN_VAL_GAP in train.data.metrics


def test_softmax_logs_the_first_iteration_check_and_templates(ray_local, mlflow_store):
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("train", "model=softmax", "train.loss=svm", "train.label_smoothing=0", "train.epochs=1",
                        "train.lr=0.01", "stages=[ingest,preprocess,train]")
    result = run_pipeline(cfg, command="test")
    client = mlflow_store.client()
    train = _child(client, result.run_id, "train")
    assert train.data.metrics[names.EXPECTED_INITIAL_LOSS] == 9.0
    assert train.data.tags[names.INITIAL_LOSS_TAG] == "ok"
    assert "plots/class_templates.png" in [a.path for a in client.list_artifacts(train.info.run_id, "plots")]


def test_transfer_from_a_model_registered_in_mlflow(quickstart_run, tmp_path):
    from pipelines.dispatch import run_pipeline

    # The source: the session's quickstart champion (10 digits; its head is replaced for classes 5-9), in its
    # own store; transfer registers nothing, so that store's champion stays v1.
    with store_context(quickstart_run.store) as store:
        client = store.client()
        assert str(client.get_model_version_by_alias("digits-classifier", names.CHAMPION).version) == "1"
        # 200 images at batch 32: 7 steps an epoch. No warm-up: transfer.yaml's one-epoch warm-up would hold
        # the rate near zero for half of this budget (the frozen run's 4 steps once fell inside it at 0.23).
        budget = ("transfer.source=models:/digits-classifier@champion", "data.max_train_rows=200",
                  "train.epochs=2", "train.warmup_epochs=0")
        result = run_pipeline(shrunk_config("transfer", *budget), command="test")
        metrics = client.get_run(result.run_id).data.metrics
        assert {names.TRANSFER_ACCURACY, names.SCRATCH_ACCURACY, names.TRANSFER_GAIN} <= set(metrics)
        assert metrics[names.TRANSFER_GAIN] == pytest.approx(metrics[names.TRANSFER_ACCURACY]
                                                             - metrics[names.SCRATCH_ACCURACY])
        # the source has seen these digits: fine-tuned from it, 14 steps classify 5 of them far above chance (0.2)
        assert metrics[names.TRANSFER_ACCURACY] > 0.8, metrics
        stage = _child(client, result.run_id, "transfer")
        assert stage.data.tags["visionray.transfer.head"] == "fc"
        assert stage.data.tags["visionray.transfer.mode"] == "fine-tune"
        # feature extraction: only the new head learns, at the head's rate, on the same budget
        frozen = run_pipeline(shrunk_config("transfer", *budget, "train.freeze=backbone", "train.lr=0.05",
                                            "transfer.scratch=false"), command="test")
        f_metrics = client.get_run(frozen.run_id).data.metrics
        assert _child(client, frozen.run_id, "transfer").data.tags["visionray.transfer.mode"] == "feature-extraction"
        assert f_metrics[names.TRANSFER_ACCURACY] > 0.7, f_metrics
        # transfer.source may also be the pre-training run's id: its train stage's best_model package, the same
        # network as the registered champion.
        from components.packaging import load_package
        from pipelines.flows.transfer import resolve_source

        by_run = resolve_source(quickstart_run.run_id, tmp_path / "by-run", store.uri)
        by_name = resolve_source("models:/digits-classifier@champion", tmp_path / "by-name", store.uri)
        (a, spec_a), (b, spec_b) = load_package(by_run), load_package(by_name)
        assert spec_a == spec_b
        assert all(np.array_equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
