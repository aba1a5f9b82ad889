"""The classification flow: ingest → preprocess → train → evaluate → register.

    visionray run quickstart
    visionray run train model=resnet20 train.epochs=30
"""

from __future__ import annotations

from typing import Any

from pipelines.config import Config
from pipelines.flows.kit import prepare, register, stage, test_metrics, workdir_for
from pipelines.services import tracking

STAGES = ("ingest", "preprocess", "train", "evaluate", "register")


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
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
        tracking.log_metrics(test_metrics(evaluation))
        register(cfg, parent, evaluation, prepared.num_classes, out, manifest.version)
    return out


