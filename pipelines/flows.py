"""Wiring only: which stages a pipeline kind runs, in which order, and what passes between them.

Stages hand each other small records of files and URIs (manifest, normaliser, checkpoint, model
URI), never live objects, so any of them can be re-run alone. Each stage is a nested MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import names, tracking
from pipelines.config import Config, ConfigError
from pipelines.progress import duration, say

if TYPE_CHECKING:
    from pipelines.preprocess import Prepared

CLASSIFY_STAGES = ("ingest", "preprocess", "train", "evaluate", "register")

#: Every pipeline kind: the flow that runs it ("module:function", imported when it runs) and the
#: stages it may run, in order (a pipeline runs a prefix of them). One line per kind.
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "classify": ("pipelines.flows:classify", CLASSIFY_STAGES),
    "retrain": ("pipelines.flows:retrain_flow", CLASSIFY_STAGES),
    "bench": ("pipelines.flows:bench_flow", ("ingest", "bench")),
    "knn": ("pipelines.knn:flow", ("ingest", "preprocess", "knn", "evaluate", "register")),
    "zoo": ("pipelines.zoo:flow", ("ingest", "preprocess", "zoo")),
    "transfer": ("pipelines.transfer:flow", ("ingest", "preprocess", "transfer")),
    "sweep": ("pipelines.sweep:flow", ("ingest", "preprocess", "sweep", "evaluate", "register")),
    "ensemble": ("pipelines.ensemble:flow", ("ingest", "preprocess", "ensemble", "evaluate", "register")),
    "compress": ("pipelines.compress:flow", ("ingest", "preprocess", "compress", "report")),
    "rl": ("pipelines.rl:flow", ("train", "evaluate", "register")),
}
#: Kinds that read no image dataset (no data checks before they start).
NO_DATA_KINDS = ("rl",)


@dataclass
class PipelineResult:
    run_id: str
    outputs: dict[str, Any] = field(default_factory=dict)


def validate_stages(cfg: Config) -> None:
    order = KINDS[cfg.kind][1]
    if cfg.kind == "retrain" and tuple(cfg.stages) != CLASSIFY_STAGES:
        raise ConfigError(f"stages={list(cfg.stages)}: retrain runs all of {list(CLASSIFY_STAGES)}.")
    if tuple(cfg.stages) != order[:len(cfg.stages)] or not cfg.stages:
        raise ConfigError(f"stages={list(cfg.stages)} must be a prefix of {list(order)}: each stage "
                          f"needs the output of the one before it.")


def preflight(cfg: Config) -> None:
    """User errors that need no Ray and no MLflow run: caught before anything starts."""
    from components.data.errors import DataError
    from components.data.sources import locate_fashion_mnist

    validate_stages(cfg)
    if cfg.kind == "transfer" and not cfg.transfer.source:  # issue 3
        raise ConfigError("transfer.source is required: models:/NAME@alias, models:/NAME/VERSION or a run id.")
    if cfg.kind == "rl":  # issue 6: an unknown env id or an unsupported algo/env pair
        from pipelines.rl import check

        check(cfg)
    if cfg.kind in NO_DATA_KINDS:
        return
    d = cfg.data
    if d.name == "fashion_mnist" and locate_fashion_mnist(d.path) is None and not d.allow_download:
        where = d.path or "$VISIONRAY_DATA or /usr/share/datasets/fashion-mnist"
        raise DataError(f"Fashion-MNIST was not found in {where}; install the Debian package "
                        f"dataset-fashion-mnist, set data.path, or allow data.allow_download=true.")
    if d.name in ("image_folder", "cifar10") and d.path is None:
        raise DataError(f"data={d.name} needs data.path (a {'folder' if d.name == 'image_folder' else 'tarball or URL'}).")
    if d.path and "://" not in d.path and not Path(d.path).expanduser().exists():
        raise DataError(f"data.path {d.path} does not exist.")
    if cfg.train.precision == "fp16" and not cfg.cluster.use_gpu:
        raise ConfigError("train.precision=fp16 needs cluster.use_gpu=true; use bf16 on CPU.")


def run_pipeline(cfg: Config, command: str) -> PipelineResult:
    import contextlib
    import time

    from pipelines import runtime

    cfg, resume_id = resolve_resume(cfg)
    preflight(cfg)
    started = time.perf_counter()
    with tracking.pipeline_run(cfg, command, resume_id) as parent:
        say(f"{cfg.pipeline}: MLflow run {parent.run_id} in experiment "
            f"{names.experiment_name(cfg.pipeline)} ({parent.uri})")
        # retrain starts Ray itself, once it knows there is something to train (a no-op stays quick)
        ray = contextlib.nullcontext() if cfg.kind == "retrain" else runtime.ray_session(cfg.cluster)
        with runtime.MemoryWatcher() as memory, ray:
            if cfg.kind != "retrain":  # retrain runs this check right after it starts Ray
                # Multi-node: shards and checkpoints must be on storage every node sees (else exit 2 here).
                runtime.check_shared_storage(shared_paths(cfg))
            outputs = flow_for(cfg.kind)(cfg, parent)
        elapsed = time.perf_counter() - started
        tracking.log_metrics({"perf/peak_memory_gib": memory.peak_bytes / 2**30, "perf/pipeline_seconds": elapsed})
        say(f"{cfg.pipeline}: done in {duration(elapsed)} (peak memory of all processes "
            f"{memory.peak_bytes / 2**30:.1f} GiB)")
    return PipelineResult(parent.run_id, outputs)


def flow_for(kind: str):
    import importlib

    module, _, function = KINDS[kind][0].partition(":")
    return getattr(importlib.import_module(module), function)


def resolve_resume(cfg: Config) -> tuple[Config, str | None]:
    """With ``resume=``, the interrupted run's own config (from its config.yaml) and its run id."""
    import dataclasses

    import yaml

    from pipelines.config import build

    if not cfg.resume:
        return cfg, None
    uri = tracking.resolve_uri(cfg.tracking.uri)
    tracking.check_store(uri)
    run_id, text = tracking.find_resumable(cfg.pipeline, uri, cfg.resume)
    original = build(Config, yaml.safe_load(text), "")
    say(f"resuming {cfg.pipeline} run {run_id} with its original config")
    return dataclasses.replace(original, resume=run_id), run_id


