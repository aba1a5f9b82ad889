"""pipelines.flows.report: the run report gathered from a real (small, hand-made) MLflow store.

    .venv/bin/python -m pytest -q tests/pipelines/test_report.py

The report of a real quickstart is checked in test_e2e.py (and shown in Chromium by
test_dashboard_browser.py).
"""

from __future__ import annotations

import base64
import io
import json
import re

import mlflow
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines.config import dump
from pipelines.flows import report
from pipelines.records import Evaluation
from pipelines.services import names, tracking
from pipelines.services.registry import Decision
from tests.conftest import shrunk_config

MODEL = "digits-classifier"


def _png(colour: str) -> bytes:
    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor(colour)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _store_with_a_champion_and_a_new_run(store, tmp_path):
    """v1 of MODEL from an earlier run with train.lr=0.05; a new pipeline run (lr 0.1) with three stages."""
    client = store.client()
    exp = client.create_experiment(names.experiment_name("quickstart"))
    cfg = shrunk_config("quickstart")
    old = client.create_run(exp, run_name="quickstart-old")
    old_cfg = yaml.safe_load(dump(cfg))
    old_cfg["train"]["lr"] = 0.05
    client.log_text(old.info.run_id, yaml.safe_dump(old_cfg), names.CONFIG_ARTIFACT)
    client.create_registered_model(MODEL)
    client.create_model_version(MODEL, f"runs:/{old.info.run_id}/model", old.info.run_id,
                                tags={names.RUN_ID: old.info.run_id})
    parent = client.create_run(exp, run_name="quickstart-new", tags={names.COMMAND: "visionray run quickstart"})
    pid = parent.info.run_id
    client.log_metric(pid, names.PIPELINE_SECONDS, 75.0)
    pictures = {"3-train": {"plots/curves.png": _png("red"), "plots/init_activations.png": _png("green")},
                "4-evaluate": {"plots/curves.png": _png("blue"), "plots/confusion_matrix.png": _png("white")}}
    for i, stage in enumerate(["ingest", "train", "evaluate"], start=1):
        name = f"{[1, 3, 4][i - 1]}-{stage}"
        child = client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": pid, names.STAGE_TAG: stage})
        for path, data in pictures.get(name, {}).items():
            (tmp_path / path.rsplit("/", 1)[-1]).write_bytes(data)
            client.log_artifact(child.info.run_id, str(tmp_path / path.rsplit("/", 1)[-1]), "plots")
        if stage == "evaluate":
            client.log_metric(child.info.run_id, names.TEST_ACCURACY, 0.93)
            client.log_metric(child.info.run_id, names.TEST_LOSS, 0.25)
        client.set_terminated(child.info.run_id)
    trial = client.create_run(exp, run_name="trial-0", tags={"mlflow.parentRunId": pid, names.STAGE_TAG: "trial"})
    client.set_terminated(trial.info.run_id)
    return cfg, tracking.PipelineRun(pid, exp, store.uri, cfg, {})


def _outputs(previous: int | None = 1):
    evaluation = Evaluation("m", {"loss": 0.25, "accuracy": 0.93}, None)
    return {"evaluation": evaluation, "decision": Decision(MODEL, 2, names.CHAMPION, previous, 0.9)}


def test_the_report_has_the_headline_stages_figures_and_the_diff_against_the_champion(mlflow_store, tmp_path):
    cfg, parent = _store_with_a_champion_and_a_new_run(mlflow_store, tmp_path)
    page = report.build(cfg, parent, _outputs())
    cards = re.findall(r'<div class="v">([^<]*)</div><div class="k">([^<]*)</div>', page)
    assert cards[0] == ("0.93", "test/accuracy")  # the task's primary metric first, from the evaluate stage
    assert ("1m 15.0s", "perf/pipeline_seconds") in cards
    assert page.index(">1-ingest<") < page.index(">3-train<") < page.index(">4-evaluate<")
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", page)
    # curves once (the train run's: it comes first), then the confusion matrix, then the rest
    assert captions == ["train: plots/curves.png", "evaluate: plots/confusion_matrix.png",
                        "train: plots/init_activations.png"]
    first = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(first) == _png("red")
    assert f"{MODEL} v1 (champion before this run)" in page
    assert re.search(r"<td>train\.lr</td><td>0\.1</td><td>0\.05</td>", page)
    assert "1 key(s) differ" in page
    assert "1 more run(s) are nested under this one" in page


def test_without_a_previous_champion_the_report_says_why_there_is_no_diff(mlflow_store, tmp_path):
    cfg, parent = _store_with_a_champion_and_a_new_run(mlflow_store, tmp_path)
    page = report.build(cfg, parent, _outputs(previous=None))
    assert "Config against the champion" not in page
    assert "No champion to compare the config with" in page


def test_the_report_is_logged_on_the_parent_and_never_fails_the_run(mlflow_store, tmp_path, capsys):
    cfg, parent = _store_with_a_champion_and_a_new_run(mlflow_store, tmp_path)
    with mlflow.start_run(run_id=parent.run_id):
        report.log_report(cfg, parent, _outputs())
    assert tracking.has_artifact(mlflow_store.uri, parent.run_id, names.REPORT_ARTIFACT)
    assert "test/accuracy" in tracking.read_artifact(mlflow_store.uri, parent.run_id, names.REPORT_ARTIFACT).decode()
    # an open dashboard's link now shows this run: the latest-run view is rewritten for it
    view = json.loads(mlflow_store.client().get_experiment(parent.experiment_id).tags[
        names.SAVED_VIEW_TAG_PREFIX + names.LATEST_RUN_VIEW])
    assert view["name"] == "visionray: latest run (quickstart-new)"
    broken = tracking.PipelineRun("no-such-run", parent.experiment_id, mlflow_store.uri, cfg, {})
    report.log_report(cfg, broken, {})  # nothing raised: the run's results are logged already
    captured = capsys.readouterr()
    assert "report: not written" in captured.out + captured.err
