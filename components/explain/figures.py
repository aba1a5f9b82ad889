"""The explain pipeline's figures, as ``matplotlib.figure.Figure`` objects (no pyplot, safe headless).

    fig = attribution_figure(images, {"gradients": heat, ...}, labels, classes)   # image, then one map per method
    fig = embedding_figure(xy, labels, classes, "t-SNE of the penultimate layer")
    fig = accuracy_vs_eps_figure([0, 0.05, 0.1], {"fgsm": [...], "pgd": [...]})
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from components.plots import _new_figure, image_grid_figure


def to_hwc(images: np.ndarray) -> np.ndarray:
    """N×C×H×W floats → N×H×W×C, as the grids take them."""
    return np.transpose(np.asarray(images), (0, 2, 3, 1))


def attribution_figure(images: np.ndarray, maps: Mapping[str, np.ndarray], labels: Sequence[int],
                       classes: Sequence[str], title: str = "") -> Figure:
    """One column per image: the image on top, then each method's importance map (N×H×W), each map
    scaled to its own largest magnitude (signed maps: red supports the class, blue counts against it)."""
    images = to_hwc(images)
    n, rows = len(images), 1 + len(maps)
    fig = _new_figure(1.4 + 1.3 * n, 1.3 * rows + 0.5, constrained=True)
    axes = np.atleast_2d(fig.subplots(rows, n, squeeze=False))
    for c in range(n):
        ax = axes[0, c]
        ax.imshow(images[c].squeeze(-1) if images.shape[-1] == 1 else images[c], cmap="gray", vmin=0, vmax=1)
        ax.set_title(classes[int(labels[c])] if int(labels[c]) < len(classes) else str(labels[c]), fontsize=8)
        for r, (method, heat) in enumerate(maps.items(), start=1):
            h = np.asarray(heat[c], dtype=np.float64)
            signed = bool((h < 0).any())
            scale = float(np.abs(h).max()) or 1.0
            axes[r, c].imshow(h / scale, cmap="bwr" if signed else "inferno", vmin=-1 if signed else 0, vmax=1)
            if c == 0:
                axes[r, c].set_ylabel(method.replace("_", "\n"), fontsize=8)
    axes[0, 0].set_ylabel("image", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def embedding_figure(points: np.ndarray, labels: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """A 2-D embedding, one colour per class, with a legend of class names."""
    fig = _new_figure(7.5, 6.0, constrained=True)
    ax = fig.add_subplot()
    palette = [f"C{i}" for i in range(10)]
    for k in np.unique(labels):
        at = labels == k
        ax.scatter(points[at, 0], points[at, 1], s=2, alpha=0.6, color=palette[int(k) % 10],
                   label=classes[int(k)] if int(k) < len(classes) else str(k))
    ax.legend(markerscale=5, fontsize=8, loc="best")
    ax.set(title=title, xticks=[], yticks=[])
    return fig


def accuracy_vs_eps_figure(eps: Sequence[float], accuracy: Mapping[str, Sequence[float]]) -> Figure:
    """Test accuracy against the attack's L∞ radius, one line per attack."""
    fig = _new_figure(5.0, 3.6, constrained=True)
    ax = fig.add_subplot()
    for attack, values in accuracy.items():
        ax.plot(eps, values, marker="o", label=attack)
    ax.set(xlabel="ε (L∞, pixels in [0, 1])", ylabel="accuracy", ylim=(0, 1), title="accuracy under attack")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def faithfulness_figure(rows: Sequence[Mapping[str, float]]) -> Figure:
    """Deletion (lower is better) and insertion (higher is better) AUC per method, side by side."""
    fig = _new_figure(7.0, 3.4, constrained=True)
    left, right = fig.subplots(1, 2)
    methods = [str(r["method"]) for r in rows]
    for ax, key, better in ((left, "deletion_auc", "lower"), (right, "insertion_auc", "higher")):
        bars = ax.barh(methods, [float(r[key]) for r in rows], color="tab:blue")
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
        ax.set(title=f"{key.replace('_', ' ')} ({better} is better)", xlim=(0, 1.1))
        ax.invert_yaxis()
    return fig


def grid(rows: Sequence[np.ndarray], row_titles: Sequence[str], labels: Sequence[int] | None = None,
         classes: Sequence[str] | None = None, title: str = "") -> Figure:
    """Rows of N×C×H×W float images (components.plots.image_grid_figure)."""
    return image_grid_figure([to_hwc(r) for r in rows], list(row_titles), class_names=classes, labels=labels,
                             title=title)