def workdir_for(cfg: Config, run_id: str) -> Path:
    return Path(cfg.cluster.storage_path).resolve() / f"{cfg.pipeline}-{run_id}"


def prepare(cfg: Config, parent: tracking.PipelineRun, workdir: Path, out: dict[str, Any]) -> Prepared | None:
    """Stage ``ingest``, then ``preprocess`` when it is in ``cfg.stages``: the start of every image pipeline.

    Records ``out["manifest"]`` (and ``out["prepared"]``), tags the parent run with the dataset version
    and logs the train split as the parent's dataset input too (the runs table shows it). Returns the
    :class:`~pipelines.preprocess.Prepared`, or None when ``preprocess`` is not among the stages.
    """
    from pipelines import ingest, preprocess

    with stage("ingest", parent, cfg):
        manifest = out["manifest"] = ingest.run(cfg)
    parent.set_tags({names.DATASET_VERSION: manifest.version})
    ingest.log_dataset_inputs(manifest, ("train",))  # on the parent too: the runs table shows it
    if "preprocess" not in cfg.stages:
        return None
    with stage("preprocess", parent, cfg):
        prepared = out["prepared"] = preprocess.run(cfg, manifest, workdir)
    return prepared


def classify(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines import evaluate, registry, train

    out: dict[str, Any] = {}
    workdir = workdir_for(cfg, parent.run_id)
    prepared = prepare(cfg, parent, workdir, out)
    manifest = out["manifest"]
    if "train" in cfg.stages:
        with stage("train", parent, cfg) as run_id:
            trained = out["trained"] = train.run(cfg, prepared, parent.uri, run_id,
                                                 f"{cfg.pipeline}-{parent.run_id}", workdir)
    if "evaluate" in cfg.stages:
        with stage("evaluate", parent, cfg):
            evaluation = out["evaluation"] = evaluate.run(cfg, prepared, trained)
        tracking.log_metrics({names.TEST_LOSS: evaluation.test_loss, names.TEST_ACCURACY: evaluation.test_accuracy})
    if "register" in cfg.stages and cfg.registry.enabled:
        with stage("register", parent, cfg):
            tags = {names.DATASET_VERSION: manifest.version, names.GIT_SHA: parent.tags[names.GIT_SHA],
                    names.RUN_ID: parent.run_id}
            out["decision"] = registry.run(cfg, evaluation, prepared.num_classes, tags)
        parent.set_tags({names.DECISION_TAG: f"{out['decision'].alias}: {out['decision'].model_uri}"})
    return out


def shared_paths(cfg: Config) -> dict[str, str]:
    return {"cluster.storage_path": cfg.cluster.storage_path, "data.cache_dir": cfg.data.cache_dir}


def retrain_flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines import retrain

    return retrain.flow(cfg, parent)


def bench_flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines import bench

    workdir = workdir_for(cfg, parent.run_id)
    ingested: dict[str, Any] = {}
    prepare(cfg, parent, workdir, ingested)  # bench's stages have no preprocess: ingest only
    with stage("bench", parent, cfg):
        results = bench.run(cfg, ingested["manifest"], workdir)
    tracking.log_metrics(results)
    return {"bench": results}


class stage:
    """A stage's nested MLflow run plus its start/end lines on the terminal."""

    def __init__(self, name: str, parent: tracking.PipelineRun, cfg: Config):
        self.name, self.parent, self.cfg = name, parent, cfg
        self._cm: Any = None

    def __enter__(self) -> str:
        import time

        self.started = time.perf_counter()
        position = list(self.cfg.stages).index(self.name) + 1
        say(f"stage {self.name} ({position}/{len(self.cfg.stages)})")
        self._cm = tracking.stage_run(self.name, self.parent)
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> bool:
        import time

        suppressed = bool(self._cm.__exit__(*exc))
        if exc[0] is None:
            say(f"stage {self.name} finished in {duration(time.perf_counter() - self.started)}")
        return suppressed

