"""Image classification as a task: images → class logits, cross-entropy (or SVM) loss, accuracy ↑.

    task = Classification.build(num_classes=10, loss="softmax", label_smoothing=0.1)
    served = task.predict(model, images_uint8)   # {"class": (N,) int64, "probabilities": (N, C) float32}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from torch import Tensor, nn

from components.batches import BatchPrep
from components.losses import build_criterion
from components.metrics import RunningStats
from components.tasks.base import Report, Task, TensorSpec


@dataclass
class Classification(Task):
    name: ClassVar[str] = "classification"
    primary: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True

    criterion: nn.Module
    eval_criterion: nn.Module | None = None  # val/test loss; None: the training criterion
    num_classes: int = 0

    @classmethod
    def build(cls, num_classes: int, loss: str = "softmax", label_smoothing: float = 0.0,
              **_: Any) -> "Classification":
        # Val and test losses are computed without smoothing, so they compare across recipes.
        return cls(build_criterion(loss, label_smoothing=label_smoothing), build_criterion(loss), num_classes)

    def batch_prep(self, *, augment: Any = None, seed: int = 0, epoch: int = 0, channels_last: bool = False,
                   pin_memory: bool = False) -> BatchPrep:
        return BatchPrep(augment, seed, epoch, channels_last, pin_memory)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.criterion(outputs, targets)

    def eval_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (self.eval_criterion or self.criterion)(outputs.float(), targets)

    def meter(self) -> RunningStats:
        return RunningStats()

    def loss_floor(self) -> float:
        return math.log(self.num_classes) if self.num_classes > 1 else 0.0

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.argmax(1)

    def predict(self, model: nn.Module, raw: np.ndarray, params: Mapping[str, Any] | None = None
                ) -> dict[str, np.ndarray]:
        classes, probs = model.predict_uint8(raw)
        return {"class": classes.numpy().astype(np.int64), "probabilities": probs.numpy().astype(np.float32)}

    def served_schema(self, example: np.ndarray, model_meta: Mapping[str, Any]) -> tuple[list[TensorSpec],
                                                                                          list[TensorSpec]]:
        k = int(model_meta["num_classes"])
        return ([TensorSpec("uint8", (-1, *example.shape[1:]))],
                [TensorSpec("int64", (-1,), "class"), TensorSpec("float32", (-1, k), "probabilities")])

    def report(self, predictions: np.ndarray, targets: np.ndarray, classes: Sequence[str],
               history: Mapping[str, Sequence[tuple[int, float]]], title: str) -> Report:
        from components.metrics import confusion_matrix, per_class_accuracy
        from components.plots import (
            confusion_matrix_figure,
            curves_figure,
            per_class_accuracy_figure,
        )

        classes = list(classes)
        cm = confusion_matrix(predictions, targets, len(classes))
        per_class = per_class_accuracy(cm)
        return Report(
            metrics={f"accuracy_{c}": float(a) for c, a in zip(_metric_safe(classes), per_class) if np.isfinite(a)},
            figures={"plots/confusion_matrix.png": confusion_matrix_figure(cm, classes),
                     "plots/per_class_accuracy.png": per_class_accuracy_figure(per_class, classes),
                     "plots/curves.png": curves_figure(history, title)},
            documents={"eval/test_report.json": {"classes": classes, "confusion_matrix": cm.tolist(),
                                                 "per_class_accuracy": [float(a) for a in per_class]}})


def _metric_safe(classes: Sequence[str]) -> list[str]:
    """Class names as metric-key suffixes (MLflow keys allow letters, digits, _ - . / and spaces)."""
    return ["".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in c) for c in classes]
