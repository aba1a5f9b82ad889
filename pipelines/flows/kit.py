"""The shared kit of every flow: the working directory, a stage's nested run, ingest + preprocess.

Stages hand each other small records of files and URIs (manifest, normaliser, checkpoint, model
URI), never live objects, so any of them can be re-run alone. Each stage is a nested MLflow run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.config import Config, ConfigError
from pipelines.records import Evaluation, Prepared
from pipelines.services import names, startup, tracking
from pipelines.services.progress import duration, say


def workdir_for(cfg: Config, run_id: str) -> Path:
    return Path(cfg.cluster.storage_path).resolve() / f"{cfg.pipeline}-{run_id}"


def prepare(cfg: Config, parent: tracking.PipelineRun, workdir: Path, out: dict[str, Any]) -> Prepared | None:
    """Stage ``ingest``, then ``preprocess`` when it is in ``cfg.stages``: the start of every image pipeline.

    Records ``out["manifest"]`` (and ``out["prepared"]``), tags the parent run with the dataset version
    and logs the train split as the parent's dataset input too (the runs table shows it). Returns the
    :class:`~pipelines.stages.preprocess.Prepared`, or None when ``preprocess`` is not among the stages.
    """
    from pipelines.stages import ingest, preprocess

    with stage("ingest", parent, cfg):
        manifest = out["manifest"] = ingest.run(cfg)
    parent.set_tags({names.DATASET_VERSION: manifest.version})
    ingest.log_dataset_inputs(manifest, ("train",))  # on the parent too: the runs table shows it
    if "preprocess" not in cfg.stages:
        return None
    with stage("preprocess", parent, cfg):
        prepared = out["prepared"] = preprocess.run(cfg, manifest, workdir)
    return prepared


def shared_paths(cfg: Config) -> dict[str, str]:
    return {"cluster.storage_path": cfg.cluster.storage_path, "data.cache_dir": cfg.data.cache_dir}


def test_metrics(evaluation: Evaluation) -> dict[str, float]:
    """An evaluation's test metrics under their MLflow names (test/loss, test/accuracy, ...)."""
    return {names.metric(names.TEST, k): v for k, v in evaluation.metrics.items()}


def register(cfg: Config, parent: tracking.PipelineRun, evaluation: Evaluation, num_classes: int,
             out: dict[str, Any], dataset_version: str) -> None:
    """Stage ``register`` when it is in ``cfg.stages`` and ``registry.enabled``: the evaluated model
    becomes a version, the gate picks its alias, and the parent run is tagged with the decision."""
    from pipelines.services import registry

    if "register" not in cfg.stages or not cfg.registry.enabled:
        return
    with stage("register", parent, cfg):
        tags = {names.DATASET_VERSION: dataset_version, names.GIT_SHA: parent.tags[names.GIT_SHA],
                names.RUN_ID: parent.run_id}
        decision = out["decision"] = registry.run(cfg, evaluation, num_classes, tags)
    parent.set_tags({names.DECISION_TAG: f"{decision.alias}: {decision.model_uri}"})


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
        startup.mark(self.name)  # (a stage after train marks too, unread: the workers' timeline was taken)
        if exc[0] is None:
            say(f"stage {self.name} finished in {duration(time.perf_counter() - self.started)}")
        return suppressed


def backbone_init(cfg: Config, spec) -> dict[str, Any]:
    """The initial weights of ``spec``'s net (a detector, or a segmenter on a ResNet trunk) with its backbone
    from ``model.backbone_from`` (a registered ResNet classifier of the same depth and width;
    components.transfer.backbone_state), the rest freshly initialised with the run's seed. Tags the train
    run with the source; the train stage hands the weights to every worker (``init_state``)."""
    import tempfile

    import torch

    from components.packaging import load_package
    from components.transfer import backbone_state
    from pipelines.services.registry import fetch_package

    source = cfg.model.backbone_from
    with tempfile.TemporaryDirectory(prefix="visionray-backbone-") as tmp:
        try:
            classifier, _ = load_package(fetch_package(source, Path(tmp), tracking.resolve_uri(cfg.tracking.uri)))
        except ConfigError as e:
            raise ConfigError(str(e).replace("retrain.init_from", "model.backbone_from")) from None
    torch.manual_seed(cfg.seed)
    target = spec.build().net
    try:
        state = backbone_state(getattr(classifier, "net", classifier), target)
    except ValueError as e:
        raise ConfigError(f"model.backbone_from={source}: {e}.") from None
    tracking.set_tags({names.TRANSFER_SOURCE_TAG: source})
    say(f"train: {spec.name} backbone from {source}")
    return state
