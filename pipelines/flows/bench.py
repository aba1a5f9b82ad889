"""Stage ``bench``: Ray against plain PyTorch, side by side in one run, as throughput ratios.

    visionray run bench                     # Fashion-MNIST, the quickstart ConvNet
    visionray run bench model=resnet20 bench.steps=30

1. Training: Ray Train (``cluster.num_workers`` workers × their threads, DDP over gloo) against the
   same engine loop in this one process with the same total threads, model, batch and augmentation.
2. Preprocessing: Ray Data (read Parquet → decode → augment per batch) against a
   ``torch.utils.data.DataLoader`` with the same transforms and as many worker processes as CPUs.

With a segmentation net (``visionray run bench_segment``: shapes scenes, segment's U-Net and recipe) the
training comparison times the segmentation loop: images with their masks, flipped alike, per-pixel
cross-entropy; the same engine loop and task on both sides.

On a text source (``visionray run bench_charlm``: Jane Austen, charlm's LSTM and recipe) the training
comparison times the character language model's truncated-BPTT loop instead, in characters per second:
each Ray Train rank reads its own slice of the token stream, as ``charlm`` trains; there is no Ray Data
stage to compare there.

Each ratio is logged twice: ``bench/<name>`` in the timed loop (after warm-up) and
``bench/<name>_end_to_end`` for the whole thing including start-up (``fit()``, dataset planning,
DataLoader workers). Ratios, not absolute times: the machine is shared and noisy.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from components import engine
from components.augment import Augment
from components.data.shards import Manifest
from components.models import Normalize
from components.packaging import ModelSpec
from pipelines.config import Config, ConfigError, TrainConfig
from pipelines.flows.kit import prepare, stage, workdir_for
from pipelines.records import TextPrepared
from pipelines.services import names, tracking
from pipelines.services.progress import say
from pipelines.services.runtime import worker_threads
from pipelines.stages.preprocess import augment_from, decode_batch, image_dataset
from pipelines.stages.train import (
    RayBatchPrep,
    build_task,
    build_training,
    model_spec,
    prepare_worker_model,
    torch_trainer,
    worker_setup,
)

RESULT_FILE = "bench.json"


def _timed_loop(model, tc: TrainConfig, spec: ModelSpec, batches, steps: int, warmup: int, per_step_images: int,
                device=torch.device("cpu")) -> float:
    """Images/s over ``steps`` optimiser steps after ``warmup`` untimed ones."""
    optimizer, scheduler, task = build_training(tc, model, warmup + steps, spec)
    clock: dict[str, float] = {}

    def on_step(step: int, _stats: Any) -> None:
        if step == warmup - 1:
            clock["start"] = time.perf_counter()
        if step == warmup + steps - 1:
            clock["end"] = time.perf_counter()

    engine.train_one_epoch(model, task, optimizer, batches, scheduler=scheduler, device=device,
                           precision=tc.precision, max_steps=warmup + steps, on_step=on_step)
    if "end" not in clock:
        raise RuntimeError(f"the bench ran out of data before {warmup + steps} steps; lower bench.steps.")
    return steps * per_step_images / (clock["end"] - clock["start"])


def bench_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train

    ctx, tc, spec = worker_setup(config)
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    per_worker = config["batch_size"] // world
    task = build_task(tc, spec)
    if config.get("stream"):  # a token stream: this rank's slice, in truncated-BPTT order, as charlm trains
        model = prepare_worker_model(spec.build(None), tc)
        batches = task.stream_batches(np.load(config["stream"], mmap_mode="r"), rank, world, per_worker,
                                      epoch=0, seed=config["seed"], train=True)
    else:
        model = prepare_worker_model(spec.build(Normalize.identity(spec.in_channels)), tc)
        prep = RayBatchPrep(task.batch_prep(augment=Augment(**config["augment"]), seed=config["seed"],
                                            channels_last=tc.channels_last))
        batches = ray.train.get_dataset_shard("train").iter_torch_batches(
            batch_size=per_worker, collate_fn=prep, prefetch_batches=2)
    ips = _timed_loop(model, tc, spec, batches, config["steps"], config["warmup"],
                      task.examples_per_step(per_worker) * world)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if rank == 0:  # Train V2 returns metrics only with a checkpoint: carry them in one
            Path(tmp, RESULT_FILE).write_text(json.dumps({"images_per_s": ips}))
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({"images_per_s": ips}, checkpoint=ckpt)


def bench_ray_train(cfg: Config, spec: ModelSpec, datasets: dict[str, Any], storage: Path,
                    stream: str | None = None) -> tuple[float, float]:
    """(Ray Train's rate in the timed loop, its rate including ``fit()``'s start-up), in the task's unit/s."""
    b, c = cfg.bench, cfg.cluster
    started = time.perf_counter()
    trainer = torch_trainer(
        cfg, bench_loop_per_worker,
        {"train": cfg.train.__dict__, "spec": spec.to_dict(), "seed": cfg.seed,
         "augment": augment_from(cfg.data).__dict__, "threads": worker_threads(c), "stream": stream,
         "batch_size": b.batch_size, "steps": b.steps, "warmup": b.warmup_steps},
        datasets, name=f"bench-{int(time.time())}", storage_path=str(storage))
    result = trainer.fit()
    total = time.perf_counter() - started
    with result.checkpoint.as_directory() as d:
        loop_rate = json.loads(Path(d, RESULT_FILE).read_text())["images_per_s"]
    per_step = build_task(cfg.train, spec).examples_per_step(b.batch_size // c.num_workers) * c.num_workers
    return loop_rate, (b.warmup_steps + b.steps) * per_step / total


def bench_torch_train(cfg: Config, spec: ModelSpec, batches_from: Callable[[], Iterable]) -> tuple[float, float]:
    """The same loop in this process, with as many threads as all of Ray's workers together."""
    b = cfg.bench
    threads = worker_threads(cfg.cluster) * cfg.cluster.num_workers  # the same total threads as Ray's workers
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        torch.manual_seed(cfg.seed)
        image = spec.task in ("classification", "segmentation")  # nets behind a Normalize
        model = spec.build(Normalize.identity(spec.in_channels) if image else None)
        model = model.to(memory_format=torch.channels_last) if cfg.train.channels_last else model
        per_step = build_task(cfg.train, spec).examples_per_step(b.batch_size)
        loop_rate = _timed_loop(model, cfg.train, spec, batches_from(), b.steps, b.warmup_steps, per_step)
        total = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous)
    return loop_rate, (b.warmup_steps + b.steps) * per_step / total


