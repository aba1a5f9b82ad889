"""The detect pipeline end to end on a tiny config: shapes scenes, a real local Ray, a real MLflow store, the
registered detector loaded back as the pyfunc ``mlflow models serve`` runs and asked over HTTP.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_detect.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.config import ConfigError
from pipelines.services import names
from tests.conftest import shrunk_config
from tests.scoring import post, serve_in_thread

TINY = ("data=shapes", "data.num_images=160", "data.image_size=32", "model.width=8", "model.depth=8",
        "train.epochs=2", "train.batch_size=16", "detect.image_every=1", "detect.images=4")


@pytest.fixture(scope="module")
def detect_run(ray_local, tmp_path_factory):
    """One tiny detect run: training, evaluation, registry and serving are all checked on it."""
    from pipelines.dispatch import run_pipeline
    from tests.conftest import Store, store_context

    store = Store(tmp_path_factory.mktemp("detect"))
    with store_context(store):
        result = run_pipeline(shrunk_config("detect", *TINY), command="test")
        yield store, result


@pytest.mark.slow
def test_detect_trains_scores_and_logs_its_figures(detect_run):
    store, result = detect_run
    client = store.client()
    parent = client.get_run(result.run_id)
    metrics = parent.data.metrics
    for key in ("test/map50", "test/map", "test/map75"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test/map"] <= metrics["test/map50"]
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    train = next(r for r in runs if r.data.tags.get(names.STAGE_TAG) == "train")
    for key in ("val/map50", "val/map", "val/loss", "train/loss"):
        assert sorted(m.step for m in client.get_metric_history(train.info.run_id, key)) == [1, 2], key
    assert "train/map50" not in train.data.metrics  # detections are decoded on val only, not logged as NaN
    losses = [m.value for m in sorted(client.get_metric_history(train.info.run_id, "train/loss"), key=lambda m: m.step)]
    assert losses[1] < losses[0]  # it learns
    train_files = {f.path for f in client.list_artifacts(train.info.run_id, "predictions")}
    assert train_files == {"predictions/epoch_001.png", "predictions/epoch_002.png"}
    evaluate = next(r for r in runs if r.data.tags.get(names.STAGE_TAG) == "evaluate")
    eval_files = {f.path for d in ("eval", "plots") for f in client.list_artifacts(evaluate.info.run_id, d)}
    assert {"eval/per_class_ap.json", "plots/per_class_ap.png", "plots/test_predictions.png"} <= eval_files
    table = json.loads(Path(client.download_artifacts(evaluate.info.run_id, "eval/per_class_ap.json")).read_text())
    assert table["columns"] == ["class", "ap50", "ap", "objects"]
    assert [row[0] for row in table["data"]] == ["circle", "square", "triangle"]


@pytest.mark.slow
def test_the_registered_detector_serves_boxes_per_raw_image(detect_run):
    import mlflow
    import numpy as np

    from components.data.shards import read_split

    store, result = detect_run
    assert result.outputs["decision"].name == "shapes-detector"
    version = store.client().get_model_version_by_alias("shapes-detector", names.CHAMPION)
    assert version.tags[names.PRIMARY_METRIC_TAG] == "test/map50"
    images = read_split(result.outputs["manifest"], "test").images[:3]  # N×32×32×3 uint8, as a client has them
    model = mlflow.pyfunc.load_model("models:/shapes-detector@champion")
    assert model.metadata.metadata["classes"] == ["circle", "square", "triangle"]
    local = model.predict(images, params={"score_threshold": 0.01})
    assert len(local) == 3
    for image in local:
        assert set(image) == {"boxes", "labels", "scores"}
        boxes = np.array(image["boxes"]).reshape(-1, 4)
        assert len(boxes) == len(image["labels"]) == len(image["scores"])
        assert (boxes >= 0).all() and (boxes <= 32).all() and set(image["labels"]) <= {0, 1, 2}
        assert all(s >= 0.01 for s in image["scores"])
    server, thread, base = serve_in_thread("models:/shapes-detector@champion")
    try:
        served = post(f"{base}/invocations", {"inputs": images.tolist(), "params": {"score_threshold": 0.01}})
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert served["predictions"] == local


def test_detect_refuses_data_without_boxes_and_a_classifier_model():
    from pipelines.dispatch import preflight

    with pytest.raises(ConfigError, match="data with boxes"):
        preflight(shrunk_config("detect", "data=digits"))
    with pytest.raises(ConfigError, match="model=resnet is not a detector"):
        preflight(shrunk_config("detect", "data=shapes", "model=resnet20"))
    with pytest.raises(ConfigError, match="is a detector: run it with"):
        preflight(shrunk_config("quickstart", "model=centernet"))
    from components.data.errors import DataError

    with pytest.raises(DataError, match="data=coco needs data.path"):
        preflight(shrunk_config("detect", "data=coco"))


def test_the_backbone_starts_from_a_classifier_package(mlflow_store, tmp_path):
    """model.backbone_from: a ResNet classifier's stem and stages start the detector, its heads stay fresh;
    a classifier of another shape is refused in one sentence naming the key."""
    import mlflow
    import torch

    from components.models import Normalize
    from components.package_base import ModelSpec, save_package
    from pipelines.flows.kit import backbone_init

    classifier_spec = ModelSpec(name="resnet", in_channels=3, num_classes=4, image_size=32, classes=tuple("abcd"),
                                width=8, depth=8)
    torch.manual_seed(1)
    classifier = classifier_spec.build(Normalize.identity(3))
    save_package(tmp_path / "resnet8", classifier, classifier_spec)
    detector = ModelSpec(name="centernet", in_channels=3, num_classes=3, image_size=32, classes=("x", "y", "z"),
                         width=8, depth=8, task="detection")
    cfg = shrunk_config("detect", "data=shapes", "model.width=8", "model.depth=8",
                        f"model.backbone_from={tmp_path / 'resnet8'}")
    with mlflow.start_run():
        state = backbone_init(cfg, detector)
    assert torch.equal(state["backbone.stages.0.conv1.weight"], classifier.net.stages[0].conv1.weight)
    assert "fc.weight" not in state and "heat.2.bias" in state
    wider = ModelSpec(**{**detector.to_dict(), "width": 16, "classes": detector.classes})
    with mlflow.start_run(), pytest.raises(ConfigError, match="model.backbone_from=.*same ResNet depth and width"):
        backbone_init(cfg, wider)


def test_a_segmenter_on_a_resnet_trunk_starts_from_a_classifier_package(mlflow_store, tmp_path):
    """The same mechanism for segment's fcn_resnet: the classifier's trunk, fresh score heads, the source tagged."""
    import mlflow
    import torch

    from components.models import Normalize
    from components.package_base import ModelSpec, save_package
    from pipelines.flows.kit import backbone_init
    from pipelines.stages.train import model_spec

    classifier_spec = ModelSpec(name="resnet", in_channels=3, num_classes=4, image_size=32, classes=tuple("abcd"),
                                width=8, depth=8)
    torch.manual_seed(2)
    classifier = classifier_spec.build(Normalize.identity(3))
    save_package(tmp_path / "resnet8", classifier, classifier_spec)
    cfg = shrunk_config("segment", "model=fcn_resnet", "model.width=8", "model.depth=8",
                        f"model.backbone_from={tmp_path / 'resnet8'}")

    class _Manifest:  # the two fields model_spec reads
        shape, classes = (32, 32, 3), ("circle", "square", "triangle")

    spec = model_spec(cfg, _Manifest())
    assert (spec.task, spec.num_classes) == ("segmentation", 4)  # background + three classes
    with mlflow.start_run() as run:
        state = backbone_init(cfg, spec)
    assert torch.equal(state["backbone.stages.2.conv2.weight"], classifier.net.stages[2].conv2.weight)
    assert "fc.weight" not in state and "heads.3.weight" in state
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert tags[names.TRANSFER_SOURCE_TAG] == str(tmp_path / "resnet8")
