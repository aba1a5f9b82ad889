"""Semantic segmentation as a task (course notes §11): images → a class score per pixel, per-pixel
cross-entropy, mean intersection-over-union ↑.

    task = Segmentation.build(num_classes=4, classes=("background", "circle", "square", "triangle"))
    x, y = task.batch_prep(augment=Augment(flip=True), seed=0, epoch=3)(batch)  # batch: image, mask, idx
    outputs, loss = task.forward(model, x, y)                                      # (N, K, H, W), scalar
    meter = task.meter(); meter.add(outputs, y, float(loss)); meter.compute()      # loss, miou, pixel_accuracy
    task.predict(model, uint8_images)                                              # {"mask": (N, H, W) int64}

The meter sums a K×K confusion matrix of pixels (rows true, columns predicted) with the loss, so DDP ranks
add theirs in one all-reduce and mIoU is computed from the whole split's counts, not averaged over
batches. IoU of class k = TP / (TP + FP + FN); mIoU averages it over the classes that occur in the truth
or the prediction (background included, as Pascal VOC scores it). Mask pixels of 255 are ignored by the
loss and the metrics. Augmentation moves the masks with the pixels (``components.dense_augment``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.tasks.base import Report, Task, TensorSpec

IGNORE = 255


def confusion(predicted: Tensor, truth: Tensor, k: int) -> Tensor:
    """(K, K) int64 pixel counts, rows the true class, columns the predicted; 255 in ``truth`` is skipped."""
    keep = truth != IGNORE
    index = truth[keep].long() * k + predicted[keep].long()
    return torch.bincount(index, minlength=k * k).reshape(k, k)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU from a (K, K) confusion matrix; NaN for a class absent from truth and prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def scores(cm: np.ndarray) -> dict[str, float]:
    """``miou`` and ``pixel_accuracy`` of a confusion matrix (NaN when it counts no pixel)."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    iou = iou_from_confusion(cm)
    return {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "pixel_accuracy": float(np.trace(cm) / total) if total else float("nan")}


@dataclass
class SegmentationStats:
    """Summed loss × images, images, and the K×K pixel confusion matrix, flattened into one vector."""

    k: int
    sums: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sums = self.sums or [0.0] * (2 + self.k * self.k)

    def add(self, outputs: Tensor, targets: Tensor, loss: float) -> None:
        n = int(targets.shape[0])
        self.sums[0] += float(loss) * n
        self.sums[1] += n
        cm = confusion(outputs.detach().argmax(1), targets, self.k).flatten().tolist()
        for i, c in enumerate(cm):
            self.sums[2 + i] += c

    def matrix(self) -> np.ndarray:
        return np.asarray(self.sums[2:], dtype=np.float64).reshape(self.k, self.k)

    def totals(self) -> list[float]:
        return list(self.sums)

    def with_totals(self, totals: Sequence[float]) -> "SegmentationStats":
        return SegmentationStats(self.k, [float(t) for t in totals])

    def compute(self) -> dict[str, float]:
        return {"loss": self.sums[0] / max(self.sums[1], 1.0), **scores(self.matrix())}


