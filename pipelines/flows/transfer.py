"""Pipeline ``transfer`` (CS231n §7.3): start from a registered model, re-initialise the head, train on new labels.

    # pre-train on Fashion-MNIST classes 0-4 and register it
    visionray run train model=convnet data.classes=[0,1,2,3,4] registry.name=fmnist-0-4
    # transfer to classes 5-9 with 500 labelled images: fine-tune everything at train.lr x 0.1 ...
    visionray run transfer transfer.source=models:/fmnist-0-4@champion data.classes=[5,6,7,8,9] \\
        data.max_train_rows=500
    # ... or train only the new head on the frozen backbone (feature extraction)
    visionray run transfer transfer.source=models:/fmnist-0-4/1 train.freeze=backbone ...

``transfer.source`` is ``models:/NAME@alias``, ``models:/NAME/VERSION`` (the configured registry),
an MLflow run id (a pipeline's parent run or its train stage: its ``best_model``), or any URI
``pipelines.services.registry.fetch_package`` accepts. Stages: ingest → preprocess → transfer, where the
transfer stage trains the source's architecture with the new head through the one training loop
(``train.run`` with ``init_state`` and, for ``train.freeze=backbone``, the FreezeBackbone hook),
then, unless ``transfer.scratch=false``, a nested ``scratch`` run trains the same architecture
from a fresh init on the same data and budget (epochs, batch, train.lr). The parent logs
``transfer/test_accuracy``, ``transfer/scratch_test_accuracy``, ``transfer/gain`` and
``plots/transfer_vs_scratch.png``.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from components.packaging import ARCH_FILE, ModelSpec, load_package
from components.transfer import FreezeBackbone, transfer_state
from pipelines.config import Config, ConfigError
from pipelines.flows import kit
from pipelines.services import names, tracking
from pipelines.services.progress import say

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def resolve_source(source: str, dst: Path, registry_name: str) -> Path:
    """The model package that ``transfer.source`` names, downloaded under ``dst``; ``registry_name`` is
    the store's URI (runs are looked up there too)."""
    from pipelines.services.registry import fetch_package

    if _RUN_ID.match(source):
        return _package_of_run(source, dst, registry_name)
    try:
        return fetch_package(source, dst, registry_name)
    except ConfigError as e:
        raise ConfigError(str(e).replace("retrain.init_from", "transfer.source")) from None


def _package_of_run(run_id: str, dst: Path, uri: str) -> Path:
    """A run's ``best_model`` package: the run's own, or its train stage's (for a pipeline's parent run)."""
    try:
        run = tracking.find_run(uri, run_id)
    except Exception as e:  # noqa: BLE001 - the store is unreachable: the user's to fix
        raise ConfigError(f"transfer.source={run_id} is not a run in the tracking store ({type(e).__name__}).") from None
    if run is None:
        raise ConfigError(f"transfer.source={run_id} is not a run in the tracking store.")
    children = tracking.child_runs(uri, run.experiment_id, run_id)
    for rid in [run_id] + [r.run_id for r in children if r.tags.get(names.STAGE_TAG) == "train"]:
        if tracking.has_artifact(uri, rid, names.BEST_MODEL_ARTIFACT):
            root = tracking.download_artifacts(uri, rid, names.BEST_MODEL_ARTIFACT, dst)
            found = sorted(root.rglob(ARCH_FILE))  # best_model/ or best_model/<dir>/, as the store kept it
            if found:
                return found[0].parent
    raise ConfigError(f"transfer.source={run_id}: neither the run nor its train stage logged a best_model package.")


