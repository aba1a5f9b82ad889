"""Fast tests for components.metrics and components.plots (NumPy + Agg only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from components.metrics import (
    RunningStats,
    accuracy,
    confusion_matrix,
    per_class_accuracy,
)
from components.plots import (
    confusion_matrix_figure,
    curves_figure,
    image_grid_figure,
    per_class_accuracy_figure,
    save_figure,
    weight_templates_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES10 = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]


# ----------------------------------------------------------------------- metrics


def _loop_cm(preds, labels, c):
    cm = [[0] * c for _ in range(c)]
    for p, t in zip(preds, labels):
        cm[t][p] += 1
    return np.array(cm, dtype=np.int64)


@pytest.mark.parametrize("seed,c,n", [(0, 10, 1000), (1, 3, 7), (2, 100, 5000), (3, 1, 4)])
def test_confusion_matrix_matches_loop(seed, c, n):
    rng = np.random.default_rng(seed)
    preds = rng.integers(0, c, n)
    labels = rng.integers(0, c, n)
    cm = confusion_matrix(preds, labels, c)
    assert cm.dtype == np.int64
    assert cm.shape == (c, c)
    np.testing.assert_array_equal(cm, _loop_cm(preds.tolist(), labels.tolist(), c))
    assert cm.sum() == n


def test_confusion_matrix_orientation_and_edge_cases():
    # true 0 predicted as 2 -> row 0, column 2
    cm = confusion_matrix([2], [0], 3)
    assert cm[0, 2] == 1 and cm.sum() == 1
    np.testing.assert_array_equal(confusion_matrix([], [], 4), np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, -1], [0, 1], 3)


def test_per_class_accuracy_and_accuracy():
    cm = np.array([[3, 1, 0],
                   [0, 0, 0],   # empty class
                   [2, 0, 2]], dtype=np.int64)
    acc = per_class_accuracy(cm)
    assert acc.dtype == np.float64
    assert acc[0] == pytest.approx(0.75)
    assert math.isnan(acc[1])
    assert acc[2] == pytest.approx(0.5)
    assert accuracy(cm) == pytest.approx(5 / 8)
    assert math.isnan(accuracy(np.zeros((2, 2), np.int64)))


def test_per_class_accuracy_matches_direct_computation():
    rng = np.random.default_rng(7)
    preds = rng.integers(0, 10, 2000)
    labels = rng.integers(0, 10, 2000)
    acc = per_class_accuracy(confusion_matrix(preds, labels, 10))
    for k in range(10):
        assert acc[k] == pytest.approx(np.mean(preds[labels == k] == k))
    assert accuracy(confusion_matrix(preds, labels, 10)) == pytest.approx(np.mean(preds == labels))


def test_running_stats_merge_equals_combined():
    rng = np.random.default_rng(3)
    batches = [(float(rng.uniform(0, 50)), int(rng.integers(0, 20)), 20) for _ in range(9)]
    a, b, combined = RunningStats(), RunningStats(), RunningStats()
    for i, batch in enumerate(batches):
        (a if i % 2 else b).update(*batch)
        combined.update(*batch)
    merged = a.merge(b)
    assert merged.count == combined.count == 180
    assert merged.correct == combined.correct
    assert merged.loss == pytest.approx(combined.loss)
    assert merged.accuracy == pytest.approx(combined.accuracy)
    assert merged.loss == pytest.approx(sum(x[0] for x in batches) / 180)
    # merge does not mutate its operands
    assert a.count + b.count == 180
    empty = RunningStats()
    assert math.isnan(empty.loss) and math.isnan(empty.accuracy)
    assert empty.merge(a) == a


# ------------------------------------------------------------------------- plots


def _assert_png(fig, path):
    assert isinstance(fig, Figure)
    out = save_figure(fig, path)
    data = out.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC


def _history():
    h = {}
    for split, off in (("train", 0.0), ("val", 0.1)):
        h[f"{split}/loss"] = [(e, 2.3 / e + off) for e in range(1, 11)]
        h[f"{split}/accuracy"] = [(e, 0.1 + 0.08 * e - off) for e in range(1, 11)]
    return h


def test_curves_figure(tmp_path):
    _assert_png(curves_figure(_history(), "softmax on CIFAR-10"), tmp_path / "curves.png")
    # only a loss series, unsorted points
    _assert_png(curves_figure({"train/loss": [(2, 1.0), (1, 2.0)]}, "partial"),
                tmp_path / "partial.png")


@pytest.mark.parametrize("normalize", [True, False])
def test_confusion_matrix_figure(tmp_path, normalize):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    preds = np.where(rng.random(500) < 0.6, labels, rng.integers(0, 10, 500))
    cm = confusion_matrix(preds, labels, 10)
    cm[4] = 0  # an empty class must not break normalisation
    _assert_png(confusion_matrix_figure(cm, NAMES10, normalize=normalize),
                tmp_path / f"cm_{normalize}.png")


def test_per_class_accuracy_figure(tmp_path):
    acc = np.linspace(0.2, 0.95, 10)
    acc[3] = np.nan
    _assert_png(per_class_accuracy_figure(acc, NAMES10), tmp_path / "pca.png")


@pytest.mark.parametrize("hwc", [(28, 28, 1), (32, 32, 3)])
def test_image_grid_figure(tmp_path, hwc):
    rng = np.random.default_rng(1)
    orig = rng.integers(0, 256, (10, *hwc), dtype=np.uint8)
    augs = [np.clip(orig / 255.0 + rng.normal(0, 0.1, orig.shape), 0, 1) for _ in range(3)]
    rows = [orig, *augs]
    titles = ["original", "aug 1", "aug 2", "aug 3"]
    labels = rng.integers(0, 10, 10)
    _assert_png(image_grid_figure(rows, titles, NAMES10, labels), tmp_path / "grid.png")
    # without labels / class names
    _assert_png(image_grid_figure(rows, titles), tmp_path / "grid_plain.png")


@pytest.mark.parametrize("hwc", [(28, 28, 1), (32, 32, 3)])
def test_weight_templates_figure(tmp_path, hwc):
    rng = np.random.default_rng(2)
    d = int(np.prod(hwc))
    w = rng.normal(size=(10, d))
    _assert_png(weight_templates_figure(w, hwc, NAMES10), tmp_path / "w.png")
    # bias column is dropped; (H, W) shape for grey
    wb = rng.normal(size=(10, d + 1))
    shape = hwc[:2] if hwc[2] == 1 else hwc
    _assert_png(weight_templates_figure(wb, shape, NAMES10), tmp_path / "wb.png")
    # channels-first layout (flattened torch weights)
    chw = (hwc[2], hwc[0], hwc[1])
    _assert_png(weight_templates_figure(w, chw, NAMES10, channels_first=True),
                tmp_path / "wchw.png")
    with pytest.raises(ValueError):
        weight_templates_figure(w[:, :-2], hwc, NAMES10)


def test_save_figure_creates_parent_dirs(tmp_path):
    fig = per_class_accuracy_figure(np.array([0.5, 1.0]), ["a", "b"])
    _assert_png(fig, tmp_path / "nested" / "dir" / "x.png")


def test_no_pyplot_and_thread_safe(tmp_path):
    import subprocess
    import sys

    code = ("import sys, components.plots, components.metrics; "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)

    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)

    def work(i):
        cm = confusion_matrix(rng.integers(0, 10, 200), rng.integers(0, 10, 200), 10)
        _assert_png(confusion_matrix_figure(cm, NAMES10), tmp_path / f"t{i}.png")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(8)))


def test_paired_gain_stderr_counts_only_the_images_the_two_models_disagree_on():
    from components.metrics import paired_gain_stderr

    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    same = labels.copy()
    assert paired_gain_stderr(same, same, labels) == 0.0  # identical predictions: no noise in the difference
    a = labels.copy()
    b = labels.copy()
    b[[0, 1]] = 9  # b wrong on two images a gets right
    a[7] = 9  # a wrong on one image b gets right
    d = np.array([1, 1, 0, 0, 0, 0, 0, -1], dtype=float)  # [a right] - [b right], by hand
    assert paired_gain_stderr(a, b, labels) == pytest.approx(d.std(ddof=1) / np.sqrt(8))
    assert paired_gain_stderr(a, b, labels) == pytest.approx(paired_gain_stderr(b, a, labels))
    assert np.isnan(paired_gain_stderr(a[:1], b[:1], labels[:1]))
    with pytest.raises(ValueError, match="one shape"):
        paired_gain_stderr(a, b[:4], labels)
