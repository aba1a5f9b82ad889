"""MLflow runs, metrics and artifacts: the one module (with ``registry``) that calls MLflow.

A pipeline run is one parent run in experiment ``visionray/<pipeline>``; each stage is a nested
child run tagged ``visionray.stage=<stage>`` and named after its place in the pipeline (``1-ingest``,
``2-preprocess``, ``3-train``, ...). When the pipeline ends, its parent run repeats the stages' headline
metrics (``names.is_headline``: ``test/*``, ``train/best_val_*``, throughput, ...) and gets a description
(``mlflow.note.content``) saying what ran and what came of it. Only the driver and rank 0 of a Ray
Train job log::

    with tracking.pipeline_run(cfg, command="visionray run quickstart") as parent:
        with tracking.stage_run("train", parent) as run_id:
            tracking.log_metrics({names.LR: 0.1}, step=1)

Workers get a :class:`RunLogger` (a plain client bound to one run id), never the fluent API.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from pipelines.config import Config, dump, flatten, usage
from pipelines.config.secrets import mask, mask_key
from pipelines.services import names

# The dashboard opens an experiment in its "model training" view (runs, charts) rather than the
# GenAI view (traces) when the experiment says what kind it is.
_EXPERIMENT_KIND = "mlflow.experimentKind"
_MODEL_TRAINING = "custom_model_development"


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or written; the message names the address."""


class StoreUnreachable(TrackingUnavailable):
    """The tracking server does not answer (a connection failure: `visionray` exits 1, not 2)."""


def resolve_uri(configured: str | None) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite at ``./mlruns/mlflow.db``."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside it (``mlruns/artifacts``); a server picks its own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
    return None


def is_local_uri(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "databricks"))


