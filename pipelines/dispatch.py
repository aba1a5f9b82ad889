"""The dispatcher: which flow runs a pipeline kind, which stages it may run, and the run around it.

    visionray run quickstart        →  run_pipeline(load_config("quickstart"), command)

Layers, top to bottom (imports only go down): ``entry`` (cli, jobs, schedule) → this module →
``flows`` (whole pipelines) → ``stages`` → ``records`` → ``services`` → ``config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipelines.config import Config, ConfigError
from pipelines.flows.kit import shared_paths
from pipelines.services import names, tracking
from pipelines.services.progress import duration, say

CLASSIFY_STAGES = ("ingest", "preprocess", "train", "evaluate", "register")

#: Every pipeline kind and the stages it may run, in order (a pipeline runs a prefix of them).
KINDS: dict[str, tuple[str, ...]] = {
    "classify": CLASSIFY_STAGES,
    "retrain": CLASSIFY_STAGES,
    "bench": ("ingest", "bench"),
    "knn": ("ingest", "preprocess", "knn", "evaluate", "register"),
    "zoo": ("ingest", "preprocess", "zoo"),
    "transfer": ("ingest", "preprocess", "transfer"),
    "sweep": ("ingest", "preprocess", "sweep", "evaluate", "register"),
    "ensemble": ("ingest", "preprocess", "ensemble", "evaluate", "register"),
    "compress": ("ingest", "preprocess", "compress", "report"),
    "rl": ("train", "evaluate", "register"),
    "charlm": ("ingest", "baseline", "train", "evaluate", "register"),
    "caption": ("ingest", "train", "evaluate", "register"),
    "segment": CLASSIFY_STAGES,
    "detect": CLASSIFY_STAGES,
    "explain": ("ingest", "explain"),
    "style": ("style",),
    "generate": CLASSIFY_STAGES,
}
#: Kinds that train segmentation nets on datasets with masks (and the datasets that have them).
DENSE_KINDS = {"segment": ("shapes", "fashion_scenes", "mask_folder")}
#: Sources with boxes (the detect pipeline reads only these).
BOX_SOURCES = ("shapes", "fashion_scenes", "coco")
#: The detectors (components.models.detectors.DETECTORS, named here so a check needs no torch), and the
#: kinds that build an image classifier from model.name.
DETECTOR_MODELS = ("centernet", "two_stage", "localizer")
CLASSIFIER_KINDS = ("classify", "retrain", "sweep", "ensemble", "compress", "bench")
#: Kinds that read their own data (the datasets each takes), not an image dataset.
OWN_DATA_KINDS = {"charlm": ("austen", "text"), "caption": ("fashion_grid", "coco_captions")}
#: Kinds that read no image dataset (no data checks before they start).
NO_DATA_KINDS = ("rl", "style")


def flow_for(kind: str) -> Callable[[Config, tracking.PipelineRun], dict[str, Any]]:
    """The flow function of a pipeline kind (imported here, when a run starts: flows import torch)."""
    from pipelines.flows import (
        bench,
        caption,
        charlm,
        classify,
        compress,
        detect,
        ensemble,
        explain,
        generate,
        knn,
        retrain,
        rl,
        segment,
        style,
        sweep,
        transfer,
        zoo,
    )

    return {"classify": classify.flow, "retrain": retrain.flow, "bench": bench.flow, "knn": knn.flow,
            "zoo": zoo.flow, "transfer": transfer.flow, "sweep": sweep.flow, "ensemble": ensemble.flow,
            "compress": compress.flow, "rl": rl.flow, "charlm": charlm.flow,
            "caption": caption.flow, "segment": segment.flow, "detect": detect.flow,
            "generate": generate.flow, "explain": explain.flow, "style": style.flow}[kind]


@dataclass
class PipelineResult:
    run_id: str
    outputs: dict[str, Any] = field(default_factory=dict)


def validate_stages(cfg: Config) -> None:
    order = KINDS[cfg.kind]
    if cfg.kind == "retrain" and tuple(cfg.stages) != CLASSIFY_STAGES:
        raise ConfigError(f"stages={list(cfg.stages)}: retrain runs all of {list(CLASSIFY_STAGES)}.")
    if tuple(cfg.stages) != order[:len(cfg.stages)] or not cfg.stages:
        raise ConfigError(f"stages={list(cfg.stages)} must be a prefix of {list(order)}: each stage "
                          f"needs the output of the one before it.")


def check_model_kind(cfg: Config) -> None:
    """Generative models train only in the generate pipeline, and it trains only them."""
    from pipelines.config.schema import GENERATIVE_MODELS

    if cfg.kind == "generate" and cfg.model.name not in GENERATIVE_MODELS:
        raise ConfigError(f"model={cfg.model.name} is not a generative model; the generate pipeline trains "
                          + " or ".join(f"model={m}" for m in GENERATIVE_MODELS) + ".")
    if (cfg.kind == "generate" and cfg.model.name in ("vae", "dcgan", "cdcgan", "ddpm")
            and cfg.data.name == "image_folder" and cfg.data.image_size % 4):
        raise ConfigError(f"data.image_size={cfg.data.image_size}: model={cfg.model.name} halves the image twice, "
                          f"so it must be a multiple of 4.")
    if cfg.kind in ("classify", "retrain", "sweep", "ensemble", "bench") and cfg.model.name in GENERATIVE_MODELS:
        raise ConfigError(f"model={cfg.model.name} is a generative model; run it with the generate pipeline "
                          f"(visionray run generate model={cfg.model.name}).")


def preflight(cfg: Config) -> None:
    """User errors that need no Ray and no MLflow run: caught before anything starts."""
    from components.data.errors import DataError
    from components.data.sources import locate_fashion_mnist

    validate_stages(cfg)
    check_model_kind(cfg)
    if cfg.kind == "generate":  # a model judged by FID needs its judge registered
        from pipelines.flows.generate_fid import check_registered

        check_registered(cfg)
    if cfg.kind == "transfer" and not cfg.transfer.source:
        raise ConfigError("transfer.source is required: models:/NAME@alias, models:/NAME/VERSION or a run id.")
    check_local_package(cfg)
    if cfg.kind == "rl":  # an unknown env id or an unsupported algo/env pair
        from pipelines.flows.rl import check

        check(cfg)
    if cfg.kind in ("explain", "style"):  # the model and images named exist
        from pipelines.flows import explain, style

        {"explain": explain.check, "style": style.check}[cfg.kind](cfg)
    if cfg.kind in NO_DATA_KINDS:
        return
    check_dense(cfg)
    d = cfg.data
    if (cfg.kind == "detect") != (cfg.model.name in DETECTOR_MODELS) and cfg.kind in ("detect", *CLASSIFIER_KINDS):
        raise ConfigError(f"model={cfg.model.name} is not a detector; choose one of {', '.join(DETECTOR_MODELS)}."
                          if cfg.kind == "detect" else
                          f"model={cfg.model.name} is a detector: run it with `visionray run detect`.")
    if cfg.kind == "detect" and d.name not in BOX_SOURCES:
        raise ConfigError(f"the {cfg.pipeline} pipeline reads data with boxes ({', '.join(BOX_SOURCES)}), "
                          f"not data={d.name}.")
    if d.name == "coco" and (not d.path or not Path(d.path).expanduser().is_file()):
        raise DataError(f"data=coco needs data.path, a COCO-format instances file (instances_*.json); "
                        f"{d.path or 'none was given'} is not a file.")
    own = {name for names_ in OWN_DATA_KINDS.values() for name in names_}
    takes = OWN_DATA_KINDS.get(cfg.kind)
    text_bench = cfg.kind == "bench" and d.name in OWN_DATA_KINDS["charlm"]  # the bench times charlm's loop too
    if not text_bench and ((d.name not in takes) if takes else (d.name in own)):
        raise ConfigError(f"the {cfg.pipeline} pipeline does not read data={d.name}; it reads "
                          + (" or ".join(f"data={n}" for n in takes) if takes else "an image dataset"))
    if cfg.kind == "caption" and d.name == "coco_captions":
        if not d.path or not Path(d.path).expanduser().is_file():
            raise DataError(f"data=coco_captions needs data.path, a COCO-format caption file (captions_*.json); "
                            f"{d.path or 'none was given'} is not a file.")
        root = Path(d.image_root or Path(d.path).expanduser().parent).expanduser()
        if not root.is_dir():
            raise DataError(f"data.image_root {root} (the folder of the caption file's images) is not a directory.")
        return
    if cfg.kind == "caption":
        if locate_fashion_mnist(d.path) is None and not d.allow_download:
            raise DataError("fashion_grid is built from Fashion-MNIST, which was not found; install the Debian "
                            "package dataset-fashion-mnist, set data.path, or allow data.allow_download=true.")
        return
    if cfg.kind == "charlm" or text_bench:
        from components.data.sources import load_text_source

        if cfg.charlm.arch == "transformer" and cfg.train.bptt > cfg.charlm.context:
            raise ConfigError(f"train.bptt={cfg.train.bptt} is longer than the transformer's charlm.context="
                              f"{cfg.charlm.context}; lower train.bptt or raise charlm.context.")

        load_text_source(d.name, path=d.path)  # a missing, binary or empty corpus: exit 2, the file named
        return
    if d.name in ("fashion_mnist", "fashion_scenes") and locate_fashion_mnist(d.path) is None and not d.allow_download:
        where = d.path or "$VISIONRAY_DATA or /usr/share/datasets/fashion-mnist"
        raise DataError(f"Fashion-MNIST was not found in {where}; install the Debian package "
                        f"dataset-fashion-mnist, set data.path, or allow data.allow_download=true.")
    if d.name in ("image_folder", "cifar10", "mask_folder") and d.path is None:
        raise DataError(f"data={d.name} needs data.path (a {'tarball or URL' if d.name == 'cifar10' else 'folder'}).")
    if d.path and "://" not in d.path and not Path(d.path).expanduser().exists():
        raise DataError(f"data.path {d.path} does not exist.")
    if d.name == "image_folder":  # a file, no classes, an empty class: exit 2 here, not once Ray is up
        from components.data.sources.image_folder import scan_image_folder

        scan_image_folder(d.path)
    if cfg.train.precision == "fp16" and not cfg.cluster.use_gpu:
        raise ConfigError("train.precision=fp16 needs cluster.use_gpu=true; use bf16 on CPU.")


def check_local_package(cfg: Config) -> None:
    """A model package given as a local folder (transfer.source, retrain.init_from) is checked here, before
    anything starts: one that could run code when loaded is refused (exit 2). Registry and run URIs are
    checked by the same loader once downloaded."""
    from components.package_safety import UnsafePackage
    from components.packaging import check_package

    given = {"transfer": ("transfer.source", cfg.transfer.source),
             "retrain": ("retrain.init_from", cfg.retrain.init_from)}.get(cfg.kind)
    if not given or not given[1] or "://" in given[1] or ":/" in given[1]:
        return
    key, value = given
    folder = Path(value).expanduser()
    if not folder.is_dir():
        return
    from pipelines.services.registry import package_in

    try:
        check_package(package_in(folder))
    except UnsafePackage as e:
        raise UnsafePackage(f"{key}={value} is refused: {e}") from None


def check_dense(cfg: Config) -> None:
    """A segment pipeline needs a segmentation net and data with masks (and a ResNet trunk to start from a
    classifier); other pipelines no segmentation net."""
    from components.models import SEGMENTATION_MODELS

    takes = DENSE_KINDS.get(cfg.kind)
    if takes and cfg.data.name not in takes:
        raise ConfigError(f"the {cfg.pipeline} pipeline reads data with masks: "
                          + " or ".join(f"data={n}" for n in takes) + f", not data={cfg.data.name}.")
    if takes and cfg.model.name not in SEGMENTATION_MODELS:
        raise ConfigError(f"the {cfg.pipeline} pipeline trains a segmentation net: "
                          + " or ".join(f"model={n}" for n in SEGMENTATION_MODELS) + f", not model={cfg.model.name}.")
    if takes and cfg.model.backbone_from and cfg.model.name != "fcn_resnet":
        raise ConfigError(f"model.backbone_from starts a ResNet trunk from a classifier: the {cfg.pipeline} pipeline "
                          f"takes it with model=fcn_resnet; model={cfg.model.name} has an encoder of its own.")
    if not takes and cfg.kind != "bench" and cfg.model.name in SEGMENTATION_MODELS:
        raise ConfigError(f"model={cfg.model.name} is a segmentation net; train it with `visionray run segment`.")


def run_pipeline(cfg: Config, command: str) -> PipelineResult:
    import contextlib
    import time

    from pipelines.services import runtime, startup

    startup.begin()
    cfg, resume_id = resolve_resume(cfg)
    preflight(cfg)
    started = time.perf_counter()
    with tracking.pipeline_run(cfg, command, resume_id) as parent:
        startup.mark("tracking")
        say(f"{cfg.pipeline}: MLflow run {parent.run_id} in experiment "
            f"{names.experiment_name(cfg.pipeline)} ({parent.uri})")
        # retrain starts Ray itself, once it knows there is something to train (a no-op stays quick); through
        # ray:// its flow runs on the cluster, so the client connects first
        local_retrain = cfg.kind == "retrain" and not runtime.client_mode(cfg.cluster)
        ray = contextlib.nullcontext() if local_retrain else runtime.ray_session(cfg.cluster)
        with runtime.MemoryWatcher() as memory, ray:
            startup.mark("ray")
            if not local_retrain:  # retrain runs this check right after it starts Ray
                # Multi-node: shards and checkpoints must be on storage every node sees (else exit 2 here).
                runtime.check_shared_storage(shared_paths(cfg))
            # Through ray:// the flow runs as a task on the cluster (runtime.client_mode says why)
            outputs = on_cluster(cfg, parent) if runtime.client_mode(cfg.cluster) else flow_for(cfg.kind)(cfg, parent)
        elapsed = time.perf_counter() - started
        tracking.log_metrics({names.PEAK_MEMORY_GIB: memory.peak_bytes / 2**30, names.PIPELINE_SECONDS: elapsed})
        say(f"{cfg.pipeline}: done in {duration(elapsed)} (peak memory of all processes "
            f"{memory.peak_bytes / 2**30:.1f} GiB)")
        from pipelines.flows.report import log_report

        log_report(cfg, parent, outputs)  # report.html on the parent run: headline, figures, config vs champion
    return PipelineResult(parent.run_id, outputs)


def unmasked(stored: Any, current: Any) -> Any:
    """``stored`` (a config read back from config.yaml) with each masked value that ``current`` holds
    unmasked put back: a resumed run connects with the credentials given on its command line."""
    from pipelines.config.secrets import MASK, mask

    if isinstance(stored, dict) and isinstance(current, dict):
        return {k: unmasked(v, current.get(k)) for k, v in stored.items()}
    if isinstance(stored, str) and MASK in stored and isinstance(current, str) and mask(current) == stored:
        return current
    return stored


def on_cluster(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    """The flow of ``cfg`` as one Ray task on the cluster this Ray Client is connected to (``ray://``),
    its output streamed to this terminal by Ray; an error it raises is raised here as its own type."""
    import os

    import ray

    task = ray.remote(num_cpus=0, max_calls=1)(_flow_in_task)
    try:
        return ray.get(task.remote(cfg, parent, os.getcwd()))
    except ray.exceptions.RayTaskError as e:
        raise e.as_instanceof_cause() from None


def _flow_in_task(cfg: Config, parent: tracking.PipelineRun, cwd: str) -> dict[str, Any]:
    import os

    if os.path.isdir(cwd):  # relative paths (data/, checkpoints/) as on the driver, where the node shares them
        os.chdir(cwd)
    from pipelines.services import quiet

    quiet.quiet_driver()  # this task is the pipeline's driver: the same quiet terminal (VISIONRAY_VERBOSE carries -v)
    with tracking.attached(parent):
        return flow_for(cfg.kind)(cfg, parent)


def resolve_resume(cfg: Config) -> tuple[Config, str | None]:
    """With ``resume=``, the interrupted run's own config (from its config.yaml) and its run id."""
    import dataclasses

    import yaml

    from pipelines.config import build, dump

    if not cfg.resume:
        return cfg, None
    uri = tracking.resolve_uri(cfg.tracking.uri)
    tracking.check_store(uri)
    run_id, text = tracking.find_resumable(cfg.pipeline, uri, cfg.resume)
    # config.yaml has its credentials masked: the ones given now (tracking.uri=…) fill them back in
    stored = unmasked(yaml.safe_load(text), yaml.safe_load(dump(cfg)))
    original = build(Config, stored, "")
    say(f"resuming {cfg.pipeline} run {run_id} with its original config")
    return dataclasses.replace(original, resume=run_id), run_id



