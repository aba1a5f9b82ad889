"""Stage ``train``: data-parallel training on Ray Train (DDP: gloo on CPU, NCCL on GPU).

    visionray run train model=resnet20 cluster.num_workers=4 cluster.use_gpu=true train.precision=bf16

Each worker streams its shard of the Ray Dataset, augments per batch in Ray Data's iterator threads
and runs the one training loop of ``components.engine``. Rank 0 logs each epoch to the stage's
MLflow run (step = the epoch's number, from 1, as the terminal says "epoch 1/6") and saves a
checkpoint (model package + optimiser state); a worker that dies is replaced
and training resumes from the last checkpoint (``FailureConfig``). Running the same run name again
resumes a stopped run, since Ray Train restores its checkpoint manager from storage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from components import engine, tasks
from components.augment import Augment
from components.data.shards import Manifest
from components.hooks import HookSpec, TrainHook, build_hooks, hook_dirname
from components.models import Normalize
from components.optim import build_optimizer, build_scheduler
from components.packaging import WEIGHTS_FILE, ModelSpec, save_package, unwrap
from components.tasks import Meter, Task
from pipelines.config import Config, TrainConfig
from pipelines.records import Prepared, TextPrepared, Trained
from pipelines.services import names, quiet, startup, tracking
from pipelines.services.progress import duration, eta, say
from pipelines.services.runtime import quiet_worker_logs, worker_threads
from pipelines.stages import babysit
from pipelines.stages.preprocess import (
    IN_PROCESS_BYTES,
    augment_from,
    fits_in_process,
    image_dataset,
    read_rows,
)

STATE_FILE = "train_state.pt"
#: Epochs are numbered from 1 in the history a checkpoint holds (older checkpoints, from 0, are shifted).
HISTORY_BASE = 1
EXTRAS_DIR = "extras"  # hooks' files inside a checkpoint (components.hooks)
MODEL_DIR = "model"


def plain(obj: Any) -> Any:
    """``obj`` with NumPy scalars as Python numbers: what ``torch.load(weights_only=True)`` reads back."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj


def read_state(checkpoint: Path) -> dict:
    """A checkpoint's optimiser, scheduler, history and hook state, with ``weights_only=True``: checkpoints
    live under ``cluster.storage_path``, shared storage others can write, so nothing in them may run code."""
    from components.package_safety import load_tensors

    return load_tensors(checkpoint / STATE_FILE)


def model_spec(cfg: Config, manifest: Manifest) -> ModelSpec:
    """The architecture from ``model.*``, sized for the dataset's images and classes. A segmentation net
    (``model=fcn|unet``) scores background and every class, and is trained by the segmentation task."""
    from components.models import SEGMENTATION_MODELS, option_defaults

    m = cfg.model
    h, _, c = manifest.shape
    # Only the options the family takes. Those added with the zoo are left out (None) at the family's
    # default, so a resnet's spec equals one written before they existed: retrain compares specs to
    # decide whether the champion's weights fit.
    defaults = option_defaults(m.name)
    takes = tuple(defaults)
    opts = {k: getattr(m, k) for k in ("depth", "activation", "init", "hidden", "block", "groups", "growth")
            if k in takes}
    opts = {k: (None if k != "depth" and v == defaults[k] else v) for k, v in opts.items()}
    dense = m.name in SEGMENTATION_MODELS  # mask id 0 is background, k the k-th class (components.data.types)
    classes = ("background", *manifest.classes) if dense else tuple(manifest.classes)
    return ModelSpec(name=m.name, in_channels=c, num_classes=len(classes), image_size=h,
                     classes=classes, normalization=cfg.data.normalization,
                     width=(m.width or None) if "width" in takes else None,
                     dropout=m.dropout, batchnorm=m.batchnorm, **opts,
                     **({"task": "segmentation"} if dense else {}),
                     **({"tta": m.tta} if m.tta != "none" and not dense else {}))