def check_store(uri: str, timeout_s: float = 10.0) -> None:
    """Fail fast, naming the address, when the store is unreachable or not writable."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as resp:
                if resp.status != 200:
                    raise StoreUnreachable(f"MLflow server at {uri} answered {resp.status} to /health.")
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise StoreUnreachable(f"MLflow server at {uri} is not reachable ({reason}).") from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingUnavailable(f"cannot create the MLflow store directory {db.parent} ({e}).") from None
        if not os.access(db.parent, os.W_OK):
            raise TrackingUnavailable(f"the MLflow store directory {db.parent} is not writable.")


def connect(uri: str) -> None:
    import mlflow

    check_store(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def ensure_experiment(name: str, uri: str) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if _EXPERIMENT_KIND not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, _EXPERIMENT_KIND, _MODEL_TRAINING)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(uri),
                                        tags={_EXPERIMENT_KIND: _MODEL_TRAINING})
    except MlflowException:  # created concurrently by another run: use theirs
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_sha() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("VISIONRAY_GIT_SHA", "unknown")
    return (sha + ("-dirty" if dirty else "")) if sha else os.environ.get("VISIONRAY_GIT_SHA", "unknown")


def config_params(cfg: Config) -> dict[str, str]:
    """The sections of the resolved config that the pipeline uses (``usage.used_dict``), flattened to
    dotted keys; a key named like a secret is masked whole, credentials in any URI are masked
    (``pipelines.config.secrets``). config.yaml holds the whole config, its URIs masked the same way."""
    out = {}
    for k, v in flatten(usage.used_dict(cfg)).items():
        if k == "resume":  # how the run was started, not what it is; would clash on resume
            continue
        out[k] = mask_key(k, json.dumps(v) if isinstance(v, list) else str(v))
    return out


@dataclass
class PipelineRun:
    """The parent run of one pipeline run, and the tags every child run inherits."""

    run_id: str
    experiment_id: str
    uri: str
    cfg: Config
    tags: dict[str, str] = field(default_factory=dict)
    resumed: bool = False

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow import MlflowClient

        self.tags.update(tags)
        client = MlflowClient(self.uri)
        for k, v in tags.items():
            client.set_tag(self.run_id, k, mask(str(v)))


@contextlib.contextmanager
def pipeline_run(cfg: Config, command: str, resume_run_id: str | None = None) -> Iterator[PipelineRun]:
    """The parent run; with ``resume_run_id``, the same run continues (status back to RUNNING)."""
    import mlflow

    uri = resolve_uri(cfg.tracking.uri)
    connect(uri)
    exp_id = ensure_experiment(names.experiment_name(cfg.pipeline), uri)
    mlflow.set_experiment(experiment_id=exp_id)  # nested runs land in the same experiment
    command = mask(command)  # a password in tracking.uri=… stays out of the tag, the description and the registry
    tags = {names.GIT_SHA: git_sha(), names.COMMAND: command, names.PIPELINE_TAG: cfg.pipeline}
    if resume_run_id:
        run = mlflow.start_run(run_id=resume_run_id, log_system_metrics=cfg.tracking.system_metrics)
        mlflow.set_tag(names.RESUMED_BY_TAG, command)
        tags = {k: v for k, v in run.data.tags.items() if k in (names.GIT_SHA, names.COMMAND, names.PIPELINE_TAG)}
    else:
        run = mlflow.start_run(experiment_id=exp_id, run_name=f"{cfg.pipeline}-{time.strftime('%Y%m%d-%H%M%S')}",
                               tags=tags, log_system_metrics=cfg.tracking.system_metrics)
    parent = PipelineRun(run.info.run_id, exp_id, uri, cfg, dict(tags), resumed=bool(resume_run_id))
    with _finish_run_on_exit():
        log_config(cfg)
        mlflow.set_tag(names.RUN_NOTE_TAG, describe_run(cfg, {}, {**run.data.tags, **tags}, "running"))
        try:
            yield parent
        except BaseException as e:
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else f"failed: {type(e).__name__}: {e}"
            _describe_failure(parent, mask(status)[:2000])
            raise
        conclude(parent)


@contextlib.contextmanager
def attached(parent: PipelineRun) -> Iterator[None]:
    """In a Ray task that runs a pipeline's flow on the cluster (``ray://``): the parent run active here as
    it is in the driver, and left open afterwards, since the driver ends it (FINISHED or FAILED)."""
    import mlflow
    from mlflow.tracking import fluent

    connect(parent.uri)
    mlflow.set_experiment(experiment_id=parent.experiment_id)
    mlflow.start_run(run_id=parent.run_id)
    try:
        yield
    finally:
        while mlflow.active_run() is not None and mlflow.active_run().info.run_id != parent.run_id:
            mlflow.end_run("FAILED")  # a stage the flow left open
        stack = fluent._active_run_stack.get()  # detach without ending: the driver owns the status
        if stack and stack[-1].info.run_id == parent.run_id:
            stack.pop()


def stage_run_name(stage: str, stages: Sequence[str]) -> str:
    """A stage's run name: its place among the pipeline's stages, then its name (``3-train``).

    MLflow's runs table nests child runs under their parent only when sorted by start time, newest
    first by default, so the number is what keeps the pipeline's order readable in any sort (sorted
    by start time ascending, or by run name, the stages read top-down: docs/architecture.md).
    """
    stages = list(stages)
    return f"{stages.index(stage) + 1}-{stage}" if stage in stages else stage


@contextlib.contextmanager
def stage_run(stage: str, parent: PipelineRun, run_name: str | None = None) -> Iterator[str]:
    """A nested run tagged ``visionray.stage=<stage>`` under ``parent``, named ``run_name`` or
    :func:`stage_run_name` (``1-ingest``)."""
    import mlflow

    existing = _child_run(parent, stage) if parent.resumed else None
    if existing:
        run = mlflow.start_run(run_id=existing, nested=True)
    else:
        run = mlflow.start_run(experiment_id=parent.experiment_id, nested=True,
                               run_name=run_name or stage_run_name(stage, parent.cfg.stages),
                               parent_run_id=parent.run_id, tags={**parent.tags, names.STAGE_TAG: stage})
    with _finish_run_on_exit():
        log_config(parent.cfg)
        yield run.info.run_id


@contextlib.contextmanager
def method_run(name: str, parent: PipelineRun, stage_run_id: str, tags: Mapping[str, str]) -> Iterator[str]:
    """A run nested under a stage's run (one per compression method): FINISHED, or FAILED with the error."""
    import mlflow

    run = mlflow.start_run(experiment_id=parent.experiment_id, run_name=name, nested=True,
                           parent_run_id=stage_run_id, tags={**parent.tags, **tags})
    with _finish_run_on_exit():
        yield run.info.run_id


# --------------------------------------------------------------------------- the parent's summary


