"""Stage ``evaluate``: the best checkpoint on the test split, touched here and only here (§2.2).

Logs ``test/loss`` and ``test/accuracy`` (on the stage and its parent run), the confusion matrix,
per-class accuracy and the loss/accuracy curves. It also checks that the serving path
(``predict_uint8`` on raw images) predicts exactly what the evaluation loop did.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from components import engine
from components.data.shards import read_split
from components.losses import build_criterion
from components.metrics import confusion_matrix, per_class_accuracy
from components.packaging import load_package
from components.plots import (
    confusion_matrix_figure,
    curves_figure,
    per_class_accuracy_figure,
)
from pipelines.config import Config
from pipelines.records import Evaluation, Prepared, Trained
from pipelines.services import names, tracking
from pipelines.services.progress import say


def numpy_batches(images: np.ndarray, labels: np.ndarray, batch_size: int):
    for i in range(0, len(labels), batch_size):
        yield {"image": images[i:i + batch_size], "label": labels[i:i + batch_size]}


def test_split(prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """The raw uint8 test images and labels (``data.max_eval_rows`` applied)."""
    test = read_split(prepared.manifest(), "test")
    n = prepared.rows["test"]
    return test.images[:n], test.labels[:n]


def score_package(cfg: Config, prepared: Prepared, model_dir: str | Path) -> tuple[float, float]:
    """(test loss, test accuracy) of any model package on this test split, as served: raw images in.

    ``retrain`` scores the champion with it on the challenger's split, so the two numbers compare.
    """
    model, _ = load_package(model_dir)
    images, labels = test_split(prepared)
    stats, _, _ = engine.evaluate(model, build_criterion(cfg.train.loss),
                                  map(engine.BatchPrep(), numpy_batches(images, labels, 512)))
    return stats.loss, stats.accuracy


def run(cfg: Config, prepared: Prepared, trained: Trained) -> Evaluation:
    manifest = prepared.manifest()
    model, spec = load_package(trained.best_checkpoint)
    images, labels = test_split(prepared)
    prep = engine.BatchPrep()
    stats, preds, true = engine.evaluate(model, build_criterion(cfg.train.loss),
                                         map(prep, numpy_batches(images, labels, 512)), collect=True)
    served, _ = model.predict_uint8(images[:256])
    if not np.array_equal(served.numpy(), preds[:256]):
        raise RuntimeError("the serving path (raw uint8 images) disagrees with the evaluation loop; "
                           "preprocessing is not inside the model as it should be.")
    cm = confusion_matrix(preds, true, spec.num_classes)
    per_class = per_class_accuracy(cm)
    final = {names.TEST_LOSS: stats.loss, names.TEST_ACCURACY: stats.accuracy}
    tracking.log_metrics(final)
    tracking.log_metrics({f"test/accuracy_{c}": float(a) for c, a in
                          zip(_safe_names(spec.classes), per_class) if np.isfinite(a)})
    classes = list(spec.classes)
    tracking.log_figure(confusion_matrix_figure(cm, classes), "plots/confusion_matrix.png")
    tracking.log_figure(per_class_accuracy_figure(per_class, classes), "plots/per_class_accuracy.png")
    tracking.log_figure(curves_figure(trained.history, f"{spec.name} on {manifest.name}"), "plots/curves.png")
    tracking.log_json({"classes": classes, "confusion_matrix": cm.tolist(),
                       "per_class_accuracy": [float(a) for a in per_class]}, "eval/test_report.json")
    say(f"evaluate: test accuracy {stats.accuracy:.4f}, loss {stats.loss:.4f} on {len(true):,} images")
    with torch.no_grad():
        example = images[:2].copy()
    if example.shape[-1] == 1:
        example = example[..., 0]  # grey models take N×H×W, the layout users have
    return Evaluation(model_dir=str(Path(trained.best_checkpoint)), test_loss=stats.loss,
                      test_accuracy=stats.accuracy, example=example)


def _safe_names(classes) -> list[str]:
    """Class names as metric-key suffixes (MLflow keys allow letters, digits, _ - . / and spaces)."""
    return ["".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in c) for c in classes]
