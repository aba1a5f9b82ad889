"""Stage ``evaluate``: the best checkpoint on the test split, touched here and only here (§2.2).

Logs the task's test metrics (``test/loss``, ``test/accuracy`` for a classifier) and its report (for a
classifier: the confusion matrix, per-class accuracy and the loss/accuracy curves). It also checks that
the serving path (raw inputs, pre-processing inside the model) predicts exactly what the evaluation
loop did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from components import engine
from components.data.shards import read_split
from components.data.types import RawSplit
from components.packaging import ModelSpec, load_package
from components.tasks import Task, build_task
from pipelines.config import Config
from pipelines.records import Evaluation, Prepared, Trained
from pipelines.services import names, tracking
from pipelines.services.progress import say


def numpy_batches(images: np.ndarray, labels: np.ndarray, batch_size: int,
                  extra: Mapping[str, np.ndarray] | None = None):
    """Rows as the tasks' batch preps take them; ``extra`` adds columns sliced alike (``mask``, ``boxes``)."""
    for i in range(0, len(labels), batch_size):
        yield {"image": images[i:i + batch_size], "label": labels[i:i + batch_size],
               **{k: v[i:i + batch_size] for k, v in (extra or {}).items()}}


def test_rows(prepared: Prepared) -> RawSplit:
    """The test split with its dense targets (``data.max_eval_rows`` applied)."""
    return read_split(prepared.manifest(), "test").take(np.arange(prepared.rows["test"]))


def dense_columns(split: RawSplit) -> dict[str, np.ndarray]:
    """A split's dense targets under their batch column names (``mask``, ``boxes``, ``box_labels``)."""
    columns = {"mask": split.masks, "boxes": split.boxes, "box_labels": split.box_labels}
    return {k: v for k, v in columns.items() if v is not None}


def test_split(prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """The raw uint8 test images and labels (``data.max_eval_rows`` applied)."""
    test = read_split(prepared.manifest(), "test")
    n = prepared.rows["test"]
    return test.images[:n], test.labels[:n]


def task_of(cfg: Config, spec: ModelSpec) -> Task:
    """The package's task, with the loss of ``train.loss`` (val and test losses are never smoothed)."""
    return build_task(spec.task, num_classes=spec.num_classes, loss=cfg.train.loss)


def load_for_evaluation(cfg: Config, model_dir: str | Path) -> tuple[Any, ModelSpec]:
    """A package as every evaluation here scores it: a classifier with test-time views channels-last, as
    training ran (its views run in the weights' layout, 3x faster on a CPU)."""
    model, spec = load_package(model_dir)
    if spec.tta and cfg.train.channels_last:
        import torch

        model = model.to(memory_format=torch.channels_last)
    return model, spec


def score_package(cfg: Config, prepared: Prepared, model_dir: str | Path) -> tuple[float, float]:
    """(test loss, the task's primary metric) of any model package on this test split, as served.

    ``retrain`` scores the champion with it on the challenger's split, so the two numbers compare.
    """
    model, spec = load_for_evaluation(cfg, model_dir)
    task = task_of(cfg, spec)
    test = test_rows(prepared)
    meter, _, _ = engine.evaluate(model, task, map(task.batch_prep(), numpy_batches(
        test.images, test.labels, 512, dense_columns(test))))
    metrics = meter.compute()
    return metrics["loss"], metrics[task.primary]


def run(cfg: Config, prepared: Prepared, trained: Trained) -> Evaluation:
    manifest = prepared.manifest()
    model, spec = load_for_evaluation(cfg, trained.best_checkpoint)
    task = task_of(cfg, spec)
    test = test_rows(prepared)
    images = test.images
    meter, preds, true = engine.evaluate(model, task, map(task.batch_prep(), numpy_batches(
        images, test.labels, 512, dense_columns(test))), collect=True)
    # The serving path (raw inputs, pre-processing inside the model) must predict what the loop did.
    served = task.predict(model, images[:256])
    if not np.array_equal(next(iter(served.values())), preds[:256]):
        raise RuntimeError("the serving path (raw uint8 images) disagrees with the evaluation loop; "
                           "preprocessing is not inside the model as it should be.")
    metrics = meter.compute()
    report = task.report(preds, true, spec.classes, trained.history, f"{spec.name} on {manifest.name}")
    tracking.log_metrics({names.metric(names.TEST, k): v for k, v in metrics.items()})
    tracking.log_metrics({names.metric(names.TEST, k): v for k, v in report.metrics.items()})
    for path, figure in report.figures.items():
        tracking.log_figure(figure, path)
    for path, document in report.documents.items():
        tracking.log_json(document, path)
    say(f"evaluate: test {task.primary} {metrics[task.primary]:.4f}, loss {metrics['loss']:.4f} "
        f"on {len(true):,} examples")
    example = images[:2].copy()
    if example.ndim == 4 and example.shape[-1] == 1:
        example = example[..., 0]  # grey models take N×H×W, the layout users have
    return Evaluation(model_dir=str(Path(trained.best_checkpoint)), metrics=metrics, example=example,
                      task=task.name, primary=task.primary, higher_is_better=task.higher_is_better)