def headline_metrics(stage_runs: Sequence[tuple[str, Mapping[str, float]]], stages: Sequence[str],
                     already: Mapping[str, float]) -> dict[str, float]:
    """The metrics a parent run repeats from its stages: each ``(stage, metrics)`` of a pipeline stage, in
    the order the stages ran (a later stage's value wins), keeping only ``names.is_headline`` keys the
    parent does not log itself (``already``)."""
    out: dict[str, float] = {}
    for stage, metrics in stage_runs:
        if stage in stages:
            out.update({k: float(v) for k, v in metrics.items() if names.is_headline(k) and k not in already})
    return out


def _model_of(cfg: Config) -> str:
    """What a pipeline trains, in a few words (the description's subject)."""
    kind = cfg.kind
    if kind == "rl":
        return f"{cfg.rl.algo} on {cfg.rl.env}"
    if kind == "charlm":
        return f"{cfg.charlm.arch} character language model on {cfg.data.name}"
    if kind == "caption":
        return f"captioner ({'attention' if cfg.caption.attention else 'no attention'}) on {cfg.data.name}"
    if kind == "knn":
        return f"kNN on {cfg.data.name}"
    if kind == "bench":
        return f"benchmarks on {cfg.data.name}"
    if kind == "zoo":
        return f"{len(cfg.zoo.models)} models on {cfg.data.name}"
    return f"{cfg.model.name} on {cfg.data.name}"


def _label(key: str) -> str:
    """``test/mention_f1`` -> ``mention f1``."""
    return key.split("/", 1)[-1].replace("_", " ")


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def describe_run(cfg: Config, metrics: Mapping[str, float], tags: Mapping[str, str], status: str) -> str:
    """A pipeline run's description (markdown, MLflow's ``mlflow.note.content``): the pipeline, what it
    trained on which data for how long, how it ended, the headline result and the command behind it."""
    what = _model_of(cfg)
    version = tags.get(names.DATASET_VERSION)
    if version and cfg.kind != "rl":
        what += f" (data version {version[:12]})"
    if cfg.kind == "rl":
        what += f", {cfg.rl.max_iterations} iterations" if cfg.rl.max_iterations else ""
    elif cfg.kind not in ("knn", "bench", "compress"):
        what += f", {cfg.train.epochs} epoch{'s' if cfg.train.epochs != 1 else ''}"
    lines = [f"**{cfg.pipeline}** · {what} · {status}"]
    tests = sorted(((k, v) for k, v in metrics.items() if k.startswith(names.metric(names.TEST, "")) and names.is_headline(k)),
                   key=lambda kv: (kv[0].endswith("loss"), kv[0]))  # the task's own metric first, in bold
    result = [f"test {_label(k)} " + (f"**{_number(v)}**" if i == 0 else _number(v)) for i, (k, v) in enumerate(tests)]
    if names.RL_EVAL_RETURN_MEAN in metrics:
        result.append(f"greedy return **{metrics[names.RL_EVAL_RETURN_MEAN]:.1f}**")
    for k, v in sorted(metrics.items()):
        if k.startswith(names.BEST_VAL_PREFIX):
            at = f" (epoch {int(metrics[names.BEST_EPOCH])})" if names.BEST_EPOCH in metrics else ""
            result.append(f"best val {_label(k[len(names.BEST_VAL_PREFIX):])} {_number(v)}{at}")
    for key, unit in ((names.IMAGES_PER_S, "images/s"), (names.CHARS_PER_S, "chars/s")):
        if key in metrics:
            result.append(f"{_number(metrics[key])} {unit}")
    if names.PEAK_MEMORY_GIB in metrics:
        result.append(f"peak memory {metrics[names.PEAK_MEMORY_GIB]:.1f} GiB")
    if result:
        lines.append(" · ".join(result))
    if tags.get(names.DECISION_TAG):
        lines.append(f"registered: {tags[names.DECISION_TAG]}")
    if tags.get(names.COMMAND):
        lines.append(f"`{tags[names.COMMAND]}`")
    return "  \n".join(lines)


