"""The zoo pipeline end to end on a real local Ray and a real MLflow store (slow)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from tests.conftest import shrunk_config


def broken_baseline(cfg, prepared, manifest) -> dict:
    """A member that fails: the zoo records it and carries on (zoo.keep_going)."""
    raise RuntimeError("this baseline always fails")


@pytest.mark.slow
def test_zoo_trains_each_member_in_its_own_child_run(ray_local, mlflow_store) -> None:
    from pipelines.dispatch import run_pipeline
    from pipelines.services import names

    cfg = shrunk_config("zoo", "zoo.models=[softmax,mlp,pipelines.flows.zoo:majority_class,"
                        "tests.pipelines.test_zoo:broken_baseline]",
                        "train.epochs=1", "train.max_steps_per_epoch=5", "cluster.num_workers=1")
    result = run_pipeline(cfg, command="test")
    client = mlflow_store.client()
    parent = client.get_run(result.run_id)
    exp = parent.info.experiment_id
    zoo_stage = client.search_runs([exp], f"tags.`{names.STAGE_TAG}` = 'zoo'")
    assert len(zoo_stage) == 1
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{zoo_stage[0].info.run_id}'")
    by_model = {r.data.tags[names.ZOO_MODEL_TAG]: r for r in children}
    assert set(by_model) == {"softmax", "mlp", "majority_class", "broken_baseline"}
    assert all(r.data.tags[names.STAGE_TAG] == "train" for r in children)
    assert by_model["broken_baseline"].info.status == "FAILED"
    for model in ("softmax", "mlp"):
        run = by_model[model]
        assert run.info.status == "FINISHED" and run.info.run_name == model
        m = run.data.metrics
        # 5 steps of batch 64 lift a linear or small MLP digits classifier well above chance (0.1)
        assert m[names.TEST_ACCURACY] > 0.3, (model, m[names.TEST_ACCURACY])
        assert m[names.ZOO_SECONDS] > 0
    # softmax on 8x8x1 digits: 64*10 + 10 parameters, and no hidden layer for the init diagnostic.
    assert by_model["softmax"].data.metrics[names.MODEL_PARAMS] == 650
    assert not client.get_metric_history(by_model["softmax"].info.run_id, names.INIT_ACT_STD)
    # The MLP's init diagnostic: one point per hidden layer (its conf has two), and the figure.
    mlp_id = by_model["mlp"].info.run_id
    stds = client.get_metric_history(mlp_id, names.INIT_ACT_STD)
    assert sorted(p.step for p in stds) == [1, 2] and all(math.isfinite(p.value) and p.value > 0 for p in stds)
    assert names.INIT_PLOT in {a.path for a in client.list_artifacts(mlp_id, "plots")}

    rows = {r["model"]: r for r in result.outputs["rows"]}
    assert rows["broken_baseline"]["status"].startswith("failed: RuntimeError")
    assert 0.05 < rows["majority_class"]["test_accuracy"] < 0.2  # 10 balanced classes
    table = Path(client.download_artifacts(result.run_id, names.ZOO_TABLE, mlflow_store.root / "dl"))
    columns = json.loads(table.read_text())["columns"]
    assert {"model", "test_accuracy", "params", "seconds", "flops_per_image"} <= set(columns)
    text = Path(client.download_artifacts(result.run_id, names.ZOO_CSV, mlflow_store.root / "dl")).read_text()
    assert [r["model"] for r in csv.DictReader(io.StringIO(text))] == [
        "softmax", "mlp", "majority_class", "broken_baseline"]
    assert names.ZOO_PLOT in {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert parent.data.metrics["zoo/mlp/test_accuracy"] == pytest.approx(rows["mlp"]["test_accuracy"])
