"""The run report: one self-contained HTML page per pipeline run, logged on its parent run as ``report.html``.

    run_pipeline(cfg, command)   # → the parent run's artifacts: report.html (MLflow's artifact viewer shows it)

Generic over pipelines and tasks: the headline numbers are the parent's metrics and its stages' headline
metrics (the task's primary test metric first), the figures are the PNGs (and an RL episode GIF) the
parent and its stage runs logged (curves first, then the confusion matrix where the task has one), and
the config is compared with that of the champion the run was gated against. Gathering reads the store
through ``services.tracking`` and ``services.registry``; the page itself is :mod:`components.report`.
"""

from __future__ import annotations

from typing import Any, Mapping

import yaml

from components.report import (
    ConfigDiff,
    Picture,
    ReportPage,
    StageRow,
    config_diff,
    headline,
    picture_order,
    render_report,
)
from pipelines.config import Config, flatten
from pipelines.services import dashboard, names, registry, tracking
from pipelines.services.progress import say

FIGURE_SUFFIXES = (".png", ".gif")
MAX_PICTURE_BYTES = 3 * 2**20  # a long episode GIF stays an artifact of its own, out of the page


def primary_metric(outputs: Mapping[str, Any]) -> str | None:
    """The MLflow key of the run's headline number: the evaluated task's primary test metric, else the
    greedy return of an RL policy."""
    evaluation = outputs.get("evaluation")
    primary = getattr(evaluation, "primary", None)
    if isinstance(primary, str):
        return names.metric(names.TEST, primary)
    return names.RL_EVAL_RETURN_MEAN if evaluation is not None else None


def _pictures(uri: str, runs: list[tuple[str, str]]) -> tuple[list[Picture], list[str]]:
    """Every figure of ``runs`` ((label, run id), in stage order), each file name once (the curves are on
    the train and the evaluate run), in :func:`components.report.picture_order`."""
    found: dict[str, tuple[str, str, str]] = {}
    for label, run_id in runs:
        for path in tracking.artifact_files(uri, run_id, FIGURE_SUFFIXES):
            found.setdefault(path.rsplit("/", 1)[-1], (label, run_id, path))
    pictures, notes = [], []
    for label, run_id, path in sorted(found.values(), key=lambda f: picture_order(f[2])):
        data = tracking.read_artifact(uri, run_id, path)
        if len(data) > MAX_PICTURE_BYTES:
            notes.append(f"{path} on the {label} run is {len(data) / 2**20:.1f} MB: open it among that run's artifacts.")
            continue
        mime = "image/gif" if path.lower().endswith(".gif") else "image/png"
        pictures.append(Picture(f"{label}: {path}", data, mime))
    return pictures, notes


def champion_diff(cfg: Config, uri: str, decision: Any) -> ConfigDiff | None:
    """This run's config against that of the champion the gate compared it with (None without one)."""
    version = getattr(decision, "previous_champion", None)
    if decision is None or version is None:
        return None
    run_id = registry.version_run_id(uri, decision.name, version)
    if run_id is None:
        return None
    text = tracking.read_artifact(uri, run_id, names.CONFIG_ARTIFACT).decode()
    theirs = flatten(yaml.safe_load(text) or {})
    return ConfigDiff(f"{decision.name} v{version} (champion before this run)",
                      config_diff(flatten(cfg.to_dict()), theirs))


def build(cfg: Config, parent: tracking.PipelineRun, outputs: Mapping[str, Any]) -> str:
    uri = parent.uri
    run = tracking.find_run(uri, parent.run_id)
    own = dict(run.metrics) if run else {}
    tags = dict(run.tags) if run else dict(parent.tags)
    order = list(cfg.stages)
    children = tracking.child_runs(uri, parent.experiment_id, parent.run_id)
    stages = sorted((c for c in children if c.tags.get(names.STAGE_TAG) in order),
                    key=lambda c: order.index(c.tags[names.STAGE_TAG]))
    others = len(children) - len(stages)
    metrics = {**tracking.headline_metrics([(c.tags[names.STAGE_TAG], c.metrics) for c in stages], order, own),
               **own}
    decision = outputs.get("decision")
    facts = [("pipeline", cfg.pipeline), ("run id", parent.run_id),
             ("dataset version", tags.get(names.DATASET_VERSION, "")[:12]),
             ("git", tags.get(names.GIT_SHA, "")[:12]),
             ("registered", tags.get(names.DECISION_TAG, "")), ("command", tags.get(names.COMMAND, ""))]
    pictures, notes = _pictures(uri, [("pipeline", parent.run_id)]
                                + [(c.tags[names.STAGE_TAG], c.run_id) for c in stages])
    if others:
        notes.append(f"{others} more run(s) are nested under this one (trials, members or methods): "
                     "expand it in the runs table.")
    diff = champion_diff(cfg, uri, decision)
    if diff is None and "register" in order:
        notes.append("No champion to compare the config with: this run's model is the first one registered "
                     "under its name, or it was not registered.")
    return render_report(ReportPage(
        title=tags.get("mlflow.runName", parent.run_id),
        facts=[(k, v) for k, v in facts if v],
        headline=headline(metrics, primary=primary_metric(outputs)),
        stages=[StageRow(tracking.stage_run_name(c.tags[names.STAGE_TAG], order), c.status, c.metrics)
                for c in stages],
        pictures=pictures, diff=diff, notes=notes))


def log_report(cfg: Config, parent: tracking.PipelineRun, outputs: Mapping[str, Any]) -> None:
    """Build the report and log it on the parent run, and point the dashboard's *latest run* view at this
    run; a report that cannot be built never fails the run."""
    try:
        page = build(cfg, parent, outputs)
        tracking.log_text(page, names.REPORT_ARTIFACT)
        dashboard.write_views(parent.uri)  # `visionray ui`'s link now shows this run
    except Exception as e:  # the run's results are logged already; the report is a view of them
        say(f"report: not written ({type(e).__name__}: {e})")
        return
    say(f"report: {names.REPORT_ARTIFACT} on run {parent.run_id} ({len(page) / 1024:.0f} KiB)")
