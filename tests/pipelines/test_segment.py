"""The segment pipeline end to end on a tiny config: shapes scenes, a real local Ray, a real MLflow store;
one run (module fixture) checked for its metrics, artifacts, registered model and served form.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_segment.py
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.services import names
from tests.conftest import Store, shrunk_config, store_context
from tests.scoring import post, serve_in_thread

TINY = ("data=shapes", "data.num_images=160", "data.image_size=32", "model=unet", "model.width=4", "model.depth=2",
        "train.epochs=2", "train.batch_size=32")
CLASSES = ["background", "circle", "square", "triangle"]


@pytest.fixture(scope="module")
def segment_run(ray_local, tmp_path_factory):
    from pipelines.dispatch import run_pipeline

    with store_context(Store(tmp_path_factory.mktemp("segment"))) as store:
        result = run_pipeline(shrunk_config("segment", *TINY), command="test")
        yield store, result


@pytest.mark.slow
def test_segment_logs_miou_per_epoch_and_per_class_iou(segment_run):
    store, result = segment_run
    client = store.client()
    parent = client.get_run(result.run_id)
    metrics = parent.data.metrics
    for key in ("test/miou", "test/pixel_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    test_masks = result.outputs["prepared"].manifest()
    assert names.per_class_iou(names.TEST, "background") not in metrics  # per class: on evaluate, not the headline
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    by_stage = {r.data.tags.get(names.STAGE_TAG): r for r in runs}
    train, evaluate = by_stage["train"], by_stage["evaluate"]
    for key in ("train/loss", "train/miou", "val/miou", "val/pixel_accuracy"):
        assert sorted(m.step for m in client.get_metric_history(train.info.run_id, key)) == [1, 2], key
    losses = [m.value for m in sorted(client.get_metric_history(train.info.run_id, "train/loss"), key=lambda m: m.step)]
    assert losses[1] < losses[0]  # it learns
    assert all(names.per_class_iou(names.TEST, c) in evaluate.data.metrics for c in ("background", "circle"))
    artifacts = {f.path for f in client.list_artifacts(train.info.run_id, names.SEGMENT_PREVIEW_DIR)}
    assert artifacts == {"previews/epoch_001.png", "previews/epoch_002.png"}  # every epoch of 2 (4 per run at most)
    evaluated = {f.path for d in ("plots", "eval", "previews") for f in client.list_artifacts(evaluate.info.run_id, d)}
    assert {"plots/per_class_iou.png", "eval/test_report.json", names.SEGMENT_TEST_PREVIEW} <= evaluated
    assert test_masks.targets["mask"]


@pytest.mark.slow
def test_segmenter_is_registered_with_its_classes_and_serves_masks(segment_run):
    import mlflow

    store, result = segment_run
    decision = result.outputs["decision"]
    assert decision.name == "shapes-segmenter" and decision.alias == names.CHAMPION
    info = mlflow.models.get_model_info("models:/shapes-segmenter@champion")
    assert info.metadata == {"task": "segmentation", "classes": CLASSES}
    from components.data.shards import read_split

    test = read_split(result.outputs["prepared"].manifest(), "test")
    images = test.images[:3]  # N×H×W×3 uint8, as a client has them
    model = mlflow.pyfunc.load_model("models:/shapes-segmenter@champion")
    local = model.predict(images)["mask"]
    assert local.shape == (3, 32, 32) and set(np.unique(local)) <= {0, 1, 2, 3}
    server, thread, base = serve_in_thread("models:/shapes-segmenter@champion")
    try:
        served = post(f"{base}/invocations", {"inputs": images.tolist()})["predictions"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert np.array_equal(np.asarray(served["mask"]), local)


@pytest.mark.slow
def test_bench_segment_times_the_segmentation_loop(ray_local, mlflow_store):
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("bench_segment", "data=shapes", "data.num_images=160", "data.image_size=32", "model.width=4",
                        "model.depth=2", "bench.steps=3", "bench.warmup_steps=1", "bench.batch_size=16",
                        "bench.preprocess_rows=64", "bench.rounds=1", "data.feed=ray_data")
    assert cfg.model.name == "unet"
    result = run_pipeline(cfg, command="test")
    metrics = mlflow_store.client().get_run(result.run_id).data.metrics
    ray_ips, torch_ips = (metrics[names.bench_metric(f"train_{k}_images_per_s")] for k in ("ray", "torch"))
    assert ray_ips > 0 and torch_ips > 0
    assert metrics[names.bench_metric("train_ray_vs_torch")] == pytest.approx(ray_ips / torch_ips)
    # native DDP on the same rows, masks included: the same loss trajectory as Ray Train's
    assert metrics[names.bench_metric("train_ddp_images_per_s")] > 0
    assert metrics[names.bench_metric("ddp_loss_gap")] <= 1e-6
