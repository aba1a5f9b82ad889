"""Where `visionray ui` lands: the model-training view of the latest pipeline run, stage by stage.

    visionray ui      # prints http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning&viewStateShareKey=…

MLflow 3.17's dashboard picks its GenAI or model-training view from the ``workflowType`` URL parameter
(else the browser's last choice, GenAI on a first visit): the experiment's ``mlflow.experimentKind`` tag
no longer decides, so the links carry ``workflowType=machine_learning``. The runs table shows no metric
columns and collapses each pipeline run's stages; a saved view (an experiment tag MLflow's "Views" menu
lists, opened by ``viewStateShareKey``) fixes both. Two views are written on the latest run's experiment:

- *latest run*: that run's stages top-down (sorted by run name, ``1-ingest``, ``2-preprocess``, …, then
  the pipeline run itself), with its headline metric columns (``test/*``, best val, …);
- *all runs*: every pipeline run newest first, stages nested, the same columns.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterable

from pipelines.services import names, tracking

MODEL_TRAINING = "workflowType=machine_learning"
#: MLflow's sort keys and column ids (makeCanonicalSortKey in its runs table)
_RUN_NAME = "tags.`mlflow.runName`"
_START_TIME = "attributes.start_time"
_MODELS_COLUMN = "attributes.`Models`"
_MAX_COLUMNS = 8


@dataclass(frozen=True)
class Landing:
    url: str  # the latest run, stage by stage (or the experiments list of an empty store)
    all_runs_url: str | None = None
    experiment: str | None = None  # visionray/<pipeline>
    run_name: str | None = None


def columns(metric_keys: Iterable[str]) -> list[str]:
    """The runs table's metric columns: the results among the headline metrics (test metrics, best val, an
    RL policy's greedy return), then the registered models. MLflow sorts metric columns by name and draws
    only those that fit the window, so throughput and sizes are left to "Columns"."""
    results = sorted(k for k in set(metric_keys) if names.is_headline(k) and (
        k.startswith((names.metric(names.TEST, ""), names.BEST_VAL_PREFIX)) or k == names.RL_EVAL_RETURN_MEAN))
    return [f"metrics.`{k}`" for k in results[:_MAX_COLUMNS]] + [_MODELS_COLUMN]


def view_state(selected_columns: list[str], *, since_ms: int | None) -> dict[str, Any]:
    """A runs-page state MLflow's saved views hold: with ``since_ms``, only runs started from then on,
    flat and by run name (a pipeline run's stages top-down); else every run newest first, nested."""
    return {"searchFilter": f"{_START_TIME} >= {since_ms}" if since_ms is not None else "",
            "orderByKey": _RUN_NAME if since_ms is not None else _START_TIME,
            "orderByAsc": since_ms is not None, "startTime": "ALL", "lifecycleFilter": "Active",
            "datasetsFilter": [], "modelVersionFilter": "All Runs", "selectedColumns": selected_columns}


def saved_view(name: str, state: dict[str, Any], now_ms: int) -> str:
    """The tag value MLflow reads a saved view from: its envelope, the state as a JSON string inside."""
    return json.dumps({"name": name, "createdAt": now_ms, "updatedAt": now_ms, "state": json.dumps(state)})


def runs_url(base: str, experiment_id: str, view: str | None = None) -> str:
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING}"
            + (f"&viewStateShareKey={view}" if view else ""))


@dataclass(frozen=True)
class Views:
    experiment_id: str
    experiment: str | None  # visionray/<pipeline>
    run_name: str


def write_views(uri: str) -> Views | None:
    """(Re)write the two saved views on the latest pipeline run's experiment, so that the *latest run*
    view shows that run; None when the store has no pipeline run. Every pipeline run calls it at its
    end (an open dashboard's link then shows the newest run) and so does `visionray ui`."""
    found = tracking.latest_pipeline_run(uri)
    if found is None:
        return None
    run, started_ms = found
    children = tracking.child_runs(uri, run.experiment_id, run.run_id)
    selected = columns([*run.metrics, *(k for c in children for k in c.metrics)])
    run_name = run.tags.get("mlflow.runName", run.run_id)
    now = int(time.time() * 1000)
    for key, name, since in ((names.LATEST_RUN_VIEW, f"visionray: latest run ({run_name})", started_ms),
                             (names.ALL_RUNS_VIEW, "visionray: all runs", None)):
        tracking.set_experiment_tag(uri, run.experiment_id, names.SAVED_VIEW_TAG_PREFIX + key,
                                    saved_view(name, view_state(selected, since_ms=since), now))
    pipeline = run.tags.get(names.PIPELINE_TAG, "")
    return Views(run.experiment_id, names.experiment_name(pipeline) if pipeline else None, run_name)


def landing(uri: str, base: str) -> Landing:
    """Write the two saved views on the latest pipeline run's experiment and return their links; an
    empty store lands on the experiments list."""
    views = write_views(uri)
    if views is None:
        return Landing(f"{base.rstrip('/')}/#/experiments?{MODEL_TRAINING}")
    return Landing(runs_url(base, views.experiment_id, names.LATEST_RUN_VIEW),
                   runs_url(base, views.experiment_id, names.ALL_RUNS_VIEW), views.experiment, views.run_name)
