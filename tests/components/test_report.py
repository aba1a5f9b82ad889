"""components.report: the run report's page from plain values (no MLflow, no network).

    .venv/bin/python -m pytest -q tests/components/test_report.py
"""

from __future__ import annotations

import base64
import re

from components.report import (
    ConfigDiff,
    Picture,
    ReportPage,
    StageRow,
    config_diff,
    format_value,
    headline,
    picture_order,
    render_report,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def test_headline_puts_the_primary_metric_first_then_test_then_best_val_and_leaves_out_per_class():
    metrics = {"perf/pipeline_seconds": 80.0, "test/loss": 0.3, "train/best_val_accuracy": 0.9,
               "test/accuracy": 0.91, "test/accuracy_cat": 0.5, "data/rows_train": 1000.0,
               "system/cpu_utilization_percentage": 100.0}
    keys = [k for k, _ in headline(metrics, primary="test/accuracy")]
    assert keys[:3] == ["test/accuracy", "test/loss", "train/best_val_accuracy"]
    assert "test/accuracy_cat" not in keys and "system/cpu_utilization_percentage" not in keys
    assert keys.index("perf/pipeline_seconds") < keys.index("data/rows_train")
    assert len(headline(metrics, limit=2)) == 2


def test_config_diff_lists_only_keys_that_differ_and_masks_secrets():
    ours = {"train.lr": 0.1, "train.epochs": 6, "model.name": "convnet", "tracking.api_token": "a", "resume": "last"}
    theirs = {"train.lr": 0.05, "train.epochs": 6, "model.name": "convnet", "tracking.api_token": "b",
              "data.name": "digits"}
    rows = config_diff(ours, theirs)
    assert rows == [("data.name", None, "digits"), ("tracking.api_token", "***", "***"), ("train.lr", 0.1, 0.05)]
    assert config_diff(ours, dict(ours)) == []


def test_values_read_as_people_read_them():
    assert format_value("perf/pipeline_seconds", 83.5) == "1m 23.5s"
    assert format_value("perf/pipeline_seconds", 8.25) == "8.25"
    assert format_value("perf/images_per_s", 1234.0) == "1,234"
    assert format_value("compress/size_bytes", 2_500_000) == "2.50 MB"
    assert format_value("test/accuracy", 0.912345) == "0.9123"
    assert format_value("x", None) == "—"
    assert format_value("model.name", "convnet") == "convnet"


def test_the_pipelines_own_picture_comes_first_then_the_curves_then_the_confusion_matrix():
    paths = ["plots/augmentation_grid.png", "plots/confusion_matrix.png", "plots/curves.png", "plots/z.png"]
    assert sorted(paths, key=picture_order) == ["plots/curves.png", "plots/confusion_matrix.png",
                                                "plots/augmentation_grid.png", "plots/z.png"]
    assert sorted([*paths, "plots/parallel_coordinates.png"], key=picture_order)[0] == "plots/parallel_coordinates.png"
    assert sorted([*paths, "compress/pareto.png"], key=picture_order)[0] == "compress/pareto.png"


def test_the_page_is_self_contained_escaped_and_shows_every_part():
    page = render_report(ReportPage(
        title="quickstart-20261207-000000 <b>",
        facts=[("pipeline", "quickstart"), ("command", "visionray run quickstart 'x<y'")],
        headline=[("test/accuracy", 0.93), ("perf/pipeline_seconds", 75.0)],
        stages=[StageRow("1-ingest", "FINISHED", {"data/rows_train": 1200.0}),
                StageRow("3-train", "FINISHED", {"train/best_val_accuracy": 0.95})],
        pictures=[Picture("train: plots/curves.png", PNG)],
        diff=ConfigDiff("digits-classifier v1", [("train.lr", 0.1, 0.05)]),
        notes=["2 more run(s)"]))
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<b>" not in page.split("<body>", 1)[1].split("</h1>")[0].replace("<h1>", "")  # the title is escaped
    assert "x&lt;y" in page
    src = re.findall(r'src="([^"]+)"', page)
    assert src == [f"data:image/png;base64,{base64.b64encode(PNG).decode()}"]  # nothing fetched from elsewhere
    assert "http://" not in page and "https://" not in page
    assert page.index("test/accuracy") < page.index("perf/pipeline_seconds")
    assert 'class="card primary"' in page and "0.93" in page and "1m 15.0s" in page
    assert page.index("1-ingest") < page.index("3-train")
    assert "1 key(s) differ from digits-classifier v1" in page and "train.lr" in page
    assert "2 more run(s)" in page


def test_an_empty_report_still_renders_and_says_so():
    page = render_report(ReportPage(title="t", diff=ConfigDiff("champion v2", [])))
    assert "No metrics were logged." in page and "Same config as champion v2." in page
    assert "<h2>Figures</h2>" not in page


def test_every_task_reports_its_curves_under_the_train_stages_name():
    """The train stage logs the curves as names.CURVES_PLOT and each task's report under its own literal
    (components cannot import names): the two must be one artifact, which the report shows once."""
    import numpy as np

    from components.tasks import TASKS, build_task
    from pipelines.services import names

    history = {"train/loss": [(1, 1.0), (2, 0.5)], "val/loss": [(1, 1.1), (2, 0.7)]}
    for name in TASKS:
        task = build_task(name, num_classes=3)
        figures = task.report(np.array([0, 1]), np.array([0, 1]), ["a", "b", "c"], history, "t").figures
        assert names.CURVES_PLOT in figures, name