def conclude(parent: PipelineRun) -> dict[str, float]:
    """The end of a pipeline run: repeat its stages' headline metrics on the parent run and describe it.
    Returns the metrics repeated."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient(parent.uri)
    children = client.search_runs([parent.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'")
    own = client.get_run(parent.run_id).data
    headline = headline_metrics([(r.data.tags.get(names.STAGE_TAG, ""), r.data.metrics) for r in children],
                                parent.cfg.stages, own.metrics)
    note = describe_run(parent.cfg, {**own.metrics, **headline}, own.tags, "finished")
    now = int(time.time() * 1000)
    client.log_batch(parent.run_id, metrics=[Metric(k, v, now, 0) for k, v in headline.items()],
                     tags=[RunTag(names.RUN_NOTE_TAG, note)])
    return headline


def _describe_failure(parent: PipelineRun, status: str) -> None:
    """Say in the description how the run ended, when the store can still be written (else stay quiet:
    ``_finish_run_on_exit`` reports an unreachable server)."""
    from mlflow import MlflowClient

    if not _reachable(parent.uri):
        return
    with contextlib.suppress(Exception):
        client = MlflowClient(parent.uri)
        run = client.get_run(parent.run_id)
        client.set_tag(parent.run_id, names.RUN_NOTE_TAG,
                       describe_run(parent.cfg, run.data.metrics, run.data.tags, status))


def _child_run(parent: PipelineRun, stage: str) -> str | None:
    from mlflow import MlflowClient

    runs = MlflowClient(parent.uri).search_runs(
        [parent.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}' and tags.`{names.STAGE_TAG}` = '{stage}'",
        max_results=1)
    return runs[0].info.run_id if runs else None


def find_resumable(pipeline: str, uri: str, which: str) -> tuple[str, str]:
    """(run id, config.yaml text) of the run to resume: an id, or 'last' unfinished parent run."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    if which == "last":
        exp = client.get_experiment_by_name(names.experiment_name(pipeline))
        runs = [] if exp is None else [
            r for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"],
                                          max_results=50)
            if "mlflow.parentRunId" not in r.data.tags and r.info.status != "FINISHED"]
        if not runs:
            raise TrackingUnavailable(f"resume=last: no unfinished {pipeline} run in {uri} to resume.")
        run = runs[0]
    else:
        try:
            run = client.get_run(which)
        except MlflowException:
            raise TrackingUnavailable(f"resume={which}: no such MLflow run in {uri}.") from None
        if run.data.tags.get(names.PIPELINE_TAG) != pipeline or "mlflow.parentRunId" in run.data.tags:
            raise TrackingUnavailable(f"resume={which} is not a {pipeline} pipeline run; resume it with its own pipeline.")
        if run.info.status == "FINISHED":
            raise TrackingUnavailable(f"resume={which}: that run already finished; there is nothing to resume.")
    try:
        text = client.download_artifacts(run.info.run_id, names.CONFIG_ARTIFACT)
    except (MlflowException, OSError):
        raise TrackingUnavailable(f"resume={run.info.run_id}: the run has no {names.CONFIG_ARTIFACT} to resume from.") from None
    return run.info.run_id, Path(text).read_text()


@contextlib.contextmanager
def _finish_run_on_exit() -> Iterator[None]:
    """End the active run FINISHED, or FAILED with the error recorded; KILLED on Ctrl-C."""
    import mlflow

    try:
        yield
    except KeyboardInterrupt:
        mlflow.set_tag(names.ERROR_TAG, "interrupted by the user")
        mlflow.end_run("KILLED")
        raise
    except BaseException as e:
        uri = mlflow.get_tracking_uri()
        if uri.startswith(("http://", "https://")) and not _reachable(uri):
            # Recording the failure would only retry against a dead server and bury the real error.
            from pipelines.services.progress import say

            say(f"the MLflow server at {uri} is unreachable: this run stays RUNNING there, not FAILED; "
                f"nothing was registered after this point (resume=last continues the run once it is back)")
            raise
        mlflow.set_tag(names.ERROR_TAG, mask(f"{type(e).__name__}: {e}")[:5000])
        with contextlib.suppress(Exception):
            mlflow.log_text(mask("".join(traceback.format_exception(e))), "error.txt")
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def _reachable(uri: str) -> bool:
    try:
        check_store(uri, timeout_s=3)
    except TrackingUnavailable:
        return False
    return True


def log_config(cfg: Config) -> None:
    """The resolved config on the active run: every key as a param (secrets masked) and config.yaml."""
    import mlflow

    params = config_params(cfg)
    items = list(params.items())
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        mlflow.log_params(dict(items[i:i + 100]))
    mlflow.log_text(mask(dump(cfg)), names.CONFIG_ARTIFACT)


