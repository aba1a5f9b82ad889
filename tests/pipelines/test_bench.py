"""The bench pipeline end to end on digits: both contenders of each comparison run, side by side in
one run, and their ratios land on the parent run as bench/* metrics (speed targets live there, never
in asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import shrunk_config

pytestmark = pytest.mark.slow


def test_bench_logs_every_ratio_on_the_parent_run(ray_local, mlflow_store, tmp_path) -> None:
    from pipelines.dispatch import run_pipeline
    from pipelines.services import names

    cfg = shrunk_config("bench", "bench.steps=3", "bench.warmup_steps=1", "bench.batch_size=64",
                        "bench.preprocess_rows=500")
    result = run_pipeline(cfg, command="test")
    client = mlflow_store.client()
    metrics = client.get_run(result.run_id).data.metrics
    ratios = ["train_ray_vs_torch", "train_ray_vs_torch_end_to_end", "preprocess_ray_vs_torch",
              "preprocess_ray_vs_torch_end_to_end"]
    for name in ratios:
        key = names.bench_metric(name)
        assert key in metrics and metrics[key] > 0, key
        assert metrics[key] == pytest.approx(result.outputs["bench"][key])
    speeds = {k: metrics[names.bench_metric(k)] for k in ("train_ray_images_per_s", "train_torch_images_per_s")}
    assert metrics[names.bench_metric("train_ray_vs_torch")] == pytest.approx(
        speeds["train_ray_images_per_s"] / speeds["train_torch_images_per_s"])
    stage_runs = [r for r in client.search_runs([client.get_run(result.run_id).info.experiment_id])
                  if r.data.tags.get("mlflow.parentRunId") == result.run_id]
    assert sorted(r.data.tags[names.STAGE_TAG] for r in stage_runs) == ["bench", "ingest"]
    bench_run = next(r for r in stage_runs if r.data.tags[names.STAGE_TAG] == "bench")
    saved = json.loads(Path(client.download_artifacts(bench_run.info.run_id, "bench/results.json",
                                                      str(tmp_path))).read_text())
    assert set(saved["results"]) == set(result.outputs["bench"]) and saved["machine"]["cpus"] >= 1


def test_bench_charlm_times_the_language_models_loop_in_characters(ray_local, mlflow_store) -> None:
    from pipelines.dispatch import run_pipeline
    from pipelines.services import names
    from tests.pipelines.test_charlm import _austen_or_skip

    _austen_or_skip()
    cfg = shrunk_config("bench_charlm", "data=austen", "bench.steps=3", "bench.warmup_steps=1", "bench.batch_size=16",
                        "train.bptt=32", "charlm.hidden=32", "charlm.embed=16", "charlm.layers=1")
    result = run_pipeline(cfg, command="test")
    metrics = mlflow_store.client().get_run(result.run_id).data.metrics
    ray_cps, torch_cps = (metrics[names.bench_metric(f"train_{k}_chars_per_s")] for k in ("ray", "torch"))
    assert ray_cps > 0 and torch_cps > 0
    assert metrics[names.bench_metric("train_ray_vs_torch")] == pytest.approx(ray_cps / torch_cps)
    assert names.bench_metric("preprocess_ray_vs_torch") not in metrics  # no Ray Data stage in a text loop
    assert names.bench_metric("train_ray_images_per_s") not in metrics
