"""The classification flow: ingest → preprocess → train → evaluate → register.

    visionray run quickstart
    visionray run train model=resnet20 train.epochs=30
"""

from __future__ import annotations

from typing import Any

from pipelines.config import Config
from pipelines.flows.kit import prepare, stage, workdir_for
from pipelines.services import names, tracking

STAGES = ("ingest", "preprocess", "train", "evaluate", "register")


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines.services import registry
    from pipelines.stages import evaluate, train

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
        tracking.log_metrics({names.metric(names.TEST, k): v for k, v in evaluation.metrics.items()})
    if "register" in cfg.stages and cfg.registry.enabled:
        with stage("register", parent, cfg):
            tags = {names.DATASET_VERSION: manifest.version, names.GIT_SHA: parent.tags[names.GIT_SHA],
                    names.RUN_ID: parent.run_id}
            out["decision"] = registry.run(cfg, evaluation, prepared.num_classes, tags)
        parent.set_tags({names.DECISION_TAG: f"{out['decision'].alias}: {out['decision'].model_uri}"})
    return out