# --------------------------------------------------------------------------- active-run helpers


def set_tags(tags: Mapping[str, str]) -> None:
    import mlflow

    mlflow.set_tags({k: mask(str(v)) for k, v in tags.items()})


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_series(rows: Sequence[Mapping[str, float]], first_step: int = 1) -> None:
    """Per-step metrics of a finished loop on the active run, ``rows[i]`` at step ``first_step + i``, in
    batches (one call per 1,000 values instead of one per step)."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = [Metric(k, float(v), now, first_step + i) for i, row in enumerate(rows) for k, v in row.items()]
    run_id = mlflow.active_run().info.run_id
    for start in range(0, len(values), 1000):
        mlflow.MlflowClient().log_batch(run_id, metrics=values[start:start + 1000])


def log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    mlflow.log_params({k: mask_key(k, str(v)) for k, v in params.items()})


def log_figure(fig: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_figure(fig, artifact_file)
    fig.clear()


def log_json(obj: Any, artifact_file: str) -> None:
    import mlflow

    # a manifest names its source (a URL may carry a token): masked like every text visionray writes
    mlflow.log_text(mask(json.dumps(obj, indent=2, default=str)), artifact_file)


def log_table(rows: Sequence[Mapping[str, Any]], artifact_file: str) -> None:
    """A table artifact (one dict per row; columns: every key, first seen first) the MLflow UI shows and
    compares across runs."""
    import mlflow

    columns = list(dict.fromkeys(k for row in rows for k in row))
    mlflow.log_table({c: [row.get(c) for row in rows] for c in columns}, artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(text, artifact_file)


def log_image(image: Any, artifact_file: str | None = None, key: str | None = None, step: int | None = None) -> None:
    """An H×W(×C) uint8 or [0, 1] float image: as a file (``artifact_file``) or, with ``key`` and ``step``,
    as one of a series MLflow shows step by step."""
    import mlflow

    mlflow.log_image(image, artifact_file=artifact_file, key=key, step=step, synchronous=True)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path)


def log_dataset(name: str, version: str, source_dir: Path, context: str, schema: str) -> None:
    """Log the ingested shards as an MLflow dataset input (name, digest = dataset version)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "can be interpreted in multiple ways": both are local files
        source = resolve_dataset_source(source_dir.resolve().as_uri())
    dataset = MetaDataset(source, name=name, digest=version[:36])
    for attempt in range(3):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except mlflow.exceptions.MlflowException as e:
            # Two runs logging the same new dataset at once (two retrains started together): both
            # stores look it up, find nothing and insert it; the second insert breaks the unique key.
            # The row exists now, so logging again links this run to it.
            if "UNIQUE constraint failed" not in str(e) or attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))


def run_tags(run_id: str, uri: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient(uri).get_run(run_id).data.tags)


def run_metrics(run_id: str, uri: str) -> dict[str, float]:
    from mlflow import MlflowClient

    return dict(MlflowClient(uri).get_run(run_id).data.metrics)


