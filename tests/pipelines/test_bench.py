"""The bench pipeline end to end on digits: both contenders of each comparison run, side by side in
one run, and their ratios land on the parent run as bench/* metrics (speed targets live there, never
in asserts). One round each here (the alternation's order has its own fast test): a round is a
Ray Train ``fit()``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import shrunk_config


@pytest.mark.slow
def test_bench_logs_every_ratio_on_the_parent_run(ray_local, mlflow_store, tmp_path) -> None:
    from pipelines.dispatch import run_pipeline
    from pipelines.services import names

    cfg = shrunk_config("bench", "bench.steps=3", "bench.warmup_steps=1", "bench.batch_size=64",
                        "bench.preprocess_rows=500", "bench.rounds=1")
    result = run_pipeline(cfg, command="test")
    client = mlflow_store.client()
    metrics = client.get_run(result.run_id).data.metrics
    m = names.bench_metric
    for name in ("train_ray_vs_torch", "train_ray_vs_torch_end_to_end", "preprocess_ray_vs_torch",
                 "train_ray_vs_torch_spread", "preprocess_ray_vs_torch_spread", "train_ray_vs_ddp",
                 "train_ray_vs_ddp_end_to_end", "train_ray_vs_ddp_spread", "ddp_loss_gap"):
        assert metrics[m(name)] == pytest.approx(result.outputs["bench"][m(name)]), name
    assert metrics[m("train_ray_vs_torch")] == pytest.approx(
        metrics[m("train_ray_images_per_s")] / metrics[m("train_torch_images_per_s")])
    assert metrics[m("train_ray_vs_ddp")] == pytest.approx(
        metrics[m("train_ray_rows_images_per_s")] / metrics[m("train_ddp_images_per_s")])
    # torchrun's DDP and Ray Train, the same seed, rows and order: the same loss trajectory
    assert metrics[m("ddp_loss_gap")] <= 1e-6
    assert metrics[m("preprocess_ray_vs_torch")] == pytest.approx(
        metrics[m("preprocess_ray_images_per_s")] / metrics[m("preprocess_torch_images_per_s")])
    assert metrics[m("train_ray_vs_torch_spread")] == 0 == metrics[m("preprocess_ray_vs_torch_spread")]  # one round
    # end to end counts Ray Train's fit() start-up (seconds) against 4 steps: far below the loop's ratio
    assert metrics[m("train_ray_vs_torch_end_to_end")] < 0.5 * metrics[m("train_ray_vs_torch")]
    stage_runs = [r for r in client.search_runs([client.get_run(result.run_id).info.experiment_id])
                  if r.data.tags.get("mlflow.parentRunId") == result.run_id]
    assert sorted(r.data.tags[names.STAGE_TAG] for r in stage_runs) == ["bench", "ingest"]
    bench_run = next(r for r in stage_runs if r.data.tags[names.STAGE_TAG] == "bench")
    saved = json.loads(Path(client.download_artifacts(bench_run.info.run_id, "bench/results.json",
                                                      str(tmp_path))).read_text())
    assert set(saved["results"]) == set(result.outputs["bench"]) and saved["machine"]["cpus"] >= 1


@pytest.mark.slow
def test_bench_charlm_times_the_language_models_loop_in_characters(ray_local, mlflow_store) -> None:
    from pipelines.dispatch import run_pipeline
    from pipelines.services import names
    from tests.pipelines.test_charlm import _austen_or_skip

    _austen_or_skip()
    cfg = shrunk_config("bench_charlm", "data=austen", "bench.steps=3", "bench.warmup_steps=1", "bench.batch_size=16",
                        "train.bptt=32", "charlm.hidden=32", "charlm.embed=16", "charlm.layers=1", "bench.rounds=1")
    result = run_pipeline(cfg, command="test")
    metrics = mlflow_store.client().get_run(result.run_id).data.metrics
    ray_cps, torch_cps = (metrics[names.bench_metric(f"train_{k}_chars_per_s")] for k in ("ray", "torch"))
    assert metrics[names.bench_metric("train_ray_vs_torch")] == pytest.approx(ray_cps / torch_cps)
    assert metrics[names.bench_metric("train_ray_vs_torch_end_to_end")] < 0.5 * (ray_cps / torch_cps)  # fit() start-up
    assert names.bench_metric("preprocess_ray_vs_torch") not in metrics  # no Ray Data stage in a text loop
    assert names.bench_metric("train_ray_images_per_s") not in metrics


def test_each_rank_reads_its_own_block_of_the_saved_rows_in_order_and_drops_the_partial_batch(tmp_path) -> None:
    import numpy as np

    from pipelines.flows.benchloop import row_batches

    path = tmp_path / "rows.npz"
    np.savez(path, image=np.arange(22)[:, None, None] * np.ones((1, 2, 2)), label=np.arange(22))
    blocks = [[b["label"].tolist() for b in row_batches(path, rank, 2, 4, lambda b: b)] for rank in (0, 1)]
    assert blocks == [[[0, 1, 2, 3], [4, 5, 6, 7]], [[11, 12, 13, 14], [15, 16, 17, 18]]]
    first = next(row_batches(path, 1, 2, 4, lambda b: b))
    assert first["image"][:, 0, 0].tolist() == [11, 12, 13, 14]  # every column sliced alike


def test_comparisons_alternate_the_contenders_and_report_the_median_ratio_and_its_spread() -> None:
    from pipelines.flows.bench import alternate, ratio_stats

    order = []
    results = alternate({"a": lambda: order.append("a") or len(order), "b": lambda: order.append("b") or len(order)}, 3)
    assert order == ["a", "b"] * 3 and results == {"a": [1, 3, 5], "b": [2, 4, 6]}
    median, spread = ratio_stats([2.0, 3.0, 8.0], [1.0, 1.0, 2.0])  # ratios 2, 3, 4
    assert (median, spread) == (3.0, 2.0)


def test_the_in_memory_contenders_step_through_the_same_global_batches() -> None:
    """data.feed=memory: plain PyTorch takes whole batches of the epoch's permutation, each Ray Train rank
    its share, as training's in-memory feed hands them; step by step, the ranks' batches together hold the
    rows of plain PyTorch's batch."""
    import numpy as np

    from components import tasks
    from pipelines.config.schema import TrainConfig
    from pipelines.flows.bench import _share

    rows = {"image": np.zeros((40, 1, 4, 4), np.uint8), "label": np.arange(40) % 10, "idx": np.arange(40)}
    rows["label"] = rows["idx"]  # a row's label names it
    task = tasks.build_task("classification", num_classes=40)
    config = {"augment": {}, "seed": 3}
    whole = [y.tolist() for _x, y in _share(config, rows, TrainConfig(), task, 8, 0, 1)]
    ranks = [[y.tolist() for _x, y in _share(config, rows, TrainConfig(), task, 4, r, 2)] for r in (0, 1)]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 5
    assert sorted(sum(whole, [])) == list(range(40)) and whole[0] != list(range(8))  # every row, shuffled
    for step, batch in enumerate(whole):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch)