@dataclass(frozen=True)
class SegBatchPrep:
    """A batch of rows (``image`` uint8 NHWC, ``mask`` N×H×W, ``idx``) → float NCHW in [0, 1] and long
    masks; augmented alike when training, seeded by (seed, epoch, first row id) as ``BatchPrep`` is."""

    augment: Any = None  # a components.augment.Augment: its flip and crop move the masks, its jitter does not
    seed: int = 0
    epoch: int = 0
    channels_last: bool = False
    pin_memory: bool = False

    def __call__(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        from components.dense_augment import augment_batch

        images = torch.from_numpy(np.array(batch["image"], dtype=np.uint8, order="C"))
        x = (images.unsqueeze(-1) if images.ndim == 3 else images).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.from_numpy(np.array(batch["mask"], dtype=np.int64, order="C"))
        x, y, _, _ = augment_batch(x, y, None, None, self.augment, self.seed, self.epoch, batch.get("idx"))
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
        return (x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y)


@dataclass
class Segmentation(Task):
    name: ClassVar[str] = "segmentation"
    primary: ClassVar[str] = "miou"
    higher_is_better: ClassVar[bool] = True

    num_classes: int = 2
    classes: tuple[str, ...] = ()
    #: A few val images and masks drawn after some epochs (rank 0): {"images": uint8, "masks": uint8}.
    preview: Mapping[str, Any] | None = None
    preview_every: int = 0  # draw after every this many epochs, and after the last (0: never)
    epochs: int = 0

    @classmethod
    def build(cls, num_classes: int, classes: Sequence[str] = (), preview: Mapping[str, Any] | None = None,
              preview_every: int = 0, epochs: int = 0, **_: Any) -> "Segmentation":
        return cls(num_classes, tuple(classes) or tuple(str(i) for i in range(num_classes)), preview,
                   preview_every, epochs)

    def batch_prep(self, *, augment: Any = None, seed: int = 0, epoch: int = 0, channels_last: bool = False,
                   pin_memory: bool = False) -> SegBatchPrep:
        return SegBatchPrep(augment, seed, epoch, channels_last, pin_memory)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs.float(), targets, ignore_index=IGNORE)

    def meter(self) -> SegmentationStats:
        return SegmentationStats(self.num_classes)

    def loss_floor(self) -> float:
        return math.log(self.num_classes) if self.num_classes > 1 else 0.0

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.argmax(1)

    def epoch_artifacts(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Prediction over ground truth for the preview images, as PNG bytes, every few epochs."""
        number = epoch + 1
        if not self.preview or not self.preview_every or (number % self.preview_every and number != self.epochs):
            return {}
        from components.dense_plots import overlay_grid, png_bytes

        images = np.asarray(self.preview["images"], dtype=np.uint8)
        predicted, _ = model.predict_uint8(images)
        grid = overlay_grid(images, np.asarray(self.preview["masks"]), predicted.numpy())
        return {f"previews/epoch_{number:03d}.png": png_bytes(grid)}

    def predict(self, model: nn.Module, raw: np.ndarray, params: Mapping[str, Any] | None = None
                ) -> dict[str, np.ndarray]:
        ids, _ = model.predict_uint8(raw)
        return {"mask": ids.numpy().astype(np.int64)}

    def served_schema(self, example: np.ndarray, model_meta: Mapping[str, Any]) -> tuple[list[TensorSpec],
                                                                                          list[TensorSpec]]:
        h, w = example.shape[1:3]
        return [TensorSpec("uint8", (-1, *example.shape[1:]))], [TensorSpec("int64", (-1, h, w), "mask")]

    def report(self, predictions: np.ndarray, targets: np.ndarray, classes: Sequence[str],
               history: Mapping[str, Sequence[tuple[int, float]]], title: str) -> Report:
        from components.plots import (
            confusion_matrix_figure,
            curves_figure,
            per_class_accuracy_figure,
        )
        from components.tasks.classification import _metric_safe

        classes = list(classes)
        cm = confusion(torch.from_numpy(np.asarray(predictions)), torch.from_numpy(np.asarray(targets)),
                       len(classes)).numpy()
        iou = iou_from_confusion(cm)
        return Report(
            metrics={f"iou_{c}": float(v) for c, v in zip(_metric_safe(classes), iou) if np.isfinite(v)},
            figures={"plots/confusion_matrix.png": confusion_matrix_figure(cm, classes, title="Pixel confusion matrix"),
                     "plots/per_class_iou.png": per_class_accuracy_figure(iou, classes, title="Per-class IoU"),
                     "plots/curves.png": curves_figure(history, title)},
            documents={"eval/test_report.json": {
                "classes": classes, "confusion_matrix": cm.tolist(),
                "per_class_iou": {c: (float(v) if np.isfinite(v) else None) for c, v in zip(classes, iou)},
                **scores(cm)}})
