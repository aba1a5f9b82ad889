"""The figures people look at first read at a glance: what is on which axis, and what the axes start at.

    .venv/bin/python -m pytest -q tests/components/test_plots_readable.py
"""

from __future__ import annotations

import numpy as np
import pytest

from components.diagnostics import LayerStats
from components.plots import activation_stats_figure, curves_figure, return_curve_figure


def _history(epochs: int = 6, gap: float = 0.04) -> dict[str, list[tuple[int, float]]]:
    h = {"lr": [(e, 0.1) for e in range(1, epochs + 1)], "perf/images_per_s": [(e, 900.0) for e in range(1, epochs + 1)]}
    for split, off in (("train", 0.0), ("val", gap)):
        h[f"{split}/loss"] = [(e, 2.3 / e + off) for e in range(1, epochs + 1)]
        h[f"{split}/accuracy"] = [(e, 0.6 + 0.05 * e - off) for e in range(1, epochs + 1)]
    h["train/val_accuracy_gap"] = [(e, gap if e > 1 else -0.1) for e in range(1, epochs + 1)]
    return h


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_the_gap_has_its_own_axis_and_does_not_flatten_the_accuracy_lines():
    fig = curves_figure(_history(), "convnet on digits")
    loss, metric, gap = fig.axes
    assert _labels(loss) == ["train/loss", "val/loss"]
    assert _labels(metric) == ["train/accuracy", "val/accuracy"]
    assert _labels(gap) == ["train/val_accuracy_gap"]
    assert metric.get_title() == "accuracy"
    # the accuracy axis spans the accuracies (0.61..0.9), not the gap's -0.1
    assert metric.get_ylim()[0] > 0.5
    assert gap.get_ylim()[0] < -0.09 < 0.0 < gap.get_ylim()[1]
    # lr and throughput are not curves of this figure
    assert not any("lr" == lbl or lbl.startswith("perf/") for ax in fig.axes for lbl in _labels(ax))


@pytest.mark.parametrize("epochs", [1, 3, 30])
def test_epochs_are_whole_numbers_and_are_drawn_as_given(epochs):
    fig = curves_figure(_history(epochs=epochs))
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), (epochs, ticks)
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [float(e) for e in range(1, epochs + 1)]  # from 1


def test_other_tasks_metrics_share_the_metric_panel_and_no_gap_means_two_panels():
    h = {"train/loss": [(1, 1.2), (2, 1.1)], "val/bpc": [(1, 2.1), (2, 1.9)], "val/bleu4": [(1, 0.1), (2, 0.2)]}
    fig = curves_figure(h)
    assert len(fig.axes) == 2
    assert fig.axes[1].get_title() == "bleu4, bpc"


def _stats(stds):
    rng = np.random.default_rng(0)
    return [LayerStats(f"layer{i}", 0.01 * i, s, rng.normal(0, s, 200)) for i, s in enumerate(stds, start=1)]


def test_activation_statistics_have_integer_layer_ticks_and_zero_based_axes():
    fig = activation_stats_figure(_stats([0.605, 0.575, 0.59, 0.6, 0.58, 0.6, 0.59]))
    mean_ax, std_ax = fig.axes[:2]
    for ax in (mean_ax, std_ax):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    # a 0.575-0.605 spread is drawn from zero: flat, not a zigzag filling the axis
    assert std_ax.get_ylim()[0] == 0.0 and std_ax.get_ylim()[1] >= 0.605
    assert mean_ax.get_ylim()[0] <= 0.0 <= mean_ax.get_ylim()[1]


def test_collapsing_activations_keep_a_log_axis():
    fig = activation_stats_figure(_stats([1.0, 0.1, 0.01, 0.001, 0.0001]))
    assert fig.axes[1].get_yscale() == "log"


def test_return_curve_draws_training_returns_greedy_checks_and_the_targets():
    fig = return_curve_figure([(2000, 20.0), (1000, 12.0), (3000, 60.0)], greedy=[(3000, 150.0)],
                              eval_return=480.0, target=475.0, title="ppo on CartPole-v1")
    ax = fig.axes[0]
    labels = _labels(ax)
    assert labels[:2] == ["training episodes (mean return)", "greedy check"]
    assert any("480.0" in lbl for lbl in labels) and any("475" in lbl for lbl in labels)
    assert list(ax.get_lines()[0].get_xdata()) == [1000.0, 2000.0, 3000.0]
    with pytest.raises(ValueError):
        return_curve_figure([])
