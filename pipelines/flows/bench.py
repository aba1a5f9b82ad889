"""Stage ``bench``: Ray against plain PyTorch, side by side in one run, as throughput ratios.

    visionray run bench                     # Fashion-MNIST, the quickstart ConvNet
    visionray run bench model=resnet20 bench.steps=30

1. Training: Ray Train (``cluster.num_workers`` workers × their threads, DDP over gloo) against the
   same engine loop in this one process with the same total threads, model, batch and augmentation,
   both fed the way training feeds them (``data.feed``): by default (``auto``, rows that fit in memory)
   the decoded train rows put once in Ray's object store, each rank taking its share of the epoch's
   permutation, as the train stage's in-memory feed does, and plain PyTorch the whole permutation in
   batches of the same global size (step by step the same rows); with ``data.feed=ray_data`` a
   materialised Ray Dataset, iterated by ``iter_torch_batches`` with the same collate (the workers
   through their shards).
2. Preprocessing: whole passes over the same rows, clock started before anything is read: Ray Data
   (read Parquet → decode → augment per batch) against a ``torch.utils.data.DataLoader`` with the same
   transforms and as many worker processes as CPUs; both drop the last partial batch, so they push the
   same images.

Each comparison runs ``bench.rounds`` times alternating the contenders (A B A B …), so a change of the
shared machine's load falls on both; a ratio is the median of the rounds' ratios, and
``bench/<name>_spread`` is the largest minus the smallest of them.

With a segmentation net (``visionray run bench_segment``: shapes scenes, segment's U-Net and recipe) the
training comparison times the segmentation loop: images with their masks, flipped alike, per-pixel
cross-entropy; the same engine loop and task on both sides.

On a text source (``visionray run bench_charlm``: Jane Austen, charlm's LSTM and recipe) the training
comparison times the character language model's truncated-BPTT loop instead, in characters per second:
each Ray Train rank reads its own slice of the token stream, as ``charlm`` trains; there is no Ray Data
stage to compare there.

3. Ray Train against native PyTorch DDP (``bench.ddp``): the same loop under ``torch.distributed.run``
   with the same processes, threads per process, batch and gloo, both fed the same saved train rows, each
   rank its block in the same order (``flows/benchloop.py``): ``bench/train_ray_vs_ddp``, and
   ``bench/ddp_loss_gap``, the largest difference between the two sides' running losses (same seed,
   same data, same order: float rounding only).

The training ratio is logged twice: ``bench/<name>`` in the timed loop (after warm-up) and
``bench/<name>_end_to_end`` including start-up (``fit()``). Ratios, not absolute times: the machine
is shared and noisy.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import ray
import torch

from components import engine
from components.augment import Augment
from components.data.shards import Manifest
from components.models import Normalize
from components.packaging import ModelSpec
from pipelines.config import Config, ConfigError
from pipelines.flows.benchloop import build_net, rows_loop, timed_loop
from pipelines.flows.kit import prepare, stage, workdir_for
from pipelines.records import TextPrepared
from pipelines.services import names, tracking
from pipelines.services.progress import say
from pipelines.services.runtime import worker_threads
from pipelines.stages.preprocess import (
    IN_PROCESS_BYTES,
    augment_from,
    decode_batch,
    image_dataset,
    read_rows,
)
from pipelines.stages.train import (
    RayBatchPrep,
    build_task,
    feeds_in_memory,
    model_spec,
    prepare_worker_model,
    share_batches,
    torch_trainer,
    worker_setup,
)

RESULT_FILE = "bench.json"


def bench_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train

    ctx, tc, spec = worker_setup(config)
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    per_worker = config["batch_size"] // world
    task = build_task(tc, spec)
    # a token stream's net takes token ids; an image net sits behind an identity normaliser (rows come decoded)
    model = prepare_worker_model(spec.build(None if config.get("stream") else Normalize.identity(spec.in_channels)),
                                 tc)
    if config.get("rows"):  # the comparison with native DDP: the saved rows, each rank its block, in order
        ips, losses = rows_loop(model, config, rank, world)
        _report(rank, {"images_per_s": ips, "losses": losses})
        return
    if config.get("stream"):  # a token stream: this rank's slice, in truncated-BPTT order, as charlm trains
        batches = task.stream_batches(np.load(config["stream"], mmap_mode="r"), rank, world, per_worker,
                                      epoch=0, seed=config["seed"], train=True)
    elif config.get("in_memory"):  # data.feed: the decoded rows from the object store, this rank's share
        batches = _share(config, ray.get(config["in_memory"]), tc, task, per_worker, rank, world)
    else:
        prep = RayBatchPrep(task.batch_prep(augment=Augment(**config["augment"]), seed=config["seed"],
                                            channels_last=tc.channels_last))
        batches = ray.train.get_dataset_shard("train").iter_torch_batches(
            batch_size=per_worker, collate_fn=prep, prefetch_batches=2)
    _report(rank, {"images_per_s": timed_loop(model, tc, spec, batches, config["steps"], config["warmup"],
                                              task.examples_per_step(per_worker) * world)})


def _share(config: dict[str, Any], rows: dict[str, np.ndarray], tc, task, batch: int, rank: int, world: int):
    """As training's in-memory feed hands them: rank ``rank``'s share of the rows' first epoch, augmented
    in a background thread."""
    prep = task.batch_prep(augment=Augment(**config["augment"]), seed=config["seed"], epoch=0,
                           channels_last=tc.channels_last)
    return share_batches(rows, prep, batch, config["seed"], 0, rank, world)


def _report(rank: int, result: dict[str, Any]) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if rank == 0:  # Train V2 returns metrics only with a checkpoint: carry them in one
            Path(tmp, RESULT_FILE).write_text(json.dumps(result))
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({"images_per_s": result["images_per_s"]}, checkpoint=ckpt)


def _loop_config(cfg: Config, spec: ModelSpec, **extra: Any) -> dict[str, Any]:
    """What a contender's every rank needs: the recipe, the net, the seed, the bench's sizes."""
    b = cfg.bench
    return {"train": cfg.train.__dict__, "spec": spec.to_dict(), "seed": cfg.seed,
            "augment": augment_from(cfg.data).__dict__, "threads": worker_threads(cfg.cluster),
            "batch_size": b.batch_size, "steps": b.steps, "warmup": b.warmup_steps, **extra}


def _rates(cfg: Config, spec: ModelSpec, result: dict[str, Any], seconds: float) -> tuple[float, float]:
    """(the rate in the timed loop, the rate counting everything from the contender's launch)."""
    b, world = cfg.bench, cfg.cluster.num_workers
    per_step = build_task(cfg.train, spec).examples_per_step(b.batch_size // world) * world
    return result["images_per_s"], (b.warmup_steps + b.steps) * per_step / seconds


def _fit(cfg: Config, spec: ModelSpec, datasets: dict[str, Any], storage: Path,
         **extra: Any) -> tuple[dict[str, Any], float]:
    """One Ray Train ``fit()`` of the bench loop: rank 0's result, and the seconds it took in all."""
    started = time.perf_counter()
    trainer = torch_trainer(cfg, bench_loop_per_worker, _loop_config(cfg, spec, **extra), datasets,
                            name=f"bench-{time.time_ns()}", storage_path=str(storage))
    result = trainer.fit()
    seconds = time.perf_counter() - started
    with result.checkpoint.as_directory() as d:
        return json.loads(Path(d, RESULT_FILE).read_text()), seconds


def bench_ray_train(cfg: Config, spec: ModelSpec, datasets: dict[str, Any], storage: Path,
                    **feed: Any) -> tuple[float, float]:
    """(Ray Train's rate in the timed loop, its rate including ``fit()``'s start-up), in the task's unit/s;
    ``feed``: ``stream=`` a token stream's path, or ``in_memory=`` the decoded rows' object ref."""
    return _rates(cfg, spec, *_fit(cfg, spec, datasets, storage, **feed))


def bench_ray_rows(cfg: Config, spec: ModelSpec, rows: Path, storage: Path) -> tuple[float, float, list[float]]:
    """Ray Train fed the saved rows: (loop rate, end-to-end rate, rank 0's loss trajectory)."""
    result, seconds = _fit(cfg, spec, {}, storage, rows=str(rows))
    return (*_rates(cfg, spec, result, seconds), result["losses"])


def bench_ddp(cfg: Config, spec: ModelSpec, rows: Path, workdir: Path) -> tuple[float, float, list[float]]:
    """The same loop under ``torch.distributed.run`` (``cluster.num_workers`` processes, gloo, the same
    threads): (loop rate, rate from torchrun's launch, rank 0's loss trajectory)."""
    import subprocess
    import sys

    run_dir = Path(tempfile.mkdtemp(prefix="ddp-", dir=workdir))
    config_file, result_file = run_dir / "config.json", run_dir / "result.json"
    config_file.write_text(json.dumps(_loop_config(cfg, spec, rows=str(rows), result=str(result_file)), default=list))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={cfg.cluster.num_workers}", "-m", "pipelines.flows.benchloop", str(config_file)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "OMP_NUM_THREADS": str(worker_threads(cfg.cluster))})
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"the native DDP contender failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(result_file.read_text())
    return (*_rates(cfg, spec, result, seconds), result["losses"])


def alternate(contenders: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """Runs each contender once per round, in turns (A B A B …): every contender's results, in order."""
    results: dict[str, list[Any]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run_once in contenders.items():
            results[name].append(run_once())
    return results


def ratio_stats(mine: list[float], theirs: list[float]) -> tuple[float, float]:
    """(median, max − min) of the per-round ratios ``mine[i] / theirs[i]``."""
    ratios = [a / b for a, b in zip(mine, theirs)]
    return float(np.median(ratios)), max(ratios) - min(ratios)


def bench_torch_train(cfg: Config, spec: ModelSpec, batches_from: Callable[[], Iterable]) -> tuple[float, float]:
    """The same loop in this process, with as many threads as all of Ray's workers together."""
    b = cfg.bench
    threads = worker_threads(cfg.cluster) * cfg.cluster.num_workers  # the same total threads as Ray's workers
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        torch.manual_seed(cfg.seed)
        model = build_net(spec, cfg.train)
        per_step = build_task(cfg.train, spec).examples_per_step(b.batch_size)
        loop_rate = timed_loop(model, cfg.train, spec, batches_from(), b.steps, b.warmup_steps, per_step)
        total = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous)
    return loop_rate, (b.warmup_steps + b.steps) * per_step / total


def _memory_batches(cfg: Config, spec: ModelSpec, rows: dict[str, np.ndarray]) -> Callable[[], Iterable]:
    """The decoded rows in this process, fed as one rank of one: the in-memory feed's batches, whole."""
    config = _loop_config(cfg, spec)
    return lambda: _share(config, rows, cfg.train, build_task(cfg.train, spec), cfg.bench.batch_size, 0, 1)


def _image_batches(cfg: Config, spec: ModelSpec, dataset) -> Callable[[], Iterable]:
    """The materialised train rows through ``iter_torch_batches`` and the task's collate, as a worker's shard."""
    def batches():
        prep = build_task(cfg.train, spec).batch_prep(augment=augment_from(cfg.data), seed=cfg.seed,
                                                      channels_last=cfg.train.channels_last)
        return dataset.iter_torch_batches(batch_size=cfg.bench.batch_size, collate_fn=RayBatchPrep(prep),
                                          prefetch_batches=2)
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


def bench_preprocess(cfg: Config, manifest: Manifest, rows: int) -> dict[str, list[float]]:
    """Images/s of whole passes over ``rows`` rows, Ray Data and DataLoader in turns, ``bench.rounds`` each."""
    b = cfg.bench
    prep = engine.BatchPrep(augment_from(cfg.data), cfg.seed, 0, cfg.train.channels_last)

    def ray_pass() -> tuple[int, float]:  # streaming read → decode (Ray tasks) → augment in the iterator's threads
        started = time.perf_counter()
        return _drain(image_dataset(manifest, "train", rows).iter_torch_batches(
            batch_size=b.batch_size, collate_fn=RayBatchPrep(prep), prefetch_batches=2, drop_last=True), started)

    def torch_pass() -> tuple[int, float]:  # the same shards, decode and transforms in worker processes
        started = time.perf_counter()
        return _drain(iter(torch.utils.data.DataLoader(
            ShardBatches(manifest, rows, b.batch_size), batch_size=None, num_workers=max(1, os.cpu_count() or 1),
            collate_fn=prep, persistent_workers=False, prefetch_factor=2)), started)

    passes = alternate({"ray": ray_pass, "torch": torch_pass}, b.rounds)
    counts = {n for side in passes.values() for n, _ in side}
    if len(counts) != 1:  # the ratio compares equal work or nothing
        raise RuntimeError(f"the preprocessing contenders pushed different numbers of images: {sorted(counts)}")
    return {side: [n / seconds for n, seconds in results] for side, results in passes.items()}


def _drain(batches, started: float) -> tuple[int, float]:
    """(images, seconds from ``started`` to the last batch)."""
    n = sum(x.shape[0] for x, _y in batches)
    return n, time.perf_counter() - started


def _train_rounds(cfg: Config, torch_once: Callable[[], tuple[float, float]],
                  ray_once: Callable[[], tuple[float, float]], unit: str) -> dict[str, float]:
    rates = alternate({"torch": torch_once, "ray": ray_once}, cfg.bench.rounds)
    for i, ((t_loop, t_total), (r_loop, r_total)) in enumerate(zip(rates["torch"], rates["ray"]), 1):
        say(f"bench: round {i}/{cfg.bench.rounds}: plain PyTorch {t_loop:,.0f} {unit}/s in the loop ({t_total:,.0f} "
            f"with start-up), Ray Train {r_loop:,.0f} ({r_total:,.0f})")
    return _training_results(unit, *(list(x) for x in zip(*rates["ray"])), *(list(x) for x in zip(*rates["torch"])))


def _ddp_rounds(cfg: Config, spec: ModelSpec, rows: Path, workdir: Path) -> dict[str, float]:
    """Ray Train against native DDP (torchrun), both fed the same saved rows in the same order, in turns."""
    n = cfg.bench.rounds
    runs = alternate({"ddp": lambda: bench_ddp(cfg, spec, rows, workdir),
                      "ray": lambda: bench_ray_rows(cfg, spec, rows, workdir)}, n)
    for i, ((d_loop, d_total, _), (r_loop, r_total, _)) in enumerate(zip(runs["ddp"], runs["ray"]), 1):
        say(f"bench: round {i}/{n}: native DDP {d_loop:,.0f} img/s in the loop ({d_total:,.0f} with start-up), "
            f"Ray Train on the same rows {r_loop:,.0f} ({r_total:,.0f})")
    gaps = []
    for (_, _, d_losses), (_, _, r_losses) in zip(runs["ddp"], runs["ray"]):
        if len(d_losses) != len(r_losses):
            raise RuntimeError(f"the DDP and Ray Train contenders ran {len(d_losses)} and {len(r_losses)} steps")
        gaps.append(max(abs(a - b) for a, b in zip(d_losses, r_losses)))
    m = names.bench_metric
    loop, spread = ratio_stats([r[0] for r in runs["ray"]], [d[0] for d in runs["ddp"]])
    total, _ = ratio_stats([r[1] for r in runs["ray"]], [d[1] for d in runs["ddp"]])
    return {m("train_ray_vs_ddp"): loop, m("train_ray_vs_ddp_spread"): spread,
            m("train_ray_vs_ddp_end_to_end"): total,
            m("train_ddp_images_per_s"): float(np.median([d[0] for d in runs["ddp"]])),
            m("train_ray_rows_images_per_s"): float(np.median([r[0] for r in runs["ray"]])),
            # the same seed, rows and order: the two loss trajectories agree to float rounding
            m("ddp_loss_gap"): max(gaps)}


def run(cfg: Config, manifest: Manifest, workdir: Path) -> dict[str, float]:
    b = cfg.bench
    spec = model_spec(cfg, manifest)
    rows = min(manifest.splits["train"]["rows"], (b.steps + b.warmup_steps + 2) * b.batch_size)
    decoded = None  # the decoded rows, read once for the contenders that take them in memory
    if feeds_in_memory(cfg.data.feed, rows, manifest.shape, IN_PROCESS_BYTES):  # as training feeds them
        decoded = read_rows(manifest, "train", rows)
        ref = ray.put(decoded)
        say(f"bench: both training contenders fed {rows:,} decoded rows in memory (data.feed={cfg.data.feed})")
        results = _train_rounds(cfg, lambda: bench_torch_train(cfg, spec, _memory_batches(cfg, spec, decoded)),
                                lambda: bench_ray_train(cfg, spec, {}, workdir, in_memory=ref), "img")
    else:
        train_rows = image_dataset(manifest, "train", rows).materialize()  # decoded once, for both contenders
        say(f"bench: both training contenders fed {rows:,} rows through one materialised Ray Dataset")
        results = _train_rounds(
            cfg, lambda: bench_torch_train(cfg, spec, _image_batches(cfg, spec, train_rows)),
            lambda: bench_ray_train(cfg, spec, {"train": train_rows}, workdir), "img")
    if b.ddp:
        rows_file = workdir / "bench-rows.npz"  # the rows the other contenders train on, for torchrun's processes
        np.savez(rows_file, **(decoded if decoded is not None else read_rows(manifest, "train", rows)))
        results.update(_ddp_rounds(cfg, spec, rows_file, workdir))
    pre = bench_preprocess(cfg, manifest, min(manifest.splits["train"]["rows"], b.preprocess_rows))
    ratio, spread = ratio_stats(pre["ray"], pre["torch"])
    say(f"bench: preprocessing, whole passes: Ray Data {float(np.median(pre['ray'])):,.0f} img/s vs DataLoader "
        f"{float(np.median(pre['torch'])):,.0f} img/s (median of {b.rounds})")
    m = names.bench_metric
    results.update({m("preprocess_ray_vs_torch"): ratio, m("preprocess_ray_vs_torch_spread"): spread,
                    m("preprocess_ray_images_per_s"): float(np.median(pre["ray"])),
                    m("preprocess_torch_images_per_s"): float(np.median(pre["torch"]))})
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
    results = _train_rounds(
        cfg, lambda: bench_torch_train(cfg, spec, lambda: task.stream_batches(
            np.load(stream, mmap_mode="r"), 0, 1, b.batch_size, epoch=0, seed=cfg.seed, train=True)),
        lambda: bench_ray_train(cfg, spec, {}, workdir, stream=stream), task.unit)
    return _log(cfg, results)


def _training_results(unit: str, ray_loop: list[float], ray_total: list[float], torch_loop: list[float],
                      torch_total: list[float]) -> dict[str, float]:
    """Per-round rates → the medians of the round ratios, their spread, and the median rates."""
    m = names.bench_metric
    per_s = {"img": "images", "char": "chars"}.get(unit, f"{unit}s")
    loop, loop_spread = ratio_stats(ray_loop, torch_loop)
    total, _ = ratio_stats(ray_total, torch_total)
    return {m("train_ray_vs_torch"): loop, m("train_ray_vs_torch_spread"): loop_spread,
            m("train_ray_vs_torch_end_to_end"): total,
            m(f"train_ray_{per_s}_per_s"): float(np.median(ray_loop)),
            m(f"train_torch_{per_s}_per_s"): float(np.median(torch_loop))}


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
