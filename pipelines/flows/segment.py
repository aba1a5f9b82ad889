"""Semantic segmentation (§11): ingest → preprocess → train (Ray Train) → evaluate → register.

    visionray run segment                                  # shapes scenes, U-Net, test mIoU
    visionray run segment model=fcn                        # the FCN (transposed convolutions, added skips)
    visionray run segment model=fcn_resnet                 # the FCN's decoder on a ResNet-20 trunk
    visionray run segment model=fcn_resnet model.backbone_from=models:/shapes-classifier@champion
    visionray run segment data.num_images=2000 train.epochs=3

The stages are the classification pipeline's: the shards carry a mask per image, each Ray Train worker
streams its shard through the segmentation task's batch prep (flips and crops move the masks with the
pixels), per-pixel cross-entropy trains the net, and every epoch logs ``train/`` and ``val/`` ``loss``,
``miou`` and ``pixel_accuracy`` from confusion matrices summed over the workers. A few val images with
the prediction drawn over the ground truth are logged every few epochs (``previews/epoch_NNN.png``), the
test split's after evaluation (``previews/test.png``) beside the per-class IoU table
(``eval/test_report.json``, ``test/iou_<class>``). ``model=fcn_resnet`` starts its ResNet trunk from a
registered classifier of the same depth and width with ``model.backbone_from``, as the detectors do.
Registered as ``<dataset>-segmenter``, gated on test mIoU; served: uint8 N×H×W×3 in, per-pixel class ids
N×H×W out (``mask``), class names in the model's metadata (background first).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipelines.config import Config
from pipelines.flows.kit import (
    backbone_init,
    prepare,
    register,
    stage,
    test_metrics,
    workdir_for,
)
from pipelines.records import Evaluation, Prepared
from pipelines.services import names, tracking

STAGES = ("ingest", "preprocess", "train", "evaluate", "register")
PREVIEW_IMAGES = 6  # rows of the preview picture: enough to see the edges, small enough to read
PREVIEWS_PER_RUN = 4  # how many epochs draw one (the last always does)


def preview_options(cfg: Config, prepared: Prepared) -> dict[str, Any]:
    """The segmentation task's options on the workers: the first val images and masks to draw."""
    from components.data.shards import read_split

    val = read_split(prepared.manifest(), "val")
    return {"preview": {"images": val.images[:PREVIEW_IMAGES].copy(), "masks": val.masks[:PREVIEW_IMAGES].copy()},
            "preview_every": max(1, math.ceil(cfg.train.epochs / PREVIEWS_PER_RUN)), "epochs": cfg.train.epochs}


def log_test_preview(prepared: Prepared, evaluation: Evaluation, workdir: Path) -> None:
    """The evaluated model's prediction over the ground truth on the first test images."""
    from components.data.shards import read_split
    from components.dense_plots import overlay_grid, png_bytes
    from components.packaging import load_package

    model, _ = load_package(evaluation.model_dir)
    test = read_split(prepared.manifest(), "test")
    images, masks = test.images[:PREVIEW_IMAGES], test.masks[:PREVIEW_IMAGES]
    predicted, _ = model.predict_uint8(images)
    path = workdir / Path(names.SEGMENT_TEST_PREVIEW).name
    path.write_bytes(png_bytes(overlay_grid(images, masks, predicted.numpy())))
    tracking.log_artifact(path, names.SEGMENT_PREVIEW_DIR)


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines.stages import evaluate, train

    out: dict[str, Any] = {}
    workdir = workdir_for(cfg, parent.run_id)
    prepared = prepare(cfg, parent, workdir, out)
    manifest = out["manifest"]
    if "train" in cfg.stages:
        with stage("train", parent, cfg) as run_id:
            spec = train.model_spec(cfg, manifest)
            init_state = backbone_init(cfg, spec) if cfg.model.backbone_from else None
            trained = out["trained"] = train.run(cfg, prepared, parent.uri, run_id, f"{cfg.pipeline}-{parent.run_id}",
                                                 workdir, init_state=init_state, spec=spec,
                                                 task_options=preview_options(cfg, prepared))
    if "evaluate" in cfg.stages:
        with stage("evaluate", parent, cfg):
            evaluation = out["evaluation"] = evaluate.run(cfg, prepared, trained)
            log_test_preview(prepared, evaluation, workdir)
        tracking.log_metrics(test_metrics(evaluation))
        register(cfg, parent, evaluation, len(manifest.classes) + 1, out, manifest.version)  # + background
    return out
