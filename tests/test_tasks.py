"""The task seam, exercised by a second task: per-pixel classification of 8×8 synthetic images.

The tiny task goes through the same engine, the same epoch metrics and best-epoch selection as the
train stage, the same champion gate and the same model-package and serving round trip as image
classification; its primary metric (pixel error) is lower-is-better, so every place that ranks by a
task's metric has to honour the direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from components import engine, tasks
from components.batches import _writable
from components.models import BUILDERS
from components.packaging import ModelSpec, load_package, save_package
from components.tasks import Classification, Report, Task, TensorSpec


class PixelMeter:
    """Sums of loss, wrong pixels and pixels: one vector, as the all-reduce wants it."""

    def __init__(self, sums=(0.0, 0.0, 0.0, 0.0)):
        self.loss_sum, self.wrong, self.pixels, self.count = map(float, sums)

    def add(self, outputs: Tensor, targets: Tensor, loss: float) -> None:
        n = int(targets.shape[0])
        self.loss_sum += loss * n
        self.wrong += float((outputs.argmax(1) != targets).sum())
        self.pixels += float(targets.numel())
        self.count += n

    def totals(self) -> list[float]:
        return [self.loss_sum, self.wrong, self.pixels, self.count]

    def with_totals(self, totals) -> "PixelMeter":
        return PixelMeter(totals)

    def compute(self) -> dict[str, float]:
        return {"loss": self.loss_sum / max(self.count, 1), "pixel_error": self.wrong / max(self.pixels, 1)}


@dataclass
class PixelTask(Task):
    name: ClassVar[str] = "pixels"
    primary: ClassVar[str] = "pixel_error"
    higher_is_better: ClassVar[bool] = False
    num_classes: int = 2

    def batch_prep(self, **_: Any):
        def prep(batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
            x = torch.from_numpy(_writable(batch["image"])).float().div_(255.0).unsqueeze(1)
            return x, torch.from_numpy(_writable(batch["mask"])).long()
        return prep

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.cross_entropy(outputs, targets)

    def meter(self) -> PixelMeter:
        return PixelMeter()

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.argmax(1)

    def predict(self, model: nn.Module, raw: np.ndarray, params=None) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.asarray(raw, dtype=np.uint8)).float().div_(255.0).unsqueeze(1)
        model.eval()
        with torch.no_grad():
            return {"mask": model(x).argmax(1).numpy().astype(np.int64)}

    def served_schema(self, example, model_meta):
        return [TensorSpec("uint8", (-1, 8, 8))], [TensorSpec("int64", (-1, 8, 8), "mask")]

    def report(self, predictions, targets, classes, history, title) -> Report:
        return Report(metrics={"foreground_error": float((predictions != targets)[targets == 1].mean())})


def tiny_fcn(c: int, k: int, s: int, *, dropout: float, batchnorm: bool) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, k, 3, padding=1))


def squares(n: int, seed: int) -> dict[str, np.ndarray]:
    """Noisy 8×8 images with one bright square; the mask marks the square's pixels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, size=(n, 8, 8)).astype(np.uint8)
    masks = np.zeros((n, 8, 8), dtype=np.int64)
    for i in range(n):
        size = rng.integers(2, 5)
        r, c = rng.integers(0, 8 - size + 1, size=2)
        images[i, r:r + size, c:c + size] = rng.integers(170, 256, size=(size, size))
        masks[i, r:r + size, c:c + size] = 1
    return {"image": images, "mask": masks}


def batches(data: dict[str, np.ndarray], size: int):
    for i in range(0, len(data["image"]), size):
        yield {k: v[i:i + size] for k, v in data.items()}


@pytest.fixture
def pixel_task(monkeypatch) -> PixelTask:
    monkeypatch.setitem(tasks.TASKS, "pixels", lambda **_: PixelTask())
    monkeypatch.setitem(BUILDERS, "tinyfcn", tiny_fcn)
    return PixelTask()


def spec_for_pixels() -> ModelSpec:
    return ModelSpec(name="tinyfcn", in_channels=1, num_classes=2, image_size=8, classes=("background", "square"),
                     task="pixels")