class RunLogger:
    """Logs metrics to one run from any process (rank 0 of a Ray Train job); batched and retried."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self._client: Any = None
        self.logged_epochs: set[int] = set()

    def log_metrics(self, metrics: Mapping[str, float], step: int, attempts: int = 3) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for attempt in range(attempts):
            try:
                self.client().log_batch(self.run_id, metrics=batch)
                return
            except Exception:  # a busy SQLite file or a server hiccup: back off, then give up loudly
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5 * 2 ** attempt)

    def client(self) -> Any:
        """This logger's MLflow client, made on first use (in the Ray worker that logs, not the driver)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client().log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def backfill(self, history: Mapping[str, list[tuple[int, float]]]) -> int:
        """Log the epochs of ``history`` the run does not have yet (after a restart); returns how many."""
        from mlflow import MlflowClient

        client = MlflowClient(self.uri)
        self.logged_epochs = {m.step for m in client.get_metric_history(self.run_id, names.TRAIN_LOSS)}
        by_epoch: dict[int, dict[str, float]] = {}
        for key, points in history.items():
            for epoch, value in points:
                if epoch not in self.logged_epochs:
                    by_epoch.setdefault(epoch, {})[key] = value
        for epoch, metrics in sorted(by_epoch.items()):
            self.log_epoch(metrics, epoch)
        return len(by_epoch)

    def log_epoch(self, metrics: Mapping[str, float], epoch: int) -> bool:
        """Per-epoch metrics, each epoch once: an epoch re-run after a restart (its checkpoint was
        not committed before the crash) keeps the values first logged. Returns whether it logged."""
        if epoch in self.logged_epochs:
            return False
        self.log_metrics(metrics, step=epoch)
        self.logged_epochs.add(epoch)
        return True

    def set_tag(self, key: str, value: str) -> None:
        from mlflow import MlflowClient

        MlflowClient(self.uri).set_tag(self.run_id, key, value)

    def log_text(self, text: str, artifact_file: str) -> None:
        from mlflow import MlflowClient

        MlflowClient(self.uri).log_text(self.run_id, text, artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        """A file's contents (a PNG drawn by a worker) as the artifact ``artifact_file``."""
        from mlflow import MlflowClient

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_bytes(data)
            parent = str(Path(artifact_file).parent)
            MlflowClient(self.uri).log_artifact(self.run_id, str(path), None if parent == "." else parent)

    def log_image(self, image: Any, key: str, step: int) -> None:
        """A uint8 image as MLflow's image ``key`` at ``step`` (the UI shows them with a step slider)."""
        from mlflow import MlflowClient

        MlflowClient(self.uri).log_image(self.run_id, image, key=key, step=step, synchronous=True)


def temp_artifact_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="visionray-")


# --------------------------------------------------------------------------- sweeps


def trial_run(uri: str, experiment_id: str, parent_run_id: str, trial_id: str, name: str,
              params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
    """The run of one Tune trial, nested under the sweep's parent run: found by its trial id (a
    retried or restored trial continues its run), else created with its sampled params."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.search_runs(
        [experiment_id], max_results=1,
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`{names.TRIAL_ID_TAG}` = '{trial_id}'")
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=name, tags={
        **tags, "mlflow.parentRunId": parent_run_id, names.STAGE_TAG: names.TRIAL, names.TRIAL_ID_TAG: trial_id})
    items = [(f"{names.TRIAL_PARAM_PREFIX}{k}", str(v)) for k, v in params.items()]
    from mlflow.entities import Param

    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items])
    return run.info.run_id


def trial_runs(uri: str, experiment_id: str, parent_run_id: str) -> list[Any]:
    """Every trial run of a sweep (MLflow Run objects), oldest first."""
    from mlflow import MlflowClient

    return MlflowClient(uri).search_runs(
        [experiment_id], order_by=["attributes.start_time ASC"], max_results=10_000,
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`{names.STAGE_TAG}` = '{names.TRIAL}'")


def finish_run(uri: str, run_id: str, status: str, metrics: Mapping[str, float] | None = None,
               tags: Mapping[str, str] | None = None) -> None:
    """Close a run from outside it (the sweep's driver closes its trials' runs)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                     tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])
    client.set_terminated(run_id, status)


def log_rows(rows: list[Mapping[str, Any]], artifact_file: str) -> None:
    """A table on the active run: MLflow's table view (JSON, any keys) plus the same rows as CSV beside it."""
    import csv
    import io

    import mlflow

    columns = list(dict.fromkeys(k for row in rows for k in row))
    mlflow.log_table({c: [row.get(c) for row in rows] for c in columns}, artifact_file)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    mlflow.log_text(out.getvalue(), artifact_file.rsplit(".", 1)[0] + ".csv")


def log_lines(lines: list[str], artifact_file: str) -> None:
    """A text artifact on the active run, one line each."""
    import mlflow

    mlflow.log_text("".join(f"{line}\n" for line in lines), artifact_file)


