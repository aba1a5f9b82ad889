"""A training hook that keeps a detector's predictions on a few fixed images every few epochs, and the
figure that draws them over the ground truth.

    hooks = [(PredictionSnapshots, {"images": val_images[:8].tolist(), "every": 2})]
    # rank 0 writes predictions.json into the checkpoint's extras (every snapshot so far, so the
    # latest checkpoint has them all); the driver draws one figure per snapshot:
    prediction_figure(images, (gt_boxes, gt_labels), snapshot, classes, "epoch 4")

The images travel in the hook's kwargs (a few small uint8 arrays), the snapshots in its state, so a
resumed worker keeps the ones it had.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from components.hooks import TrainHook

SNAPSHOT_FILE = "predictions.json"


class PredictionSnapshots(TrainHook):
    def __init__(self, images: list, every: int = 2, epochs: int = 0, score_threshold: float = 0.3):
        self.images = np.asarray(images, dtype=np.uint8)
        self.every, self.epochs, self.score_threshold = max(1, int(every)), int(epochs), score_threshold
        self.snapshots: dict[str, list[dict[str, Any]]] = {}

    def end_epoch(self, model: nn.Module, epoch: int, out_dir: Path | None) -> dict[str, float]:
        number = epoch + 1
        if number % self.every == 0 or number == self.epochs:  # and always the last epoch
            was_training = model.training
            with torch.no_grad():
                found = model.detect_uint8(self.images, self.score_threshold)
            model.train(was_training)
            self.snapshots[str(number)] = [{"boxes": b.tolist(), "scores": s.tolist(), "labels": c.tolist()}
                                           for b, s, c in found]
        if out_dir is not None and self.snapshots:
            (out_dir / SNAPSHOT_FILE).write_text(json.dumps(self.snapshots))
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots = dict(state.get("snapshots", {}))


def read_snapshots(extras: str | Path | None) -> dict[int, list[dict[str, Any]]]:
    """Epoch number → per-image predictions, from a trained run's extras folder ({} when there are none)."""
    if not extras:
        return {}
    found = sorted(Path(extras).rglob(SNAPSHOT_FILE))
    return {int(k): v for k, v in json.loads(found[0].read_text()).items()} if found else {}


def prediction_figure(images: np.ndarray, truth: tuple[np.ndarray, np.ndarray], predictions: Sequence[dict],
                      classes: Sequence[str], title: str):
    """A grid of images with ground-truth boxes (dashed white) and predicted boxes (coloured by class,
    with score)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    n = len(images)
    cols = min(4, n) or 1
    rows = -(-n // cols) or 1
    fig = Figure(figsize=(2.4 * cols, 2.5 * rows + 0.4))
    FigureCanvasAgg(fig)
    colours = ["tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:cyan", "tab:pink",
               "tab:olive", "tab:brown", "tab:gray"]
    gt_boxes, gt_labels = truth
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        img = images[i]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        for box, label in zip(gt_boxes[i], gt_labels[i]):
            if label >= 0:
                ax.add_patch(Rectangle((box[0] - 0.5, box[1] - 0.5), box[2] - box[0], box[3] - box[1], fill=False,
                                       ec="white", ls="--", lw=1))
        p = predictions[i] if i < len(predictions) else {"boxes": [], "scores": [], "labels": []}
        for box, score, label in zip(p["boxes"], p["scores"], p["labels"]):
            c = colours[int(label) % len(colours)]
            ax.add_patch(Rectangle((box[0] - 0.5, box[1] - 0.5), box[2] - box[0], box[3] - box[1], fill=False, ec=c, lw=1.5))
            name = classes[int(label)] if int(label) < len(classes) else str(label)
            ax.text(box[0], box[1] - 1, f"{name} {score:.2f}", color=c, fontsize=6, va="bottom")
        ax.set_axis_off()
    fig.suptitle(f"{title}: predictions (coloured) over ground truth (dashed)", fontsize=9)
    return fig


def per_class_ap_figure(classes: Sequence[str], ap50: Sequence[float], ap: Sequence[float], title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 0.7 * len(classes) + 2), 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    ax.bar(x - 0.2, np.nan_to_num(ap50), 0.4, label="AP@0.5")
    ax.bar(x + 0.2, np.nan_to_num(ap), 0.4, label="AP@[.5:.95]")
    ax.set_xticks(x, list(classes), rotation=30, ha="right", fontsize=8)
    ax.set(ylim=(0, 1), ylabel="average precision", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
