"""The task seam: the few things a task tells the one engine, evaluation, selection, the gate and serving.

    task = build_task("classification", num_classes=10, loss="softmax", label_smoothing=0.1)
    prep = task.batch_prep(augment=Augment(flip=True), seed=0, epoch=3)   # numpy batch → (inputs, targets)
    outputs, loss = task.forward(model, *prep(batch))                      # what the engine backpropagates
    meter = task.meter(); meter.add(outputs, targets, float(loss)); meter.compute()
    served = task.predict(model, raw_uint8_images)                          # the registered model's output

A task names its primary metric and that metric's direction (accuracy ↑, mIoU ↑, bits per character ↓,
FID ↓): they pick the best epoch, the checkpoint Ray Train keeps and the champion. A task whose step is
not "one loss, one optimiser" (a GAN's alternating updates) overrides :meth:`Task.train_step`.
Plain PyTorch and NumPy: no Ray, no MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    ClassVar,
    Iterable,
    Mapping,
    Protocol,
    Sequence,
    TypeVar,
)

import numpy as np
from torch import Tensor, nn

T = TypeVar("T")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a served model: dtype name ("string": a column of strings), shape (-1: any
    size), column name."""

    dtype: str
    shape: tuple[int, ...]
    name: str | None = None


class Meter(Protocol):
    """Running sums over batches, as one float vector so DDP ranks add theirs in one all-reduce."""

    def add(self, outputs: Tensor, targets: Tensor, loss: float) -> None: ...

    def totals(self) -> list[float]: ...

    def with_totals(self, totals: Sequence[float]) -> "Meter": ...

    def compute(self) -> dict[str, float]: ...


@dataclass
class Report:
    """What evaluation logs for a task: metrics (without the split prefix), figures and JSON documents."""

    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # artifact path → matplotlib figure
    documents: dict[str, Any] = field(default_factory=dict)  # artifact path → JSON-serialisable


class Task:
    """One task family. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]
    primary: ClassVar[str]  # the metric that ranks epochs and models, e.g. "accuracy"
    higher_is_better: ClassVar[bool]
    #: Where batches come from: "rows" (Ray Data rows through :meth:`batch_prep`) or "stream" (a token
    #: stream each rank slices itself: ``stream_steps``/``stream_batches``, components.tasks.language_model).
    feed: ClassVar[str] = "rows"
    #: What one example of a batch is, for throughput lines ("img/s", "char/s").
    unit: ClassVar[str] = "img"
    #: What a served model is sent: "images" (uint8 N×H×W(×C)) or "text" (a column of strings).
    served_input: ClassVar[str] = "images"

    # -- training
    def batch_prep(self, *, augment: Any = None, seed: int = 0, epoch: int = 0, channels_last: bool = False,
                   pin_memory: bool = False) -> Callable[[Mapping[str, Any]], tuple[Any, Any]]:
        raise NotImplementedError

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def eval_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The loss reported on val and test (a task may train with a regularised variant)."""
        return self.loss(outputs, targets)

    def examples_per_step(self, batch: int) -> int:
        """How many ``unit`` one step of ``batch`` examples covers (a language model: batch x chunk length)."""
        return batch

    def infer(self, model: nn.Module, inputs: Any) -> Any:
        """The model's outputs for a batch (evaluation; a stateful task carries its state here)."""
        return model(inputs)

    def forward(self, model: nn.Module, inputs: Any, targets: Any) -> tuple[Tensor, Tensor]:
        outputs = self.infer(model, inputs)
        return outputs, self.loss(outputs, targets)

    #: Set by a task that owns its step (several optimisers); the engine then calls it instead.
    train_step: ClassVar[Callable[..., tuple[Tensor, Tensor]] | None] = None

    def meter(self) -> Meter:
        raise NotImplementedError

    def epoch_artifacts(self, model: nn.Module, epoch: int) -> dict[str, str]:
        """Text files rank 0 logs after each epoch (artifact path → content): a language model's samples."""
        return {}

    def loss_floor(self) -> float:
        """The loss of an untrained model (the explosion guard never reads a start below it)."""
        return 0.0

    def predictions(self, outputs: Tensor) -> Tensor:
        """What evaluation collects per example (class ids, per-pixel ids, ...)."""
        return outputs

    # -- selection and the gate
    def better(self, a: float, b: float | None) -> bool:
        """``a`` strictly beats ``b`` in this task's direction (anything beats a missing or NaN ``b``)."""
        return is_better(a, b, self.higher_is_better)

    def best(self, items: Iterable[T], key: Callable[[T], float]) -> T:
        """The item whose ``key`` is best in this task's direction (the first of equals)."""
        return select_best(items, key, self.higher_is_better)

    # -- serving and evaluation
    def predict(self, model: nn.Module, raw: Any, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The served form: raw input in (pre-processing inside), named outputs out; the first output is
        what :meth:`predictions` gives for the same input (evaluate checks that they agree). ``params``
        are the request's parameters (:meth:`served_params`)."""
        raise NotImplementedError

    def served_params(self) -> dict[str, Any]:
        """Parameters a request may pass beside its input (name → default), declared in the signature."""
        return {}

    def served_schema(self, example: np.ndarray, model_meta: Mapping[str, Any]) -> tuple[list[TensorSpec],
                                                                                          list[TensorSpec]]:
        raise NotImplementedError

    def report(self, predictions: np.ndarray, targets: np.ndarray, classes: Sequence[str],
               history: Mapping[str, Sequence[tuple[int, float]]], title: str) -> Report:
        return Report()


def is_better(a: float, b: float | None, higher_is_better: bool) -> bool:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return not (isinstance(a, float) and math.isnan(a))
    return a > b if higher_is_better else a < b


def select_best(items: Iterable[T], key: Callable[[T], float], higher_is_better: bool) -> T:
    best: T | None = None
    best_value: float | None = None
    for item in items:
        value = float(key(item))
        if best is None or is_better(value, best_value, higher_is_better):
            best, best_value = item, value
    if best is None:
        raise ValueError("no candidates to select from")
    return best
