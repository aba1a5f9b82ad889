"""Figures for training reports, as ``matplotlib.figure.Figure`` objects.

Every ``*_figure`` function builds a fresh ``Figure`` attached to an Agg canvas
and returns it without saving or showing it.  Nothing here touches
``matplotlib.pyplot`` or its global figure registry, so the functions are safe
to call from worker threads and on headless machines.  Use :func:`save_figure`
to write a PNG (or hand the figure to a tracker that logs figures).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "curves_figure",
    "confusion_matrix_figure",
    "per_class_accuracy_figure",
    "image_grid_figure",
    "weight_templates_figure",
    "activation_stats_figure",
    "zoo_figure",
    "save_figure",
]


def _new_figure(width: float, height: float, constrained: bool = False) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100,
                 layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    if constrained:
        fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    return fig


def _class_names(class_names: Sequence[str] | None, n: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(n)]
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"expected {n} class names, got {len(names)}")
    return names


# --------------------------------------------------------------------------- curves


def _panel_of(key: str) -> str | None:
    """Which panel of :func:`curves_figure` draws ``key``: loss, gap, metric, or none (lr, perf/...)."""
    leaf = key.rsplit("/", 1)[-1].lower()
    if "loss" in leaf:
        return "loss"
    if leaf.endswith("_gap"):
        return "gap"
    if key.lower().startswith(("train/", "val/", "test/", "eval/")) and not leaf.startswith("best"):
        return "metric"
    return None


def _metric_title(keys: Sequence[str]) -> str:
    leaves = sorted({k.rsplit("/", 1)[-1] for k in keys})
    if leaves and all("acc" in leaf.lower() for leaf in leaves):
        return "accuracy"
    return ", ".join(leaves) if leaves else "metric"


def curves_figure(
    history: Mapping[str, Sequence[tuple[int, float]]], title: str = ""
) -> Figure:
    """Loss, the task's metrics and the train/val gap against epoch, each on its own axis.

    ``history`` maps a metric name to ``(epoch, value)`` points, e.g.
    ``{"train/loss": [(1, 2.3), (2, 1.9)], "val/loss": [...], "train/accuracy": [...],
    "val/accuracy": [...], "train/val_accuracy_gap": [...]}``.  A key whose last ``/``-component
    contains ``"loss"`` goes to the loss panel; one ending in ``"_gap"`` (train minus val) to a third
    panel with its own scale and a zero line, so a small gap neither flattens the metric lines nor
    hides; any other ``train/``, ``val/``, ``test/`` key to the metric panel (accuracy, bits per
    character, BLEU-4, ...). Other keys (``lr``, ``perf/...``) are ignored. Points need not be sorted;
    epochs are drawn as they are given, on integer ticks. Without gap points there are two panels.
    """
    groups: dict[str, list[str]] = {"loss": [], "metric": [], "gap": []}
    for key in sorted(history):
        panel = _panel_of(key)
        if panel is not None and len(history[key]):
            groups[panel].append(key)
    order = ["loss", "metric"] + (["gap"] if groups["gap"] else [])
    fig = _new_figure(5.5 * len(order), 4.2)
    axes = fig.subplots(1, len(order))
    epochs = sorted({float(e) for panel in groups.values() for key in panel for e, _ in history[key]})
    titles = {"loss": "loss", "metric": _metric_title(groups["metric"]), "gap": "train − val gap"}
    for ax, panel in zip(axes, order):
        for key in groups[panel]:
            xs, ys = zip(*sorted((float(e), float(v)) for e, v in history[key]))
            style = "--" if key.lower().startswith(("val", "test", "eval")) else "-"
            ax.plot(xs, ys, style, marker="o" if len(xs) <= 30 else None, markersize=3, label=key,
                    color="tab:purple" if panel == "gap" else None)
        ax.set_title(titles[panel])
        ax.set_xlabel("epoch")
        ax.set_ylabel("train − val" if panel == "gap" else titles[panel])
        ax.grid(True, alpha=0.3)
        if 0 < len(epochs) <= 12:  # a short run: a tick per epoch (one epoch would get 0.96 ... 1.04)
            ax.set_xticks(epochs, [f"{e:g}" for e in epochs])
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        if panel == "gap":
            ax.axhline(0.0, color="0.4", linewidth=0.8)
        if groups[panel]:
            ax.legend(fontsize=9)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------- confusion matrix


def confusion_matrix_figure(
    cm: np.ndarray,
    class_names: Sequence[str] | None = None,
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Figure:
    """Heatmap of a ``(C, C)`` confusion matrix (rows true, columns predicted).

    With ``normalize`` the colours are row-normalised (recall per true class)
    and each cell shows the percentage above its count; otherwise colours and
    annotations are raw counts.  Cell annotations are dropped above 30 classes.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be square (C, C), got shape {cm.shape}")
    n = cm.shape[0]
    names = _class_names(class_names, n)
    counts = cm.astype(np.int64)
    if normalize:
        rows = counts.sum(axis=1, keepdims=True).astype(np.float64)
        values = np.divide(counts, rows, out=np.zeros(cm.shape, np.float64),
                           where=rows > 0)
        vmax = 1.0
    else:
        values = counts.astype(np.float64)
        vmax = max(float(values.max()), 1.0)

    side = min(max(5.0, 0.6 * n + 2.5), 20.0)
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of true class" if normalize else "count")

    ax.set_xticks(np.arange(n))
    ax.set_yticks(np.arange(n))
    ax.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title + (" (row-normalised)" if normalize else ""))
    # thin separators between cells
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.5)
    ax.tick_params(which="minor", length=0)

    if n <= 30:
        fontsize = 8 if n <= 12 else 6
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                if normalize:
                    text = f"{100 * v:.0f}%\n{counts[i, j]}" if n <= 15 else f"{100 * v:.0f}"
                else:
                    text = f"{counts[i, j]}"
                colour = "white" if v > 0.55 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour,
                        fontsize=fontsize, linespacing=1.0)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------- per-class accuracy


