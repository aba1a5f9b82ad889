"""Object detection (§11): ingest → preprocess → train (Ray Train) → evaluate → register.

    visionray run detect                                     # shapes scenes, single-shot CenterNet
    visionray run detect model=two_stage                     # proposals → RoIAlign → box head (R-CNN line)
    visionray run detect data=coco data.path=annotations/instances_val2017.json data.image_size=128
    visionray run detect model.backbone_from=models:/shapes-classifier@champion   # a ResNet-20 classifier's backbone

Each Ray Train worker streams its shard of scenes with their boxes (``boxes``, ``box_labels`` columns),
mirrors half of them with their boxes (``data.augment.flip``) and trains the detector's own loss through
the one engine; every epoch decodes the val split and logs ``val/map50`` (the primary metric: it picks the
checkpoint) and ``val/map`` (COCO mAP@[.5:.95]) from score histograms the ranks add. Predictions on a few
val images are drawn beside the ground truth every ``detect.image_every`` epochs
(``predictions/epoch_NNN.png`` on the train run). The test split is scored exactly (``components.detection_metrics.coco_map``) from the
served form's own detections: ``test/map50``, ``test/map``, ``test/map75``, a per-class AP table and figure.
Registered as ``<dataset>-detector`` (``shapes-detector``), gated on test mAP@0.5; served: uint8 N×H×W×3 →
per image ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [...], "scores": [...]}``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import Config, ConfigError
from pipelines.flows.kit import (
    backbone_init,
    prepare,
    register,
    stage,
    test_metrics,
    workdir_for,
)
from pipelines.records import Evaluation, Prepared, Trained
from pipelines.services import names, tracking
from pipelines.services.progress import say

STAGES = ("ingest", "preprocess", "train", "evaluate", "register")
#: Test images drawn with their predictions by the evaluate stage.
FIGURE_IMAGES = 8


def detector_spec(cfg: Config, manifest):
    from components.models.detectors import DETECTORS
    from components.packaging import ModelSpec

    if not manifest.targets.get("boxes"):
        raise ConfigError(f"data={cfg.data.name} has no boxes to detect; the detect pipeline reads data=shapes, "
                          f"fashion_scenes or coco.")
    if cfg.model.name not in DETECTORS:
        raise ConfigError(f"model={cfg.model.name} is not a detector; choose one of {', '.join(DETECTORS)}.")
    h, _, c = manifest.shape
    return ModelSpec(name=cfg.model.name, in_channels=c, num_classes=len(manifest.classes), image_size=h,
                     classes=tuple(manifest.classes), normalization=cfg.data.normalization,
                     width=cfg.model.width or None, depth=cfg.model.depth, batchnorm=cfg.model.batchnorm,
                     task="detection")


def preview_options(cfg: Config, prepared: Prepared) -> dict[str, Any]:
    """The detection task's options on the workers: the first val images and their boxes, drawn with the
    predictions every ``detect.image_every`` epochs."""
    from components.data.shards import read_split

    if not cfg.detect.image_every:
        return {}
    val = read_split(prepared.manifest(), "val")
    k = min(cfg.detect.images, len(val))
    return {"preview": {"images": val.images[:k].copy(), "boxes": val.boxes[:k].copy(),
                        "labels": val.box_labels[:k].copy()},
            "preview_every": cfg.detect.image_every, "epochs": cfg.train.epochs,
            "preview_score": cfg.detect.score_threshold}


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines.stages import train

    out: dict[str, Any] = {}
    workdir = workdir_for(cfg, parent.run_id)
    prepared = prepare(cfg, parent, workdir, out)
    manifest = out["manifest"]
    spec = detector_spec(cfg, manifest)
    if "train" not in cfg.stages or prepared is None:
        return out
    with stage("train", parent, cfg) as run_id:
        init_state = backbone_init(cfg, spec) if cfg.model.backbone_from else None
        trained = out["trained"] = train.run(cfg, prepared, parent.uri, run_id, f"{cfg.pipeline}-{parent.run_id}",
                                             workdir, init_state=init_state, spec=spec,
                                             task_options=preview_options(cfg, prepared))
    if "evaluate" in cfg.stages:
        with stage("evaluate", parent, cfg):
            evaluation = out["evaluation"] = evaluate(cfg, prepared, trained)
        tracking.log_metrics(test_metrics(evaluation))
        register(cfg, parent, evaluation, spec.num_classes, out, manifest.version)
    return out


def _split_arrays(prepared: Prepared, split: str):
    from components.data.shards import read_split

    data = read_split(prepared.manifest(), split)
    n = prepared.rows[split]
    return data.images[:n], data.boxes[:n], data.box_labels[:n]


def evaluate(cfg: Config, prepared: Prepared, trained: Trained) -> Evaluation:
    """The best checkpoint on the test split: its loss, and exact COCO mAP of the detections the served
    form returns (score >= the evaluation cut, NMS inside), a per-class AP table and figures."""
    import torch

    from components.dense_plots import png_bytes
    from components.detection_metrics import coco_map
    from components.detection_plots import boxes_grid, per_class_ap_figure
    from components.models.detectors import decode, detection_loss
    from components.packaging import load_package
    from components.tasks import build_task
    from components.tasks.detection import EVAL_SCORE

    model, spec = load_package(trained.best_checkpoint)
    task = build_task(spec.task, num_classes=spec.num_classes, classes=spec.classes)
    images, boxes, labels = _split_arrays(prepared, "test")
    prep = task.batch_prep()
    loss_sum, found = 0.0, []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), 128):
            sl = slice(start, start + 128)
            x, targets = prep({"image": images[sl], "boxes": boxes[sl], "box_labels": labels[sl]})
            outputs = model(x)
            loss_sum += float(detection_loss(outputs, targets)) * len(x)
            found += [(b.numpy(), s.numpy(), c.numpy()) for b, s, c in decode(outputs, EVAL_SCORE)]
    # The served form (raw uint8 in, thresholds and NMS inside the model) must find what the loop did.
    served = task.predict(model, images[:64], {"score_threshold": EVAL_SCORE})
    for mine, theirs in zip(found, served):
        if not (np.array_equal(mine[2], theirs["labels"])
                and np.allclose(mine[0], np.asarray(theirs["boxes"], dtype=np.float64).reshape(-1, 4), atol=0.01)):
            raise RuntimeError("the serving path (raw uint8 images) disagrees with the evaluation loop; "
                               "preprocessing is not inside the model as it should be.")
    truth = [(b[c >= 0], c[c >= 0]) for b, c in zip(boxes, labels)]
    result = coco_map(found, truth, spec.num_classes)
    metrics = {"loss": loss_sum / max(len(images), 1), "map50": result["map50"], "map": result["map"],
               "map75": result["map75"]}
    tracking.log_metrics({names.metric(names.TEST, k): v for k, v in metrics.items()})
    gt_counts = np.bincount(labels[labels >= 0], minlength=spec.num_classes)
    tracking.log_table([{"class": c, "ap50": a50, "ap": a, "objects": int(n)} for c, a50, a, n in
                        zip(spec.classes, result["per_class_ap50"], result["per_class_ap"], gt_counts)],
                       "eval/per_class_ap.json")
    tracking.log_figure(per_class_ap_figure(spec.classes, result["per_class_ap50"], result["per_class_ap"],
                                            f"{spec.name} on {prepared.manifest().name}: test AP per class"),
                        "plots/per_class_ap.png")
    k = min(FIGURE_IMAGES, len(images))
    shown = task.predict(model, images[:k], {"score_threshold": cfg.detect.score_threshold})
    with tempfile.TemporaryDirectory(prefix="visionray-detect-") as tmp:
        path = Path(tmp) / "test_predictions.png"  # ground truth beside predictions, first test images
        path.write_bytes(png_bytes(boxes_grid(images[:k], (boxes[:k], labels[:k]), shown, spec.classes)))
        tracking.log_artifact(path, "plots")
    report = task.report(np.zeros(0), np.zeros(0), spec.classes, trained.history, f"{spec.name} detector")
    for path, figure in report.figures.items():
        tracking.log_figure(figure, path)
    say(f"evaluate: test mAP@0.5 {metrics['map50']:.4f}, mAP@[.5:.95] {metrics['map']:.4f} on {len(images):,} "
        f"images ({int(gt_counts.sum()):,} objects)")
    return Evaluation(trained.best_checkpoint, metrics, images[:2].copy(), task=task.name, primary=task.primary,
                      higher_is_better=task.higher_is_better)
