"""Babysitting the learning process (CS231n §6.2) as pieces of the one training loop.

- :func:`expected_initial_loss`: what a classifier with near-zero scores must start at: ln C for
  softmax, C - 1 for the multiclass SVM with margin 1 (every wrong class sits at the margin).
- :class:`LinearDiagnostics`: a training hook for linear classifiers (``model=softmax`` or
  ``hoglinear``): measures the loss at iteration 0 on a fixed train batch, before any update, and
  returns it beside the expected value as the first epoch's metrics; on rank 0 it renders the
  weight rows as class-template images (§2.3) into the checkpoint's extras after every epoch.
- The loss-explosion guard (stop when the loss exceeds 3x its first value) is
  :class:`components.engine.ExplosionGuard`, set by ``train.explode_factor``; the overfit-a-subset
  mode is ``train.overfit_rows`` (pipelines.stages.babysit).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from components.hooks import TrainHook
from components.losses import build_criterion

INITIAL_LOSS_FILE = "initial_loss.json"
TEMPLATES_FILE = "class_templates.png"


def expected_initial_loss(loss: str, num_classes: int, margin: float = 1.0) -> float:
    """The loss of uniform (all-zero) scores: ln C (softmax) or (C - 1) · margin (SVM)."""
    if loss == "softmax":
        return math.log(num_classes)
    if loss == "svm":
        return (num_classes - 1) * margin
    raise ValueError(f"unknown loss {loss!r}")


def initial_loss(model: nn.Module, loss: str, images: np.ndarray, labels: np.ndarray) -> float:
    """The loss of ``model`` on raw uint8 images (N, H, W, C) without changing it (eval mode, no grad)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    was_training = model.training
    model.eval()  # BatchNorm in train mode would move its running statistics
    try:
        with torch.no_grad():
            return float(build_criterion(loss)(model(x).float(), torch.from_numpy(labels).long()))
    finally:
        model.train(was_training)


class LinearDiagnostics(TrainHook):
    """First-iteration loss check and class-template images for a linear classifier.

    ``sample`` is an ``.npz`` with ``image`` (uint8 N×H×W×C) and ``label``: a train batch the
    driver wrote where every worker can read it. ``keys`` names the two metrics.
    """

    def __init__(self, sample: str, loss: str, classes: list[str], keys: dict[str, str]):
        self.sample, self.loss, self.classes, self.keys = sample, loss, list(classes), keys
        self.value: float | None = None

    def setup(self, model: nn.Module) -> None:
        if self.value is not None:  # a restored worker keeps the value measured at the true start
            return
        with np.load(self.sample) as z:
            self.value = initial_loss(model, self.loss, z["image"], z["label"])

    def end_epoch(self, model: nn.Module, epoch: int, out_dir: Path | None) -> dict[str, float]:
        expected = expected_initial_loss(self.loss, len(self.classes))
        if out_dir is not None:
            (out_dir / INITIAL_LOSS_FILE).write_text(json.dumps(
                {"loss": self.loss, "initial": self.value, "expected": expected, "classes": len(self.classes)}))
            net = getattr(model, "net", model)
            if hasattr(net, "templates"):
                from components.plots import save_figure, weight_templates_figure

                t = net.templates().float().cpu()  # (C, ch, H, W)
                fig = weight_templates_figure(t.flatten(1).numpy(), tuple(t.shape[1:]), self.classes,
                                              title=f"class templates after epoch {epoch + 1}",
                                              channels_first=True)
                save_figure(fig, out_dir / TEMPLATES_FILE)
        if epoch != 0 or self.value is None:
            return {}
        return {self.keys["initial"]: self.value, self.keys["expected"]: expected}

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = state.get("value")