def log_artifacts_to(uri: str, run_id: str, local_dir: str | Path, artifact_path: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(uri).log_artifacts(run_id, str(local_dir), artifact_path)


def download_artifacts(uri: str, run_id: str, artifact_path: str, into: str | Path) -> Path:
    from mlflow import MlflowClient

    return Path(MlflowClient(uri).download_artifacts(run_id, artifact_path, str(into)))


def metric_histories(uri: str, run_id: str, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """Each metric's (step, value) points, in step order."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


# --------------------------------------------------------------------------- reading runs (flows)


@dataclass(frozen=True)
class RunSummary:
    """What a flow reads of a run: its ids, status, tags and latest metric values (no MLflow types)."""

    run_id: str
    experiment_id: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]


def _summary(run: Any) -> RunSummary:
    return RunSummary(run.info.run_id, run.info.experiment_id, run.info.status, dict(run.data.tags),
                      dict(run.data.metrics))


def find_run(uri: str, run_id: str) -> RunSummary | None:
    """The run ``run_id``, or None when the store has no such run; an unreachable store raises."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return _summary(MlflowClient(uri).get_run(run_id))
    except MlflowException:
        return None


def child_runs(uri: str, experiment_id: str, parent_run_id: str, tags: Mapping[str, str] | None = None,
               max_results: int = 1000) -> list[RunSummary]:
    """The runs nested directly under ``parent_run_id``, optionally only those with every tag in ``tags``."""
    from mlflow import MlflowClient

    where = " and ".join([f"tags.`mlflow.parentRunId` = '{parent_run_id}'"]
                         + [f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()])
    return [_summary(r) for r in MlflowClient(uri).search_runs([experiment_id], filter_string=where,
                                                               max_results=max_results)]


def pipeline_runs(uri: str, pipeline: str, status: str | None = None, max_results: int = 50) -> list[RunSummary]:
    """The parent runs (not nested) of experiment ``visionray/<pipeline>``, newest first, with ``status``
    if given; among the latest ``max_results`` runs of the experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(names.experiment_name(pipeline))
    if exp is None:
        return []
    found = client.search_runs([exp.experiment_id], filter_string=f"attributes.status = '{status}'" if status else "",
                               order_by=["attributes.start_time DESC"], max_results=max_results)
    return [_summary(r) for r in found if "mlflow.parentRunId" not in r.data.tags]


def has_artifact(uri: str, run_id: str, artifact_path: str) -> bool:
    """Whether ``artifact_path`` is among the run's top-level artifacts (files or directories)."""
    from mlflow import MlflowClient

    return any(f.path == artifact_path for f in MlflowClient(uri).list_artifacts(run_id))


def active_run_id() -> str | None:
    """The id of this process's active run (the one ``log_metrics`` and friends write to), if any."""
    import mlflow

    active = mlflow.active_run()
    return active.info.run_id if active else None


@contextlib.contextmanager
def continue_run(uri: str, run_id: str) -> Iterator[str]:
    """Make the existing run ``run_id`` this process's active run (after ending any left over) and end
    it FINISHED when the block completes. A block that raises leaves the run open: whoever knows how it
    ended (a sweep's driver, for its trials) closes it."""
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(uri)
    mlflow.start_run(run_id=run_id)
    yield run_id
    mlflow.end_run("FINISHED")


# --------------------------------------------------------------------------- the dashboard and the run report


def latest_pipeline_run(uri: str) -> tuple[RunSummary, int] | None:
    """The newest parent run in any ``visionray/...`` experiment of the store and its start time (ms since
    the epoch), or None when there is none."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments() if e.name.startswith(names.experiment_name(""))]
    if not ids:
        return None
    for run in client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=1000):
        if "mlflow.parentRunId" not in run.data.tags:
            return _summary(run), int(run.info.start_time)
    return None


def set_experiment_tag(uri: str, experiment_id: str, key: str, value: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(uri).set_experiment_tag(experiment_id, key, value)


def artifact_files(uri: str, run_id: str, suffixes: tuple[str, ...], max_depth: int = 2) -> list[str]:
    """The run's artifact files ending in one of ``suffixes``, at most ``max_depth`` folders deep (figures
    live at ``plots/x.png``; model packages and checkpoints deeper down are not walked)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found, todo = [], [("", 1)]
    while todo:
        folder, depth = todo.pop()
        for f in client.list_artifacts(run_id, folder or None):
            if f.is_dir and depth < max_depth:
                todo.append((f.path, depth + 1))
            elif not f.is_dir and f.path.lower().endswith(suffixes):
                found.append(f.path)
    return sorted(found)


def read_artifact(uri: str, run_id: str, artifact_path: str) -> bytes:
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="visionray-artifact-") as tmp:
        return Path(MlflowClient(uri).download_artifacts(run_id, artifact_path, tmp)).read_bytes()
