"""Classification metrics in plain NumPy (no torch, no Ray, no MLflow).

Conventions
-----------
* A confusion matrix ``cm`` is a ``(C, C)`` ``int64`` array whose **rows are the
  true class** and **columns the predicted class**: ``cm[t, p]`` counts samples
  of true class ``t`` predicted as ``p``.
* Per-class accuracy (recall) of a class with no samples is ``nan``, not 0: an
  empty class has no accuracy, and a 0 would be indistinguishable from a class
  that is always wrong.  Use ``np.nanmean`` to average over the classes present.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "confusion_matrix",
    "per_class_accuracy",
    "accuracy",
    "paired_gain_stderr",
    "RunningStats",
]


def confusion_matrix(preds, labels, num_classes: int) -> np.ndarray:
    """Return the ``(num_classes, num_classes)`` int64 confusion matrix.

    ``preds`` and ``labels`` are integer class ids of the same length (any
    array-like; they are flattened).  Rows are true labels, columns are
    predictions.  Raises ``ValueError`` on a length mismatch or an id outside
    ``[0, num_classes)``.
    """
    num_classes = int(num_classes)
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    preds = np.asarray(preds).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if preds.shape != labels.shape:
        raise ValueError(
            f"preds and labels differ in length: {preds.size} vs {labels.size}"
        )
    if preds.size == 0:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    for name, arr in (("preds", preds), ("labels", labels)):
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise ValueError(f"{name} must hold integer class ids")
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} holds ids outside [0, {num_classes}): min={lo}, max={hi}"
            )
    preds = preds.astype(np.int64, copy=False)
    labels = labels.astype(np.int64, copy=False)
    flat = labels * num_classes + preds
    cm = np.bincount(flat, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Per-class accuracy (recall): ``diag(cm) / row_sums(cm)`` as float64.

    A class with no true samples (an all-zero row) gets ``nan``.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be square (C, C), got shape {cm.shape}")
    support = cm.sum(axis=1).astype(np.float64)
    correct = np.diag(cm).astype(np.float64)
    out = np.full(cm.shape[0], np.nan, dtype=np.float64)
    np.divide(correct, support, out=out, where=support > 0)
    return out


def accuracy(cm: np.ndarray) -> float:
    """Overall accuracy ``trace(cm) / sum(cm)``; ``nan`` for an empty matrix."""
    cm = np.asarray(cm)
    total = cm.sum()
    if total == 0:
        return float("nan")
    return float(np.trace(cm) / total)


def paired_gain_stderr(preds_a, preds_b, labels) -> float:
    """Standard error of ``accuracy(a) - accuracy(b)`` when both models predict the same samples.

    Paired: the per-sample differences ``[a right] - [b right]`` (each -1, 0 or 1) carry the noise,
    so images both models get right or both get wrong add nothing; their sample standard deviation over
    ``sqrt(n)``. A gain of about 2 standard errors is what chance alone rarely gives. ``nan`` below 2
    samples.
    """
    labels = np.asarray(labels)
    a, b = np.asarray(preds_a), np.asarray(preds_b)
    if not a.shape == b.shape == labels.shape:
        raise ValueError(f"predictions and labels must have one shape, got {a.shape}, {b.shape}, {labels.shape}")
    n = labels.size
    if n < 2:
        return float("nan")
    d = (a == labels).astype(np.float64) - (b == labels).astype(np.float64)
    return float(d.std(ddof=1) / np.sqrt(n))


@dataclass
class RunningStats:
    """Sums of loss, correct predictions and sample count over batches.

    ``loss_sum`` is the *sum* of per-sample losses (i.e. ``mean_loss * batch``),
    so that merging partial stats (e.g. from several workers) is exact.
    ``loss`` and ``accuracy`` are ``nan`` while ``count == 0``.
    """

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0

    def update(self, loss_sum: float, correct: int, count: int) -> "RunningStats":
        """Add one batch; returns ``self`` for chaining."""
        self.loss_sum += float(loss_sum)
        self.correct += int(correct)
        self.count += int(count)
        return self

    def merge(self, other: "RunningStats") -> "RunningStats":
        """Return a new ``RunningStats`` with the sums of ``self`` and ``other``."""
        return RunningStats(
            loss_sum=self.loss_sum + other.loss_sum,
            correct=self.correct + other.correct,
            count=self.count + other.count,
        )

    @property
    def loss(self) -> float:
        """Mean per-sample loss."""
        return self.loss_sum / self.count if self.count else float("nan")

    @property
    def accuracy(self) -> float:
        """Fraction of samples predicted correctly."""
        return self.correct / self.count if self.count else float("nan")

    # -- the classification meter of components.tasks (one float vector: DDP ranks all-reduce it)
    def add(self, outputs, targets, loss: float) -> None:
        n = int(targets.shape[0])
        self.update(loss * n, int((outputs.detach().argmax(1) == targets).sum()), n)

    def totals(self) -> list[float]:
        return [self.loss_sum, float(self.correct), float(self.count)]

    def with_totals(self, totals) -> "RunningStats":
        loss_sum, correct, count = totals
        return RunningStats(float(loss_sum), int(round(correct)), int(round(count)))

    def compute(self) -> dict[str, float]:
        return {"loss": self.loss, "accuracy": self.accuracy}