def _image_batches(cfg: Config, manifest: Manifest, rows: int, spec: ModelSpec) -> Callable[[], Iterable]:
    """The train rows through the task's own batch prep (a segmenter's carries the masks), as the workers'."""
    def batches():
        from components.data.shards import read_split
        from pipelines.stages.evaluate import dense_columns, numpy_batches

        split = read_split(manifest, "train").take(np.arange(rows))
        prep = build_task(cfg.train, spec).batch_prep(augment=augment_from(cfg.data), seed=cfg.seed, epoch=0,
                                                      channels_last=cfg.train.channels_last)
        return map(prep, numpy_batches(split.images, split.labels, cfg.bench.batch_size, dense_columns(split)))
    return batches


class ShardBatches(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches read from the Parquet shards (DataLoader baseline)."""

    def __init__(self, manifest: Manifest, rows: int, batch_size: int):
        import pyarrow.parquet as pq

        self.files = [str(p) for p in manifest.files("train")]
        self.shape, self.batch_size = manifest.shape, batch_size
        counts = [pq.ParquetFile(f).metadata.num_rows for f in self.files]
        self.offsets = np.cumsum([0] + counts)
        self.rows = min(rows, int(self.offsets[-1]))
        self._tables: dict[int, Any] = {}

    def __len__(self) -> int:
        return self.rows // self.batch_size

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        lo, hi = i * self.batch_size, (i + 1) * self.batch_size
        parts = []
        for f in range(len(self.files)):
            a, z = max(lo, self.offsets[f]), min(hi, self.offsets[f + 1])
            if a < z:
                if f not in self._tables:  # each DataLoader worker reads a shard once, like Ray Data
                    self._tables[f] = pq.read_table(self.files[f], columns=["image", "label", "idx"])
                parts.append(self._tables[f].slice(a - self.offsets[f], z - a))
        return decode_batch(pa.concat_tables(parts) if len(parts) > 1 else parts[0], self.shape)


def bench_preprocess(cfg: Config, manifest: Manifest, rows: int) -> dict[str, float]:
    b = cfg.bench
    prep = engine.BatchPrep(augment_from(cfg.data), cfg.seed, 0, cfg.train.channels_last)
    out = {}
    # Ray Data: streaming read → decode (Ray tasks) → augment in the iterator's threads.
    started = time.perf_counter()
    it = image_dataset(manifest, "train", rows).iter_torch_batches(
        batch_size=b.batch_size, collate_fn=RayBatchPrep(prep), prefetch_batches=2)
    out["ray"] = _drain(it, started)
    # DataLoader: the same shards, decode and transforms in worker processes.
    started = time.perf_counter()
    loader = torch.utils.data.DataLoader(ShardBatches(manifest, rows, b.batch_size), batch_size=None,
                                         num_workers=max(1, os.cpu_count() or 1), collate_fn=prep,
                                         persistent_workers=False, prefetch_factor=2)
    out["torch"] = _drain(iter(loader), started)
    return out


def _drain(batches, started: float, skip: int = 2) -> tuple[float, float]:
    """(images/s after the first ``skip`` batches, images/s including start-up)."""
    n_all = n_timed = 0
    t_first = None
    for i, (x, _y) in enumerate(batches):
        n_all += x.shape[0]
        if i == skip - 1:
            t_first = time.perf_counter()
        elif i >= skip:
            n_timed += x.shape[0]
    end = time.perf_counter()
    return n_timed / (end - t_first), n_all / (end - started)


def run(cfg: Config, manifest: Manifest, workdir: Path) -> dict[str, float]:
    b = cfg.bench
    spec = model_spec(cfg, manifest)
    rows = min(manifest.splits["train"]["rows"], (b.steps + b.warmup_steps + 2) * b.batch_size)
    torch_loop, torch_total = bench_torch_train(cfg, spec, _image_batches(cfg, manifest, rows, spec))
    say(f"bench: plain PyTorch training {torch_loop:,.0f} img/s in the loop ({torch_total:,.0f} with start-up)")
    ray_loop, ray_total = bench_ray_train(cfg, spec, {"train": image_dataset(manifest, "train", rows)}, workdir)
    say(f"bench: Ray Train {ray_loop:,.0f} img/s in the loop ({ray_total:,.0f} with start-up)")
    pre = bench_preprocess(cfg, manifest, min(manifest.splits["train"]["rows"], b.preprocess_rows))
    say(f"bench: preprocessing Ray Data {pre['ray'][0]:,.0f} img/s vs DataLoader {pre['torch'][0]:,.0f} img/s")
    m = names.bench_metric
    results = {
        **_training_results("img", ray_loop, ray_total, torch_loop, torch_total),
        m("preprocess_ray_vs_torch"): pre["ray"][0] / pre["torch"][0],
        m("preprocess_ray_vs_torch_end_to_end"): pre["ray"][1] / pre["torch"][1],
        m("preprocess_ray_images_per_s"): pre["ray"][0], m("preprocess_torch_images_per_s"): pre["torch"][0],
    }
    return _log(cfg, results)


def run_stream(cfg: Config, prepared: TextPrepared, workdir: Path) -> dict[str, float]:
    """The character language model's training loop (truncated BPTT), Ray Train against plain PyTorch."""
    from pipelines.stages.train import text_spec

    b = cfg.bench
    spec = text_spec(cfg, prepared)
    task = build_task(cfg.train, spec)
    world, needed = cfg.cluster.num_workers, b.steps + b.warmup_steps
    have = task.stream_steps(prepared.tokens["train"], world, max(1, b.batch_size // world))
    if have < needed:
        raise ConfigError(f"the train stream gives each of {world} workers {have} steps of bench.batch_size="
                          f"{b.batch_size} x train.bptt={cfg.train.bptt}, fewer than the bench's {needed}; "
                          "lower bench.steps or the batch.")
    stream = prepared.path("train")
    torch_loop, torch_total = bench_torch_train(cfg, spec, lambda: task.stream_batches(
        np.load(stream, mmap_mode="r"), 0, 1, b.batch_size, epoch=0, seed=cfg.seed, train=True))
    say(f"bench: plain PyTorch {spec.name} training {torch_loop:,.0f} chars/s in the loop "
        f"({torch_total:,.0f} with start-up)")
    ray_loop, ray_total = bench_ray_train(cfg, spec, {}, workdir, stream=stream)
    say(f"bench: Ray Train {ray_loop:,.0f} chars/s in the loop ({ray_total:,.0f} with start-up)")
    return _log(cfg, _training_results(task.unit, ray_loop, ray_total, torch_loop, torch_total))


def _training_results(unit: str, ray_loop: float, ray_total: float, torch_loop: float,
                      torch_total: float) -> dict[str, float]:
    m = names.bench_metric
    per_s = {"img": "images", "char": "chars"}.get(unit, f"{unit}s")
    return {m("train_ray_vs_torch"): ray_loop / torch_loop,
            m("train_ray_vs_torch_end_to_end"): ray_total / torch_total,
            m(f"train_ray_{per_s}_per_s"): ray_loop, m(f"train_torch_{per_s}_per_s"): torch_loop}


def _log(cfg: Config, results: dict[str, float]) -> dict[str, float]:
    tracking.log_metrics(results)
    tracking.log_json({"results": results, "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                                                       "threads_total": worker_threads(cfg.cluster) * cfg.cluster.num_workers}},
                      "bench/results.json")
    say("bench: " + ", ".join(f"{k} {v:.2f}" for k, v in results.items() if "_vs_" in k))
    return results


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from components.data.sources import TEXT_SOURCES

    workdir = workdir_for(cfg, parent.run_id)
    if cfg.data.name in TEXT_SOURCES:
        from pipelines.stages import ingest

        with stage("ingest", parent, cfg):
            prepared = ingest.run_text(cfg)
        parent.set_tags({names.DATASET_VERSION: prepared.version})
        with stage("bench", parent, cfg):
            results = run_stream(cfg, prepared, workdir)
    else:
        ingested: dict[str, Any] = {}
        prepare(cfg, parent, workdir, ingested)  # bench's stages have no preprocess: ingest only
        with stage("bench", parent, cfg):
            results = run(cfg, ingested["manifest"], workdir)
    tracking.log_metrics(results)
    return {"bench": results}