def train_epochs(task: Task, model: nn.Module, train, val, epochs: int) -> list[dict[str, float]]:
    """The train stage's per-epoch loop without Ray: the engine, then the epoch metrics it logs."""
    from pipelines.stages.train import epoch_metrics

    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    history = []
    for epoch in range(epochs):
        prep = task.batch_prep(seed=0, epoch=epoch)
        train_meter = engine.train_one_epoch(model, task, opt, map(prep, batches(train, 32)))
        val_meter, _, _ = engine.evaluate(model, task, map(task.batch_prep(), batches(val, 64)))
        history.append(epoch_metrics(task, train_meter, val_meter, float("nan"), torch.device("cpu")))
    return history


def test_a_second_task_trains_through_the_one_engine_and_is_selected_by_its_direction(pixel_task):
    torch.manual_seed(0)
    train, val = squares(256, seed=1), squares(128, seed=2)
    model = spec_for_pixels().build()
    history = train_epochs(pixel_task, model, train, val, epochs=6)
    # The epoch metrics carry the task's own keys, on both splits, and its gap.
    assert {"train/pixel_error", "val/pixel_error", "train/val_pixel_error_gap", "val/loss"} <= set(history[0])
    errors = [h["val/pixel_error"] for h in history]
    foreground = val["mask"].mean()  # predicting "background" everywhere scores this error
    assert errors[-1] < 0.5 * foreground, (errors, foreground)
    # Best-epoch selection honours lower-is-better: the epoch with the smallest val error, not the largest.
    best = pixel_task.best(range(len(history)), key=lambda e: history[e]["val/pixel_error"])
    assert errors[best] == min(errors) and (min(errors) < max(errors))
    # The same history ranked the classification way (higher is better) would pick the worst epoch.
    assert tasks.select_best(range(len(errors)), key=errors.__getitem__, higher_is_better=True) == \
        int(np.argmax(errors))


def test_the_champion_gate_compares_in_the_task_direction(pixel_task):
    from pipelines.services.registry import should_promote

    # Pixel error: 0.05 beats the champion's 0.08; 0.09 does not.
    assert should_promote(0.05, 0.08, pixel_task.higher_is_better)
    assert not should_promote(0.09, 0.08, pixel_task.higher_is_better)
    # Accuracy: the other way round.
    classification = Classification.build(num_classes=10)
    assert should_promote(0.91, 0.90, classification.higher_is_better)
    assert not should_promote(0.89, 0.90, classification.higher_is_better)
    assert pixel_task.better(0.05, 0.08) and not classification.better(0.05, 0.08)
    assert pixel_task.better(0.5, None) and pixel_task.better(0.5, math.nan)


def test_a_package_records_its_task_and_serves_in_its_form(pixel_task, tmp_path):
    from pipelines.services.serving import TaskModel

    torch.manual_seed(0)
    spec = spec_for_pixels()
    model = spec.build()
    train_epochs(pixel_task, model, squares(128, seed=3), squares(32, seed=4), epochs=2)
    save_package(tmp_path / "pkg", model, spec)
    loaded, loaded_spec = load_package(tmp_path / "pkg")
    assert loaded_spec.task == "pixels" and loaded_spec == spec
    raw = squares(5, seed=5)["image"]
    expected = pixel_task.predict(model, raw)["mask"]
    assert expected.shape == (5, 8, 8)
    # The served model (the MLflow pyfunc registered models run) rebuilds the task from the package.
    served = TaskModel()
    served.load_context(type("Context", (), {"artifacts": {"package": str(tmp_path / "pkg")}})())
    assert served.task.name == "pixels"
    np.testing.assert_array_equal(served.predict(None, raw)["mask"], expected)


def test_classification_is_the_default_task_of_old_packages(tmp_path):
    spec = ModelSpec(name="softmax", in_channels=1, num_classes=3, image_size=8, classes=("a", "b", "c"))
    save_package(tmp_path / "pkg", spec.build(), spec)
    arch = (tmp_path / "pkg" / "arch.json")
    import json

    d = json.loads(arch.read_text())
    del d["task"]  # a package written before tasks existed
    arch.write_text(json.dumps(d))
    model, loaded = load_package(tmp_path / "pkg")
    assert loaded.task == "classification"
    task = tasks.build_task(loaded.task, num_classes=3)
    out = task.predict(model, np.zeros((2, 8, 8), dtype=np.uint8))
    assert out["class"].shape == (2,) and out["probabilities"].shape == (2, 3)
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        tasks.build_task("nope")