def target_spec(source: ModelSpec, cfg: Config, manifest) -> ModelSpec:
    """The source architecture with the new label set (and the new data's normaliser layout)."""
    h, _, c = manifest.shape
    if (c, h) != (source.in_channels, source.image_size):
        raise ConfigError(f"transfer.source takes {source.image_size}x{source.image_size}x{source.in_channels} "
                          f"images, data={cfg.data.name} has {h}x{h}x{c}.")
    return dataclasses.replace(source, num_classes=len(manifest.classes), classes=tuple(manifest.classes),
                               normalization=cfg.data.normalization)


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines.stages import evaluate, train

    if not cfg.transfer.source:
        raise ConfigError("transfer.source is required: models:/NAME@alias, models:/NAME/VERSION or a run id.")
    out: dict[str, Any] = {}
    workdir = kit.workdir_for(cfg, parent.run_id)
    prepared = kit.prepare(cfg, parent, workdir, out)
    manifest = out["manifest"]
    if "transfer" not in cfg.stages:
        return out
    freeze = cfg.train.freeze == "backbone"
    lr = cfg.train.lr if freeze else cfg.train.lr * cfg.transfer.lr_factor
    with kit.stage("transfer", parent, cfg) as run_id:
        with tempfile.TemporaryDirectory(prefix="visionray-transfer-") as tmp:
            source_model, source_spec = load_package(resolve_source(cfg.transfer.source, Path(tmp),
                                                                    tracking.resolve_uri(cfg.tracking.uri)))
        spec = target_spec(source_spec, cfg, manifest)
        torch.manual_seed(cfg.seed)  # the new head's init
        state, head = transfer_state(source_model.net, spec.build().net)
        tracking.set_tags({names.TRANSFER_SOURCE_TAG: cfg.transfer.source, names.TRANSFER_HEAD_TAG: head,
                           names.TRANSFER_MODE_TAG: "feature-extraction" if freeze else "fine-tune"})
        tracking.log_params({"transfer.lr": lr, "transfer.source_classes": ",".join(source_spec.classes)})
        say(f"transfer: {spec.name} from {cfg.transfer.source} ({len(source_spec.classes)} classes) → "
            f"{spec.num_classes} new classes, head '{head}' re-initialised, "
            + ("backbone frozen" if freeze else f"fine-tuning everything at lr {lr:g}"))
        tcfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=lr))
        hooks = [(FreezeBackbone, {"head": head})] if freeze else []
        trained = train.run(tcfg, prepared, parent.uri, run_id, f"{cfg.pipeline}-{parent.run_id}-transfer",
                            workdir / "transfer", init_state=state, hooks=hooks, spec=spec)
        loss, acc = evaluate.score_package(cfg, prepared, trained.best_checkpoint)
        tracking.log_metrics({names.TEST_LOSS: loss, names.TEST_ACCURACY: acc})
    result = {names.TRANSFER_ACCURACY: acc, names.TEST_ACCURACY: acc, names.TEST_LOSS: loss}
    if cfg.transfer.scratch:
        with tracking.stage_run("scratch", parent) as scratch_id:
            say(f"transfer: the same {spec.name} from scratch on the same data and budget (lr {cfg.train.lr:g})")
            scratch = train.run(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, freeze="none")),
                                prepared, parent.uri, scratch_id, f"{cfg.pipeline}-{parent.run_id}-scratch",
                                workdir / "scratch", spec=spec)
            s_loss, s_acc = evaluate.score_package(cfg, prepared, scratch.best_checkpoint)
            tracking.log_metrics({names.TEST_LOSS: s_loss, names.TEST_ACCURACY: s_acc})
        result.update({names.SCRATCH_ACCURACY: s_acc, names.TRANSFER_GAIN: acc - s_acc})
        tracking.log_figure(_comparison_figure(acc, s_acc, "feature extraction" if freeze else "fine-tune",
                                               prepared.rows["train"]), "plots/transfer_vs_scratch.png")
        say(f"transfer: test accuracy {acc:.4f} vs {s_acc:.4f} from scratch ({(acc - s_acc) * 100:+.1f} points) "
            f"with {prepared.rows['train']:,} labelled images")
    tracking.log_metrics(result)
    out["result"] = result
    return out


def _comparison_figure(transfer: float, scratch: float, mode: str, rows: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bars = ax.bar([f"transfer\n({mode})", "from scratch"], [transfer, scratch], color=["tab:blue", "tab:gray"])
    ax.bar_label(bars, fmt="%.3f")
    ax.set(ylabel="test accuracy", ylim=(0, 1), title=f"{rows:,} labelled images, same budget")
    return fig
