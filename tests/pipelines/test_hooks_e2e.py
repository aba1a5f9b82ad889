"""Training hooks (components.hooks) inside real Ray Train workers, logged to a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from components.hooks import TrainHook
from tests.conftest import shrunk_config

pytestmark = pytest.mark.slow


class StepCounter(TrainHook):
    """Counts optimiser steps, freezes nothing, writes its count and a weight checksum each epoch."""

    def __init__(self, tag: str):
        self.tag, self.steps, self.setup_calls = tag, 0, 0

    def setup(self, model):
        self.setup_calls += 1
        assert not hasattr(model, "module"), "setup must see the bare model, not DDP"

    def after_step(self, model, step):
        self.steps += 1

    def end_epoch(self, model, epoch, out_dir):
        if out_dir is not None:
            weight_sum = float(sum(p.detach().double().sum() for p in model.parameters()))
            (out_dir / "count.json").write_text(json.dumps(
                {"tag": self.tag, "epoch": epoch, "steps": self.steps, "weight_sum": weight_sum}))
        return {"hook/steps": float(self.steps)}

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_hooks_run_on_every_step_and_their_files_reach_the_driver(ray_local, mlflow_store, tmp_path):
    from mlflow import MlflowClient

    from components.packaging import load_package
    from pipelines.flows.kit import stage
    from pipelines.services import tracking
    from pipelines.stages import ingest, preprocess, train

    cfg = shrunk_config("quickstart", "train.max_steps_per_epoch=5")
    with tracking.pipeline_run(cfg, "test") as parent:
        with stage("ingest", parent, cfg):
            manifest = ingest.run(cfg)
        with stage("preprocess", parent, cfg):
            prepared = preprocess.run(cfg, manifest, tmp_path)
        with stage("train", parent, cfg) as run_id:
            trained = train.run(cfg, prepared, parent.uri, run_id, "hooks", tmp_path,
                                hooks=[(StepCounter, {"tag": "x"})])
    files = sorted(Path(trained.extras).rglob("count.json"))
    assert [f.parent.name for f in files] == ["00-StepCounter"]
    record = json.loads(files[0].read_text())
    # 2 epochs x 5 steps on rank 0; the epoch field is the last one
    assert record == {**record, "tag": "x", "epoch": 1, "steps": 10}
    history = MlflowClient(parent.uri).get_metric_history(run_id, "hook/steps")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 5.0), (2, 10.0)]
    last, _ = load_package(trained.last_checkpoint)
    weight_sum = float(sum(p.detach().double().sum() for p in last.parameters()))
    assert weight_sum == pytest.approx(record["weight_sum"], rel=1e-9)
    assert isinstance(last, torch.nn.Module)