def per_class_accuracy_figure(
    acc: np.ndarray,
    class_names: Sequence[str] | None = None,
    title: str = "Per-class accuracy",
) -> Figure:
    """Horizontal bars of per-class accuracy in ``[0, 1]``, top to bottom in the
    order given, each labelled with its percentage.  ``nan`` (a class with no
    samples) draws no bar and is labelled ``n/a``.  A dashed line marks the
    mean over classes that have a value.
    """
    acc = np.asarray(acc, dtype=np.float64).reshape(-1)
    n = acc.size
    names = _class_names(class_names, n)
    fig = _new_figure(7, max(2.5, 0.35 * n + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(n)
    ax.barh(y, np.nan_to_num(acc, nan=0.0), color="tab:blue", height=0.7)
    for yi, v in zip(y, acc):
        label = "n/a" if np.isnan(v) else f"{100 * v:.1f}%"
        ax.text((0.0 if np.isnan(v) else v) + 0.01, yi, label,
                va="center", ha="left", fontsize=8, zorder=4,
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=0.5))
    if n and not np.all(np.isnan(acc)):
        mean = float(np.nanmean(acc))
        ax.axvline(mean, color="tab:red", linestyle="--", linewidth=1, zorder=3,
                   label=f"mean {100 * mean:.1f}%")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.set_ylim(n - 0.5, -0.5)  # first class at the top
    ax.set_xlim(0.0, 1.15)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("accuracy")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ images


def _to_display(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """One image (H, W), (H, W, 1) or (H, W, 3/4) -> array for imshow + cmap."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        img = img.astype(np.float64) / 255.0
    else:
        img = np.clip(img.astype(np.float64), 0.0, 1.0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return img, "gray"
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        return img, None
    raise ValueError(f"unsupported image shape {img.shape}; expected (H, W[, 1|3|4])")


def image_grid_figure(
    rows: Sequence[np.ndarray],
    row_titles: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
    title: str = "",
) -> Figure:
    """A grid of images, one row per array in ``rows``.

    Each row is ``(N, H, W, C)`` (or ``(N, H, W)``), ``uint8`` in ``[0, 255]`` or
    float in ``[0, 1]`` (clipped); ``C == 1`` is shown in grey.  Rows may hold
    different ``N``; the grid is as wide as the longest row.  ``row_titles``
    label each row on the left (e.g. ``"original"``, ``"aug 1"``, ...).
    ``labels`` gives one class id per column, written above the top row and
    mapped through ``class_names`` when given.
    """
    rows = [np.asarray(r) for r in rows]
    if not rows:
        raise ValueError("rows is empty")
    if row_titles is not None and len(row_titles) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(row_titles)} row titles")
    ncols = max(len(r) for r in rows)
    if ncols == 0:
        raise ValueError("all rows are empty")
    nrows = len(rows)
    has_labels = labels is not None
    cell = 1.3
    fig = _new_figure(
        1.2 + cell * ncols,
        cell * nrows + (0.35 if has_labels else 0.0) + (0.45 if title else 0.1),
        constrained=True,
    )
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(row):
                img, cmap = _to_display(row[c])
                ax.imshow(img, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            if c == 0 and row_titles is not None:
                ax.set_ylabel(str(row_titles[r]), rotation=0, ha="right",
                              va="center", fontsize=9, labelpad=6)
            if r == 0 and has_labels and c < len(labels):
                lab = labels[c]
                text = str(class_names[int(lab)]) if class_names is not None else str(lab)
                ax.set_title(text, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def weight_templates_figure(
    weights: np.ndarray,
    shape: Sequence[int],
    class_names: Sequence[str] | None = None,
    title: str = "Linear classifier templates",
    channels_first: bool = False,
) -> Figure:
    """Show each row of a linear classifier's ``(C, D)`` weight matrix as an image.

    ``shape`` is the image shape, ``(H, W)`` or ``(H, W, ch)`` (or ``(ch, H, W)``
    with ``channels_first=True``, for weights of a flattened torch tensor), with
    ``prod(shape) == D``.  A trailing bias column (``D == prod(shape) + 1``) is
    dropped.  Each template is min-max rescaled to ``[0, 1]`` on its own.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be (C, D), got shape {w.shape}")
    shape = tuple(int(s) for s in shape)
    d = math.prod(shape)
    if w.shape[1] == d + 1:
        w = w[:, :d]
    if w.shape[1] != d:
        raise ValueError(f"weights have {w.shape[1]} columns but shape {shape} needs {d}")
    n = w.shape[0]
    names = _class_names(class_names, n)

    lo = w.min(axis=1, keepdims=True)
    hi = w.max(axis=1, keepdims=True)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    w = (w - lo) / span

    ncols = min(n, 10)
    nrows = math.ceil(n / ncols)
    cell = 1.4
    fig = _new_figure(cell * ncols + 0.2, (cell + 0.25) * nrows + (0.5 if title else 0.1),
                      constrained=True)
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        img = w[k].reshape(shape)
        if channels_first and img.ndim == 3:
            img = np.moveaxis(img, 0, -1)
        img, cmap = _to_display(img)
        ax.imshow(img, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(names[k], fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- the zoo


def activation_stats_figure(stats: Sequence, title: str = "", max_panels: int = 10) -> Figure:
    """Lecture 6's init picture: per-layer mean and std of activations, and one histogram per layer.

    ``stats`` are :class:`components.diagnostics.LayerStats` (``name``, ``mean``, ``std``, ``sample``) in
    forward order. The top row plots mean and std against layer index; the bottom row holds up to
    ``max_panels`` histograms (evenly spaced layers when there are more), sharing the x range so
    shrinking or saturating activations stand out.
    """
    if not stats:
        raise ValueError("no layer statistics to plot")
    n = len(stats)
    shown = sorted({round(i * (n - 1) / max(1, min(n, max_panels) - 1)) for i in range(min(n, max_panels))})
    fig = _new_figure(max(8.0, 1.6 * len(shown)), 5.6, constrained=True)
    grid = fig.add_gridspec(2, len(shown))
    ax_mean = fig.add_subplot(grid[0, : max(1, len(shown) // 2)])
    ax_std = fig.add_subplot(grid[0, max(1, len(shown) // 2):] if len(shown) > 1 else grid[0, 0])
    layers = np.arange(1, n + 1)
    means = [float(s.mean) for s in stats]
    stds = [float(s.std) for s in stats]
    ax_mean.plot(layers, means, "o-")
    ax_mean.set(xlabel="layer", ylabel="mean", title="activation mean")
    ax_std.plot(layers, stds, "o-", color="tab:red")
    ax_std.set(xlabel="layer", ylabel="std", title="activation std")
    for ax in (ax_mean, ax_std):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlim(0.5, n + 0.5)
        ax.grid(True, alpha=0.3)
    # Zero-based axes: a 0.575-0.605 spread of stds is flat, not a zigzag; a mean axis always shows 0.
    lo, hi = min(0.0, *means), max(0.0, *means)
    pad = 0.05 * ((hi - lo) or 1.0)
    ax_mean.set_ylim(lo - (pad if lo < 0 else 0.0), hi + pad)
    ax_mean.axhline(0.0, color="0.4", linewidth=0.8)
    if all(s > 0 for s in stds) and max(stds) / min(stds) > 100:
        ax_std.set_yscale("log")  # collapsing or exploding activations span decades: no zero on a log axis
    else:
        ax_std.set_ylim(0.0, 1.08 * max(max(stds), 1e-12))
    lo = min(float(np.min(stats[i].sample)) for i in shown)
    hi = max(float(np.max(stats[i].sample)) for i in shown)
    if not hi > lo:
        lo, hi = lo - 1.0, hi + 1.0
    for col, i in enumerate(shown):
        ax = fig.add_subplot(grid[1, col])
        ax.hist(stats[i].sample, bins=40, range=(lo, hi), color="tab:blue")
        ax.set_title(f"layer {i + 1}\n{stats[i].std:.2g} std", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def zoo_figure(rows: Sequence[Mapping[str, object]], title: str = "") -> Figure:
    """Test accuracy against parameter count (log scale); bubble area = training time.

    ``rows`` are the zoo's comparison-table rows with keys ``model``, ``test_accuracy``, ``params`` and
    ``seconds``. Models without parameters (kNN) are drawn at 1 parameter.
    """
    if not rows:
        raise ValueError("no models to plot")
    fig = _new_figure(8, 5.2, constrained=True)
    ax = fig.add_subplot()
    seconds = np.array([max(float(r["seconds"]), 1e-3) for r in rows])
    params = np.array([max(float(r["params"]), 1.0) for r in rows])
    acc = np.array([float(r["test_accuracy"]) for r in rows])
    sizes = 40 + 1500 * seconds / seconds.max()
    ax.scatter(params, acc, s=sizes, alpha=0.45, c=np.arange(len(rows)), cmap="tab10", edgecolors="k")
    for r, x, y, t in zip(rows, params, acc, seconds):
        note = " (no learned parameters)" if float(r["params"]) <= 0 else ""
        ax.annotate(f"{r['model']}{note}\n{t:.0f}s", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="parameters", ylabel="test accuracy", title=title or "accuracy vs parameters (bubble: training time)")
    ax.grid(True, alpha=0.3)
    return fig


# ---------------------------------------------------------------------------- save


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at 100 dpi (creating parent folders), then close it.

    "Closing" clears the figure so its memory is freed; do not reuse ``fig``
    afterwards.  Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, format="png", dpi=100)
    finally:
        fig.clear()
    return path


# --------------------------------------------------------------------------- ensembles


def model_comparison_figure(labels: Sequence[str], val: Sequence[float], test: Sequence[float],
                            title: str = "") -> Figure:
    """Val and test accuracy of several models side by side (an ensemble's members and the ensemble)."""
    if not (len(labels) == len(val) == len(test)) or not labels:
        raise ValueError("labels, val and test must be non-empty and of one length")
    fig = _new_figure(max(5.0, 0.9 * len(labels) + 2), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(labels))
    ax.bar(x - 0.2, 100 * np.asarray(val), 0.4, label="val")
    ax.bar(x + 0.2, 100 * np.asarray(test), 0.4, label="test")
    low = 100 * min(min(val), min(test))
    ax.set_ylim(max(0.0, low - 2.0), min(100.0, 100 * max(max(val), max(test)) + 1.0))
    ax.set_xticks(x, [str(lb) for lb in labels], rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- sweeps

__all__ += ["parallel_coordinates_figure"]


def parallel_coordinates_figure(
    rows: Sequence[Mapping[str, object]],
    axes: Sequence[str],
    metric: str,
    log_axes: Sequence[str] = (),
    title: str = "",
) -> Figure:
    """One line per trial across one vertical axis per hyper-parameter, coloured by ``metric``.

    Numeric axes are scaled to [0, 1] between their extremes (``log_axes`` on a log scale); a
    categorical axis spaces its values evenly. Trials without ``metric`` are drawn grey and dashed.
    """
    from matplotlib import cm, colors

    columns = [*axes, metric]
    fig = _new_figure(max(6.0, 1.6 * len(columns)), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    scaled, ticks = {}, {}
    for col in columns:
        values = [r.get(col) for r in rows]
        numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(float(v))]
        if len(numeric) == len([v for v in values if v is not None]) and numeric:
            f = (lambda v: math.log10(v)) if col in log_axes and min(numeric) > 0 else float
            lo, hi = f(min(numeric)), f(max(numeric))
            span = (hi - lo) or 1.0
            scaled[col] = [None if v is None else (f(v) - lo) / span for v in values]
            ticks[col] = (min(numeric), max(numeric))
        else:
            cats = sorted({str(v) for v in values if v is not None})
            pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
            scaled[col] = [None if v is None else pos[str(v)] for v in values]
            ticks[col] = cats
    scores = [r.get(metric) for r in rows]
    finite = [float(v) for v in scores if isinstance(v, (int, float)) and math.isfinite(float(v))]
    norm = colors.Normalize(min(finite, default=0.0), max(finite, default=1.0))
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    xs = list(range(len(columns)))
    for i, score in enumerate(scores):
        ys = [scaled[c][i] for c in columns]
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if not pts:
            continue
        ok = isinstance(score, (int, float)) and math.isfinite(float(score))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-" if ok else "--", alpha=0.8,
                color=cmap(norm(float(score))) if ok else "0.6", linewidth=1.5 if ok else 1.0)
    for x, col in zip(xs, columns):
        ax.axvline(x, color="0.3", linewidth=0.8)
        t = ticks[col]
        if isinstance(t, tuple):
            fmt = "{:.3g}"
            ax.text(x, -0.06, fmt.format(t[0]), ha="center", va="top", fontsize=7)
            ax.text(x, 1.04, fmt.format(t[1]), ha="center", va="bottom", fontsize=7)
        else:
            for j, c in enumerate(t):
                ax.text(x + 0.03, j / (len(t) - 1) if len(t) > 1 else 0.5, c, fontsize=7, va="center")
    ax.set_xticks(xs, [c + (" (log)" if c in log_axes else "") for c in columns], rotation=20, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.1)
    ax.set_xlim(-0.3, len(columns) - 0.5)
    ax.set_title(title or f"{len(rows)} trials, coloured by {metric}")
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label=metric, fraction=0.04)
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------- RL

__all__ += ["return_curve_figure"]


def return_curve_figure(
    returns: Sequence[tuple[float, float]],
    greedy: Sequence[tuple[float, float]] = (),
    eval_return: float | None = None,
    target: float | None = None,
    xlabel: str = "environment steps",
    title: str = "",
) -> Figure:
    """An RL agent's learning curve: the mean training-episode return against ``xlabel``.

    ``returns`` and ``greedy`` (the periodic greedy checks, drawn as dots) are ``(x, return)`` points
    in any order; ``eval_return`` (the final greedy evaluation) is a dashed line, ``target`` (the
    stop return) a dotted one.
    """
    if not returns and not greedy:
        raise ValueError("no returns to plot")
    fig = _new_figure(8, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    if returns:
        xs, ys = zip(*sorted((float(x), float(y)) for x, y in returns))
        ax.plot(xs, ys, "-", color="tab:blue", label="training episodes (mean return)")
    if greedy:
        xs, ys = zip(*sorted((float(x), float(y)) for x, y in greedy))
        ax.plot(xs, ys, "o", color="tab:green", markersize=5, label="greedy check")
    if eval_return is not None and math.isfinite(eval_return):
        ax.axhline(eval_return, color="tab:red", linestyle="--", linewidth=1.2,
                   label=f"final greedy evaluation {eval_return:.1f}")
    if target is not None and math.isfinite(target):
        ax.axhline(target, color="0.3", linestyle=":", linewidth=1.0, label=f"stop return {target:g}")
    ax.set(xlabel=xlabel, ylabel="episode return", title=title or "return during training")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