def steps_per_epoch(rows: int, batch_size: int, world: int, max_steps: int) -> int:
    per_worker = max(1, batch_size // world)
    steps = math.ceil(rows / world / per_worker)
    return min(steps, max_steps) if max_steps else steps


# --------------------------------------------------------------------------- per worker (Ray boundary)


def build_task(tc: TrainConfig, spec: ModelSpec, **options: Any) -> Task:
    """The task the spec's net is trained for, with the loss of ``train.*`` and a pipeline's ``options``
    (a language model's per-epoch samples)."""
    return tasks.build_task(spec.task, num_classes=spec.num_classes, classes=spec.classes, loss=tc.loss,
                            label_smoothing=tc.label_smoothing, seq_len=tc.bptt, clip=tc.clip_norm,
                            model=spec.name, **options)


def build_training(tc: TrainConfig, model: torch.nn.Module, steps: int, spec: ModelSpec, **task_options: Any):
    """Optimiser, per-step schedule and task: one recipe for Ray workers and the bench baseline. A model
    that owns its optimisers (a GAN: one per net, components.gan) builds them from ``train.*`` and its
    task's ``options``."""
    owner = getattr(unwrap(model), "build_optimizer", None)
    optimizer = owner(tc.optimizer, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay,
                      options=task_options.get("options")) if owner else \
        build_optimizer(tc.optimizer, model.parameters(), lr=tc.lr, momentum=tc.momentum,
                        weight_decay=tc.weight_decay)
    scheduler = build_scheduler(optimizer, schedule=tc.schedule, total_steps=tc.epochs * steps,
                                warmup_steps=min(int(tc.warmup_epochs * steps), tc.epochs * steps), step_every=tc.step_epochs * steps,
                                gamma=tc.gamma, cycles=tc.snapshots)
    return optimizer, scheduler, build_task(tc, spec, **task_options)


def model_epoch(mode: str, best_metrics: dict[str, float], history: dict[str, list[tuple[int, float]]],
                val_key: str) -> tuple[int, float]:
    """(epoch number, its ``val_key``) of the epoch whose weights are the run's model: the best on val
    (Ray Train's best checkpoint, ``best_metrics``) or, with ``train.model_epoch=last``, the last one."""
    if mode == "last" and history.get(val_key):
        number, value = history[val_key][-1]
        return int(number), float(value)
    return int(best_metrics[names.EPOCH]), float(best_metrics[val_key])


def _ray_batch_prep_class():
    from ray.data.collate_fn import NumpyBatchCollateFn

    class RayBatchPrep(NumpyBatchCollateFn):
        """A task's batch prep as Ray Data's collate: runs in the iterator's prefetch threads."""

        def __init__(self, prep):
            super().__init__()
            self.prep = prep

        def __call__(self, batch):
            return self.prep(batch)

    return RayBatchPrep


def RayBatchPrep(prep):  # noqa: N802 - a factory that reads like the class
    return _ray_batch_prep_class()(prep)


@dataclass
class _Worker:
    """One Ray Train worker's training state (built once; the epoch loop reads it)."""

    config: dict[str, Any]
    tc: TrainConfig
    spec: ModelSpec
    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    scaler: Any
    task: Task
    device: torch.device
    steps: int
    rank: int
    world: int
    logger: Any
    hooks: list[TrainHook] = dataclasses.field(default_factory=list)
    guard: engine.ExplosionGuard | None = None
    start_epoch: int = 0
    history: dict = dataclasses.field(default_factory=dict)
    startup: list[tuple[str, float]] | None = None  # rank 0 of a fresh run: the timeline to its first step


def train_loop_per_worker(config: dict[str, Any]) -> None:
    entered = time.time()
    w = _setup_worker(config)
    if w.rank == 0 and w.start_epoch == 0 and config.get("startup"):
        marks = [*map(tuple, config["startup"])]
        # a process Ray started ahead (an idle worker it prestarts) gave none of its time to this run
        spawned = max(startup.launched(), marks[-1][1])
        w.startup = [*marks, ("worker_group", spawned), ("workers", entered), ("worker_setup", time.time())]
    try:
        _run_epochs(w)
    except engine.LossExplosion as e:
        # Deterministic: retrying from the checkpoint would explode again. Every rank gets here at
        # the same step; rank 0 records why, all return, and the driver raises it.
        if w.logger:
            w.logger.set_tag(names.STOPPED_TAG, str(e))


def worker_setup(config: dict[str, Any]) -> tuple[Any, TrainConfig, ModelSpec]:
    """What every Ray Train worker does first (train and bench): quiet logs, its threads, the seed;
    returns Ray Train's context, the train config and the model spec of ``config``."""
    import ray.train

    quiet_worker_logs()
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    return ray.train.get_context(), TrainConfig(**config["train"]), ModelSpec.from_dict(config["spec"])


def prepare_worker_model(model: torch.nn.Module, tc: TrainConfig) -> torch.nn.Module:
    """The net in the layout ``train.channels_last`` asks for, wrapped for DDP by Ray Train."""
    import ray.train.torch

    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return ray.train.torch.prepare_model(model)


def torch_trainer(cfg: Config, loop: Any, loop_config: dict[str, Any], datasets: dict[str, Any],
                  **run_config: Any):
    """The one TorchTrainer builder (train and bench): workers, CPUs and GPU from ``cluster.*``."""
    from ray.train import LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    c = cfg.cluster
    run_config.setdefault("logging_config", LoggingConfig(log_level=quiet.train_log_level()))
    return TorchTrainer(loop, train_loop_config=loop_config,
                        scaling_config=ScalingConfig(num_workers=c.num_workers, use_gpu=c.use_gpu,
                                                     resources_per_worker={"CPU": c.cpus_per_worker}),
                        run_config=RunConfig(**run_config), datasets=datasets)


def _setup_worker(config: dict[str, Any]) -> _Worker:
    import ray.train
    import ray.train.torch

    ctx, tc, spec = worker_setup(config)
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    tc = dataclasses.replace(tc, precision=engine.resolve_precision(tc.precision, device))
    model = spec.build(Normalize(torch.tensor(config["mean"]), torch.tensor(config["std"]))
                       if config.get("mean") is not None else None)
    if config.get("init_state") is not None:  # warm start (retrain): the net's weights, not its normaliser
        model.net.load_state_dict(config["init_state"])
    hooks = build_hooks(config.get("hooks"))
    for hook in hooks:
        hook.setup(model)
    model = prepare_worker_model(model, tc)
    if config.get("streams"):  # a token stream: the task says how many steps every rank takes
        steps = build_task(tc, spec).stream_steps(config["train_rows"], world, max(1, tc.batch_size // world))
        steps = min(steps, tc.max_steps_per_epoch) if tc.max_steps_per_epoch else steps
    else:
        steps = steps_per_epoch(config["train_rows"], tc.batch_size, world, tc.max_steps_per_epoch)
    optimizer, scheduler, task = build_training(tc, model, steps, spec, **config.get("task_options", {}))
    w = _Worker(config, tc, spec, model, optimizer, scheduler,
                torch.amp.GradScaler("cuda") if tc.precision == "fp16" else None, task,
                device, steps, rank, world,
                tracking.RunLogger(config["tracking_uri"], config["run_id"]) if rank == 0 else None, hooks)
    if w.logger is not None:
        w.logger.set_tags({names.PRECISION_TAG: tc.precision})
    w.guard = engine.ExplosionGuard(tc.explode_factor, _mean_over_ranks(w.device) if world > 1 else None,
                                    floor=w.task.loss_floor())
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a replaced worker, or a resumed run: continue after the last finished epoch
        with checkpoint.as_directory() as d:
            # The state dict as saved (not rebuilt from arch.json): a hook may have changed the
            # model's structure in setup() (low-rank factorisation), and the checkpoint has that structure.
            unwrap(model).load_state_dict(torch.load(Path(d) / MODEL_DIR / WEIGHTS_FILE, map_location="cpu",
                                                     weights_only=True))
            state = read_state(Path(d))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if w.scaler is not None and state.get("scaler"):
            w.scaler.load_state_dict(state["scaler"])
        # state["epoch"] is the loop's index of the last finished epoch (its number is one more)
        w.start_epoch, w.history = state["epoch"] + 1, renumbered(state["history"], state.get("history_base", 0))
        w.guard.initial = state.get("initial_loss")
        for hook, hook_state in zip(hooks, state.get("hooks", [])):
            hook.load_state_dict(hook_state)
        if rank == 0:
            _emit(f"resuming from the checkpoint of epoch {state['epoch'] + 1}")
            w.logger.backfill(w.history)
    return w


def renumbered(history: dict[str, list[tuple[int, float]]], base: int) -> dict[str, list[tuple[int, float]]]:
    """A checkpoint's history with its epochs numbered from :data:`HISTORY_BASE` (one saved from 0 is shifted)."""
    shift = HISTORY_BASE - base
    return {k: [(epoch + shift, v) for epoch, v in points] for k, points in history.items()} if shift else history


def _run_epochs(w: _Worker) -> None:
    import ray.train

    config, tc, rank, model, history = w.config, w.tc, w.rank, w.model, w.history
    per_worker = max(1, tc.batch_size // w.world)
    streams = config.get("streams")
    run_started = time.perf_counter()
    for epoch in range(w.start_epoch, tc.epochs):  # the index: data order, schedule and hooks count from 0
        number = epoch + 1  # what metrics, the history and the terminal call this epoch
        started = time.perf_counter()
        if streams:
            batches, val_batches = (_stream_batches(w, streams[split], per_worker, epoch, split == "train")
                                    for split in ("train", "val"))
            examples_per_step = w.task.examples_per_step(per_worker)
        else:
            batches, val_batches = _row_batches(w, per_worker, epoch)
            examples_per_step = per_worker
        meter = engine.Throughput()
        progress = _EpochProgress(epoch, tc.epochs, w.steps, run_started, w.start_epoch,
                                  w.task.primary, w.task.unit) if rank == 0 else None

        bare = unwrap(model)

        def on_step(step: int, stats: Any) -> None:
            if w.startup:  # the first step of a fresh run: where the time since launch went
                _log_startup(w)
            for hook in w.hooks:
                hook.after_step(bare, step)
            meter.step(step, examples_per_step)
            if progress:
                progress.update(step, stats)

        train_meter = engine.train_one_epoch(model, w.task, w.optimizer, batches, scheduler=w.scheduler,
                                             scaler=w.scaler, precision=tc.precision, device=w.device,
                                             max_steps=w.steps, on_step=on_step, guard=w.guard)
        with getattr(bare, "without_tta", contextlib.nullcontext)():  # val ranks epochs: the plain net's
            val_meter, _, _ = engine.evaluate(model, w.task, val_batches, precision=tc.precision, device=w.device)
        metrics = {**epoch_metrics(w.task, train_meter, val_meter, meter.images_per_s, w.device),
                   names.LR: w.optimizer.param_groups[0]["lr"],
                   names.EPOCH_SECONDS: time.perf_counter() - started, names.EPOCH: number}
        with tempfile.TemporaryDirectory(prefix="visionray-ckpt-") as tmp:
            for i, hook in enumerate(w.hooks):
                out_dir = Path(tmp) / EXTRAS_DIR / hook_dirname(i, hook) if rank == 0 else None
                if out_dir is not None:
                    out_dir.mkdir(parents=True)
                metrics.update(hook.end_epoch(bare, epoch, out_dir))
            logged = {k: v for k, v in metrics.items() if k != names.EPOCH}
            for k, v in logged.items():
                history.setdefault(k, []).append((number, v))
            if rank == 0:
                save_package(Path(tmp) / MODEL_DIR, model, w.spec)
                torch.save(plain({"optimizer": w.optimizer.state_dict(), "scheduler": w.scheduler.state_dict(),
                                  "scaler": w.scaler.state_dict() if w.scaler else None, "epoch": epoch,
                                  "history": history, "history_base": HISTORY_BASE,
                                  "hooks": [h.state_dict() for h in w.hooks], "initial_loss": w.guard.initial}),
                           Path(tmp) / STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            else:
                ray.train.report(metrics, checkpoint=None)
        if rank == 0:
            progress.done(metrics)  # after the report: "epoch N done" means epoch N is checkpointed
            for path, content in w.task.epoch_artifacts(bare, epoch).items():  # samples, previews, grids
                if isinstance(content, str):
                    w.logger.log_text(content, path)
                elif isinstance(content, bytes):  # a PNG drawn on the worker (a segmenter's previews)
                    w.logger.log_bytes(content, path)
                else:  # a uint8 image (a generative model's sample grid), stepped by the epoch's number
                    w.logger.log_image(content, path, number)
            # Logged after the checkpoint: a restart re-runs an epoch that was not logged yet and
            # backfills one that was checkpointed but not logged, so no step is lost or doubled.
            if not w.logger.log_epoch(logged, number):
                _emit(f"epoch {number} was logged before the restart; its first values stand")


def _row_batches(w: _Worker, per_worker: int, epoch: int):
    """Ray Data rows of this rank's shards (or its share of the in-memory splits) through the task's batch
    prep: (train, val) iterables."""
    import ray.train

    config, tc = w.config, w.tc
    if config.get("in_memory"):
        return _memory_batches(w, per_worker, epoch)
    prep = RayBatchPrep(w.task.batch_prep(augment=Augment(**config["augment"]), seed=config["seed"], epoch=epoch,
                                          channels_last=tc.channels_last, pin_memory=config["use_gpu"]))
    train = ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=per_worker, collate_fn=prep, prefetch_batches=2,
        local_shuffle_buffer_size=min(4 * per_worker, config["train_rows"]),
        local_shuffle_seed=config["seed"] * 10_007 + epoch * 101 + w.rank)
    val = ray.train.get_dataset_shard("val").iter_torch_batches(batch_size=512, collate_fn=RayBatchPrep(
        w.task.batch_prep(channels_last=tc.channels_last)), prefetch_batches=2)
    return train, val


def _memory_batches(w: _Worker, per_worker: int, epoch: int):
    """``data.feed=memory``: the decoded splits from Ray's object store (read zero-copy on this node). Train:
    this rank's share of the epoch's permutation, every rank the same number of rows (DDP steps together),
    seeded by (seed, epoch); val: this rank's contiguous block, every row on exactly one rank."""
    import ray

    config, tc = w.config, w.tc
    train, val = ray.get([config["in_memory"]["train"], config["in_memory"]["val"]])
    prep = w.task.batch_prep(augment=Augment(**config["augment"]), seed=config["seed"], epoch=epoch,
                             channels_last=tc.channels_last, pin_memory=config["use_gpu"])
    train_batches = share_batches(train, prep, per_worker, config["seed"], epoch, w.rank, w.world)
    lo, hi = val_block(len(val["idx"]), w.rank, w.world)
    val_prep = w.task.batch_prep(channels_last=tc.channels_last)
    val_batches = (val_prep({k: v[i:min(i + 512, hi)] for k, v in val.items()}) for i in range(lo, hi, 512))
    return train_batches, val_batches


def share_batches(rows: dict[str, Any], prep: Callable, per_worker: int, seed: int, epoch: int, rank: int,
                  world: int) -> Iterable[Any]:
    """Rank ``rank``'s share of the epoch's rows (``train_share``) in batches of ``per_worker`` through
    ``prep``, made a batch ahead in a background thread (``engine.prefetched``)."""
    mine = train_share(len(rows["idx"]), seed, epoch, rank, world)
    return engine.prefetched(prep({k: v[mine[i:i + per_worker]] for k, v in rows.items()})
                             for i in range(0, len(mine), per_worker))


def train_share(n: int, seed: int, epoch: int, rank: int, world: int):
    """Rank ``rank``'s rows of the epoch: every ``world``-th of a permutation seeded by (seed, epoch), all
    ranks the same number (``n // world``; at most ``world - 1`` rows sit out an epoch, different ones each)."""
    import numpy as np

    return np.random.default_rng([seed, epoch]).permutation(n)[rank::world][: n // world]


def val_block(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous block of ``n`` val rows: every row on exactly one rank."""
    return rank * n // world, (rank + 1) * n // world


def feeds_in_memory(feed: str, rows: int, shape: tuple[int, ...], budget: int) -> bool:
    """``data.feed``: memory, ray_data, or auto (memory when the rows' pixels fit ``budget`` bytes)."""
    return feed == "memory" or (feed == "auto" and fits_in_process(rows, shape, budget))


def in_memory_splits(cfg: Config, manifest: Manifest, prepared: Prepared) -> dict[str, Any] | None:
    """``data.feed``: the decoded train and val rows put in Ray's object store, or ``None`` for Ray Datasets."""
    import ray

    if not feeds_in_memory(cfg.data.feed, prepared.rows["train"] + prepared.rows["val"], manifest.shape,
                           IN_PROCESS_BYTES):
        return None
    return {split: ray.put(read_rows(manifest, split, prepared.rows[split])) for split in ("train", "val")}


def _stream_batches(w: _Worker, path: str, per_worker: int, epoch: int, train: bool):
    """This rank's slice of the arrays the task reads itself, from storage every node sees: a token stream
    (.npy) in truncated-BPTT order (components.tasks.language_model), or captioned images (.npz)."""
    import numpy as np

    data = np.load(path, mmap_mode="r")
    return w.task.stream_batches(data, w.rank, w.world, per_worker, epoch=epoch, seed=w.config["seed"], train=train)


def epoch_metrics(task: Task, train: Meter, val: Meter, images_per_s: float,
                  device: torch.device) -> dict[str, float]:
    """The epoch's train and val metrics summed over all ranks (one all-reduce), and images/s of all."""
    n = len(train.totals())
    totals = _all_reduce([*train.totals(), *val.totals(),
                          images_per_s if math.isfinite(images_per_s) else 0.0], device)
    # A metric a split does not measure is NaN there (a captioner decodes on val only: no train/bleu4) and
    # is left out rather than logged as NaN; so is the gap it would need.
    on_train = {k: v for k, v in train.with_totals(totals[:n]).compute().items() if math.isfinite(v)}
    on_val = {k: v for k, v in val.with_totals(totals[n:-1]).compute().items() if math.isfinite(v)}
    gap = {names.train_val_gap(task.primary): on_train[task.primary] - on_val[task.primary]} \
        if task.primary in on_train else {}
    return {**{names.metric(names.TRAIN, k): v for k, v in on_train.items()},
            **{names.metric(names.VAL, k): v for k, v in on_val.items()},
            **gap, names.throughput(task.unit): totals[-1]}


def _mean_over_ranks(device: torch.device):
    import torch.distributed as dist

    def mean(value: float) -> float:  # one scalar all-reduce per step: every rank sees the same loss
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t) / dist.get_world_size()

    return mean


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)  # sums: loss/correct/count, and images/s of all workers = the cluster's
    return t.tolist()


def _log_startup(w: _Worker) -> None:
    metrics = startup.breakdown([*w.startup, ("first_step", time.time())])
    w.startup = None
    w.logger.log_metrics(metrics, step=0)
    _emit(f"train: {startup.summary(metrics)}")


def _emit(line: str) -> None:
    # Not print(): Ray Train patches print() in workers and the line would show twice.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _EpochProgress:
    """Rank 0's terminal line: a few updates per epoch with ETA, then one summary line."""

    def __init__(self, epoch: int, epochs: int, steps: int, run_started: float, first_epoch: int, primary: str,
                 unit: str = "img"):
        self.epoch, self.epochs, self.steps, self.primary, self.unit = epoch, epochs, steps, primary, unit
        self.run_started, self.first_epoch = run_started, first_epoch
        self.started = time.perf_counter()
        self.marks = {max(1, steps * q // 4) for q in (1, 2, 3)}

    def update(self, step: int, meter: Any) -> None:
        if step + 1 in self.marks:
            elapsed = time.perf_counter() - self.started
            m = meter.compute()
            _emit(f"epoch {self.epoch + 1}/{self.epochs}  {step + 1}/{self.steps} steps  "
                  f"loss {m['loss']:.4f}  {_figure(self.primary, m.get(self.primary))}"
                  f"epoch ETA {eta(elapsed, step + 1, self.steps)}")

    def done(self, m: dict[str, float]) -> None:
        elapsed = time.perf_counter() - self.run_started
        done = self.epoch + 1 - self.first_epoch
        p, short = self.primary, _short(self.primary)
        _emit(f"epoch {self.epoch + 1}/{self.epochs} done in {duration(m[names.EPOCH_SECONDS])}  "
              f"train loss {m[names.TRAIN_LOSS]:.4f} {_figure(p, m.get(names.metric(names.TRAIN, p)))}"
              f"val loss {m[names.VAL_LOSS]:.4f} {short} {m[names.metric(names.VAL, p)]:.4f}  "
              f"{m[names.throughput(self.unit)]:.0f} {self.unit}/s  ETA {eta(elapsed, done, self.epochs - self.first_epoch)}")


def _short(metric: str) -> str:
    return "acc" if metric == "accuracy" else metric


def _figure(metric: str, value: float | None) -> str:
    """``"acc 0.9123  "``, or nothing where the split does not measure it (a captioner's BLEU on train)."""
    return f"{_short(metric)} {value:.4f}  " if value is not None and math.isfinite(value) else ""


# --------------------------------------------------------------------------- driver


def log_model_profile(cfg: Config, prepared: Prepared, spec: ModelSpec) -> dict[str, float]:
    """Parameters and FLOPs per image, and (``model.init_diagnostic``) per-layer activation statistics at
    initialisation on a real training batch, to the active run. The net is built with the workers' seed,
    so these are the statistics of the very weights training starts from."""
    import numpy as np

    from components.data.shards import read_split
    from components.diagnostics import activation_stats, collapse_ratio
    from components.models import count_parameters
    from components.models.base import TTA_VIEWS
    from components.plots import activation_stats_figure

    mean, std = prepared.normalizer()
    torch.manual_seed(cfg.seed)
    model = spec.build(Normalize(mean, std))
    macs = training_macs(model, spec)
    profile = {names.MODEL_PARAMS: count_parameters(model), names.MODEL_MACS: macs, names.MODEL_FLOPS: 2 * macs}
    tracking.log_metrics(profile)
    if cfg.model.init_diagnostic:
        images = read_split(prepared.manifest(), "train").images[:128]
        x = engine.BatchPrep()({"image": images, "label": np.zeros(len(images), dtype=np.int64)})[0]
        stats = activation_stats(model, x, seed=cfg.seed)
        if stats:
            for i, s in enumerate(stats, start=1):
                tracking.log_metrics({names.INIT_ACT_MEAN: s.mean, names.INIT_ACT_STD: s.std}, step=i)
            profile[names.INIT_COLLAPSE] = collapse_ratio(stats)
            tracking.log_metrics({names.INIT_COLLAPSE: profile[names.INIT_COLLAPSE]})
            tracking.log_figure(activation_stats_figure(stats, f"{spec.name}: activations at initialisation"),
                                names.INIT_PLOT)
            tracking.log_json([{"layer": s.name, "mean": s.mean, "std": s.std} for s in stats],
                              "diagnostics/init_activations.json")
    views = len(TTA_VIEWS[spec.tta]) if spec.tta else 1
    say(f"train: {spec.name} has {profile[names.MODEL_PARAMS]:,} parameters, "
        f"{profile[names.MODEL_FLOPS] / 1e6:.1f} MFLOPs per image"
        + (f" ({views} test-time views of it when evaluated and served)" if views > 1 else ""))
    return profile


def training_macs(model: torch.nn.Module, spec: ModelSpec) -> int:
    """Multiply-accumulates of one image's forward pass as training runs it: a classifier's test-time views
    (``model.tta``, eval mode only) left out, so ``model/flops`` is the cost each training step pays."""
    import contextlib

    from components.models import count_macs

    plain = model.without_tta() if getattr(model, "tta", None) else contextlib.nullcontext()
    with plain:
        return count_macs(model, (spec.in_channels, spec.image_size, spec.image_size))


def _precision_line(cfg: Config) -> str:
    """``train.precision`` as the start line says it; ``auto`` with what it means on this machine's device."""
    if cfg.train.precision != "auto":
        return cfg.train.precision
    device = torch.device("cuda" if cfg.cluster.use_gpu and torch.cuda.is_available() else "cpu")
    return f"auto ({engine.resolve_precision('auto', device)} on this node's {device.type.upper()})"


def storage_path(cfg: Config) -> Path | str:
    """Where Ray Train keeps checkpoints: ``cluster.storage_path``, absolute (or a URI as given)."""
    s = cfg.cluster.storage_path
    return Path(s).resolve() if "://" not in s else s


def root_cause(e: BaseException) -> BaseException:
    """The first worker's own exception inside Ray Train's WorkerGroupError / RayTaskError."""
    failures = getattr(e, "worker_failures", None)
    if failures:
        e = next(iter(failures.values()))
    return getattr(e, "cause", None) or e


def _startup_to_parent(run_id: str, uri: str, tags: dict[str, str]) -> None:
    """A pipeline's first training run's start-up figures also on its parent run, beside its peak memory."""
    parent = tags.get("mlflow.parentRunId")
    if not parent or tags.get(names.STAGE_TAG) != "train":
        return  # a sweep trial, a bench contender: their parent is not one pipeline's start
    figures = {k: v for k, v in tracking.run_metrics(run_id, uri).items()
               if k == names.STARTUP_SECONDS or k.startswith(names.STARTUP_PHASE_PREFIX)}
    if figures and names.STARTUP_SECONDS not in tracking.run_metrics(parent, uri):
        tracking.RunLogger(uri, parent).log_metrics(figures, step=0)


def loop_config(cfg: Config, prepared: Prepared, uri: str, run_id: str, spec: ModelSpec | None = None) -> dict[str, Any]:
    mean, std = prepared.normalizer()
    spec = spec or model_spec(cfg, prepared.manifest())  # a detector's spec is the flow's, not model.*'s
    return {"train": dataclasses.asdict(cfg.train), "spec": spec.to_dict(),
            "augment": dataclasses.asdict(augment_from(cfg.data)), "seed": cfg.seed,
            "mean": mean.tolist(), "std": std.tolist(), "threads": worker_threads(cfg.cluster),
            "train_rows": prepared.rows["train"], "tracking_uri": uri, "run_id": run_id,
            "use_gpu": cfg.cluster.use_gpu}


def text_spec(cfg: Config, prepared: TextPrepared) -> ModelSpec:
    """A character language model from ``charlm.*``, sized for the corpus's vocabulary."""
    m = cfg.charlm
    return ModelSpec(name=m.arch, in_channels=1, num_classes=len(prepared.vocab), image_size=0,
                     classes=prepared.vocab, normalization="none", width=m.hidden, depth=m.layers,
                     dropout=m.dropout, batchnorm=False, task="language_model", embed=m.embed,
                     context=m.context, tie_weights=m.tie_weights, heads=m.heads)


def text_loop_config(cfg: Config, prepared: TextPrepared, spec: ModelSpec, uri: str, run_id: str) -> dict[str, Any]:
    """The workers' config for a token stream: each reads its own slice of ``streams`` (the .npy files)."""
    return {"train": dataclasses.asdict(cfg.train), "spec": spec.to_dict(), "augment": {}, "seed": cfg.seed,
            "mean": None, "std": None, "threads": worker_threads(cfg.cluster), "train_rows": prepared.tokens["train"],
            "tracking_uri": uri, "run_id": run_id, "use_gpu": cfg.cluster.use_gpu,
            "streams": {split: prepared.path(split) for split in ("train", "val")},
            "task_options": {"sample_chars": cfg.charlm.sample_chars, "temperatures": cfg.charlm.temperatures}}


def hooks_for(cfg: Config, spec: ModelSpec, prepared: Prepared, workdir: Path) -> list[HookSpec]:
    """The one place where config keys become training hooks, in the order the loop runs them.

    The §6.2 diagnostics for ``model.name`` (linear classifiers: LinearDiagnostics, whose sample batch
    is written under ``workdir``; pipelines.stages.babysit), then ``train.ema_decay`` (EMAHook) and
    ``train.snapshots`` (SnapshotHook; components.ensembles). :func:`run` appends them to its
    caller's own ``hooks``.
    """
    from components.ensembles import (
        config_hooks,  # train.ema_decay, train.snapshots
    )

    return [*babysit.train_hooks(cfg, prepared, workdir),  # linear models: first loss, templates
            *config_hooks(cfg.train.ema_decay, cfg.train.snapshots, cfg.train.epochs, spec,
                          names.ENSEMBLE_SNAPSHOTS_TAKEN)]


def run(cfg: Config, prepared: Prepared, uri: str, run_id: str, run_name: str, workdir: Path,
        init_state: dict[str, torch.Tensor] | None = None, hooks: list[HookSpec] | None = None,
        spec: ModelSpec | None = None, callbacks: list[Any] | None = None,
        datasets: dict[str, Any] | None = None, task_options: dict[str, Any] | None = None,
        in_memory: dict[str, Any] | None = None) -> Trained:
    """Train on Ray Train; ``init_state`` (a net's state dict) warm-starts instead of a fresh init;
    ``hooks`` plug into the loop (components.hooks); ``spec`` replaces the architecture of ``model.*``
    (transfer: the source model's); ``callbacks`` are Ray Train callbacks (a sweep trial passes Tune's
    TuneReportCallback so each epoch reaches its scheduler); ``datasets`` ("train", "val": Ray Datasets)
    replace the ones read from the shards, ``in_memory`` (:func:`in_memory_splits`) the splits put in the
    object store (a sweep's trials share either, made once);
    ``task_options`` reach the task's builder on every worker (a segmenter's preview images, a generative
    model's sample-grid period)."""
    from ray.train import CheckpointConfig, FailureConfig

    text = isinstance(prepared, TextPrepared)
    if text:  # a token stream that each worker slices itself: no Ray Datasets, no image hooks
        given_spec = spec = spec or text_spec(cfg, prepared)
        base_config, datasets, hooks = text_loop_config(cfg, prepared, spec, uri, run_id), {}, list(hooks or [])
    else:
        manifest = prepared.manifest()
        cfg, prepared = babysit.adjust(cfg, prepared)  # train.overfit_rows, the §6.2 sanity check
        hooks = [*(hooks or []), *hooks_for(cfg, spec or model_spec(cfg, manifest), prepared, workdir)]
        if in_memory is None and not datasets and not cfg.train.overfit_rows:
            in_memory = in_memory_splits(cfg, manifest, prepared)
        if in_memory:  # the decoded splits whole, through the object store (data.feed)
            datasets = {}
        else:
            datasets = datasets or {"train": image_dataset(manifest, "train", prepared.rows["train"]),
                                    "val": image_dataset(manifest, "val", prepared.rows["val"])}
        if cfg.train.overfit_rows:
            datasets["train"] = babysit.overfit_dataset(manifest, cfg.train.overfit_rows)
        given_spec, spec = spec, spec or model_spec(cfg, manifest)
        base_config = {**loop_config(cfg, prepared, uri, run_id, spec), "in_memory": in_memory}
    c = cfg.cluster
    task = build_task(cfg.train, spec)
    val_primary = names.metric(names.VAL, task.primary)
    startup.mark("train_setup")
    trainer = torch_trainer(
        cfg, train_loop_per_worker,
        {**base_config, "init_state": init_state, "hooks": list(hooks or []), "startup": startup.timeline(),
         **({"task_options": task_options} if task_options else {}),
         **({"spec": given_spec.to_dict()} if given_spec else {})},
        datasets, name=run_name, storage_path=str(storage_path(cfg)),
        checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=val_primary,
                                           checkpoint_score_order="max" if task.higher_is_better else "min"),
        failure_config=FailureConfig(max_failures=c.max_failures), callbacks=list(callbacks or []))
    if text:
        params = sum(p.numel() for p in spec.build().parameters())
        tracking.log_metrics({names.MODEL_PARAMS: params})
        say(f"train: {spec.name} language model has {params:,} parameters, vocabulary {spec.num_classes}, "
            f"truncated BPTT over {cfg.train.bptt} characters")
    else:
        log_model_profile(cfg, prepared, spec)
    # a task that owns its step (a GAN's two optimisers) said its own; train.optimizer and train.lr are not used
    optimizer = "its own optimisers" if task.train_step is not None else f"{cfg.train.optimizer} lr {cfg.train.lr:.4g}"
    say(f"train: {spec.name} on {c.num_workers} worker(s) x {worker_threads(c)} thread(s)"
        f"{' + GPU' if c.use_gpu else ''}, {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, "
        f"{optimizer}, {_precision_line(cfg)}")
    started = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as e:  # Ray wraps the worker's error twice; the user needs the worker's own
        cause = root_cause(e)
        if cause is e:
            raise
        raise RuntimeError(f"training failed on a worker: {type(cause).__name__}: {cause}") from e
    tags = tracking.run_tags(run_id, uri)
    if tags.get(names.STOPPED_TAG):
        raise engine.LossExplosion(tags[names.STOPPED_TAG])
    _startup_to_parent(run_id, uri, tags)
    best, best_metrics = task.best(result.best_checkpoints, key=lambda cm: cm[1][val_primary])
    best_dir = workdir / "best"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    with best.as_directory() as d:
        shutil.copytree(Path(d) / MODEL_DIR, best_dir)
        state = read_state(Path(d))
        history = renumbered(state["history"], state.get("history_base", 0))
    latest, last_dir, extras_dir = result.checkpoint, None, None
    if latest is not None:  # the latest checkpoint has the full curve even when it is not the best
        with latest.as_directory() as d:
            state = read_state(Path(d))
            history = renumbered(state["history"], state.get("history_base", 0))
            last_dir = workdir / "last"
            shutil.rmtree(last_dir, ignore_errors=True)
            shutil.copytree(Path(d) / MODEL_DIR, last_dir)
            if (Path(d) / EXTRAS_DIR).is_dir():
                extras_dir = workdir / EXTRAS_DIR
                shutil.rmtree(extras_dir, ignore_errors=True)
                shutil.copytree(Path(d) / EXTRAS_DIR, extras_dir)
    epoch, chosen = model_epoch(cfg.train.model_epoch if last_dir is not None else "best", best_metrics, history,
                                val_primary)
    if epoch != int(best_metrics[names.EPOCH]):  # the last epoch's weights are the model
        shutil.rmtree(best_dir)
        shutil.copytree(last_dir, best_dir)
    tracking.log_metrics({names.BEST_EPOCH: epoch, names.best_val(task.primary): chosen,
                          names.FIT_SECONDS: time.perf_counter() - started})
    tracking.log_artifact(best_dir, names.BEST_MODEL_ARTIFACT)
    from components.plots import curves_figure

    # the train run's own curves (the driver imports matplotlib, the workers never do)
    which = "last epoch's" if cfg.train.model_epoch == "last" else "best"
    tracking.log_figure(curves_figure(history, f"{spec.name}: {which} val {task.primary} at epoch {epoch}"),
                        names.CURVES_PLOT)
    say(f"train: {which} val {task.primary} {chosen:.4f} at epoch {epoch} "
        f"({duration(time.perf_counter() - started)})")
    if not text:
        babysit.report(cfg, history, str(extras_dir) if extras_dir else None)
    return Trained(best_checkpoint=str(best_dir), best_epoch=epoch, history=history,
                   last_checkpoint=str(last_dir) if last_dir else None,
                   extras=str(extras_dir) if extras_dir else None)
