"""Pictures of detections: predicted boxes over ground truth, in NumPy and Pillow (a Ray Train worker draws
them after an epoch, and workers never import matplotlib), and the per-class AP bars (matplotlib, driver).

    from components.detection_plots import boxes_grid
    from components.dense_plots import png_bytes

    grid = boxes_grid(images, (gt_boxes, gt_labels), detections, classes)   # uint8 (H', W', 3)
    open("predictions.png", "wb").write(png_bytes(grid))

Each image is shown twice side by side, enlarged: the ground-truth boxes on the left, the predictions on
the right (coloured by class, with the class's initial and the score).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from components.dense_plots import PALETTE


def _colour(label: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in PALETTE[1 + int(label) % (len(PALETTE) - 1)])


def _draw(image: np.ndarray, boxes: Sequence, labels: Sequence, scores: Sequence | None, classes: Sequence[str],
          scale: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    canvas = Image.fromarray(np.ascontiguousarray(rgb.repeat(scale, 0).repeat(scale, 1)))
    pen = ImageDraw.Draw(canvas)
    for i, (box, label) in enumerate(zip(boxes, labels)):
        if label < 0:
            continue
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        pen.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=_colour(label), width=2)
        name = classes[int(label)][:1] if int(label) < len(classes) else str(label)
        pen.text((x1 + 2, y1 + 1), name if scores is None else f"{name} {float(scores[i]):.2f}", fill=_colour(label))
    return np.asarray(canvas)


def boxes_grid(images: np.ndarray, truth: tuple[np.ndarray, np.ndarray], detections: Sequence[Any],
               classes: Sequence[str], scale: int = 3, gap: int = 4) -> np.ndarray:
    """Rows of [ground truth | predictions] for each image. ``detections`` per image: (boxes, scores,
    labels) arrays or the served dicts."""
    images = np.asarray(images, dtype=np.uint8)
    images = images[..., None] if images.ndim == 3 else images
    n, h, w, _ = images.shape
    hs, ws = h * scale, w * scale
    grid = np.full((max(n, 1) * (hs + gap) - gap, 2 * ws + gap, 3), 255, dtype=np.uint8)
    gt_boxes, gt_labels = truth
    for i in range(n):
        found = detections[i] if i < len(detections) else ([], [], [])
        if isinstance(found, dict):
            found = (found["boxes"], found["scores"], found["labels"])
        boxes, scores, labels = (np.asarray(v).tolist() for v in found)
        top = i * (hs + gap)
        grid[top:top + hs, :ws] = _draw(images[i], gt_boxes[i], gt_labels[i], None, classes, scale)
        grid[top:top + hs, ws + gap:] = _draw(images[i], boxes, labels, scores, classes, scale)
    return grid


def per_class_ap_figure(classes: Sequence[str], ap50: Sequence[float], ap: Sequence[float], title: str):
    """AP@0.5 and AP@[.5:.95] per class as bars (matplotlib; the driver draws it)."""
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
