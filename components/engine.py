"""The one training loop, shaped like torchvision's ``references/classification`` engine.

Plain PyTorch: it runs the same inside a Ray Train worker, in the ``bench`` baseline process and in a
debugger. The task (:mod:`components.tasks`) says how a batch becomes inputs and targets, the loss and
the running metrics; the loop is the same for every task::

    task = build_task("classification", num_classes=10)
    prep = task.batch_prep(augment=Augment(flip=True), seed=0, epoch=0)
    meter = train_one_epoch(model, task, optimizer, map(prep, numpy_batches), scheduler=sched)
    val, _, _ = evaluate(model, task, map(task.batch_prep(), val_batches))
    val.compute()   # {"loss": ..., "accuracy": ...}

A bare criterion (``nn.CrossEntropyLoss()``) in place of the task means classification with that loss.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from components.batches import Batch, BatchPrep  # noqa: F401 - engine.BatchPrep, the classic spelling
from components.tasks import Classification, Meter, Task


def as_task(task_or_criterion: Task | nn.Module) -> Task:
    """The task itself, or classification with a bare criterion as its loss."""
    if isinstance(task_or_criterion, Task):
        return task_or_criterion
    return Classification(task_or_criterion)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: a GPU that supports it, or a CPU with AMX or AVX512-BF16
    (oneDNN's bf16 convolutions there: 1.8x fp32's training speed for the quickstart's convnet). Elsewhere
    bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(probe() for probe in probes if probe is not None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 where the device computes it natively (:func:`native_bf16`), else fp32; the others as given."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def autocast(precision: str, device: torch.device) -> ContextManager:
    """bf16 autocast on CPU or GPU; fp16 autocast on GPU (with a GradScaler in the loop); ``auto`` as
    :func:`resolve_precision` says."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs a GPU (cluster.use_gpu=true); use bf16 on CPU.")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class LossExplosion(RuntimeError):
    """The training loss rose above ``explode_factor`` × its first value (§6.2 babysitting)."""


@dataclass
class ExplosionGuard:
    """§6.2's rule: stop when the loss exceeds ``factor`` × its first value (``factor`` 0: off).

    ``reduce`` maps a local loss to the value every rank agrees on (the mean over DDP ranks), so all
    ranks stop at the same step. ``initial`` is kept in checkpoints so a resumed run keeps its start.
    ``floor`` (ln C for C classes: a fresh net's loss) keeps a warm start's tiny first loss from
    making ordinary noise look like an explosion. The rule reads an exponential moving average of the
    loss (``smoothing``; 0 reads each step raw): one noisy batch early in a high-learning-rate run is a
    spike the run recovers from, a loss that keeps climbing is an explosion.
    """

    factor: float = 3.0
    reduce: Callable[[float], float] | None = None
    initial: float | None = None
    floor: float = 0.0
    smoothing: float = 0.9
    smoothed: float | None = None

    def check(self, loss: float, step: int) -> None:
        if not self.factor:
            return
        value = self.reduce(loss) if self.reduce else loss
        if self.initial is None:
            self.initial = max(value, self.floor)
        self.smoothed = value if self.smoothed is None else (
            self.smoothing * self.smoothed + (1 - self.smoothing) * value)
        if self.smoothed > self.factor * self.initial:
            raise LossExplosion(f"training loss (moving average {self.smoothed:.4g}) at step {step} exceeds "
                                f"{self.factor:g}x its initial {self.initial:.4g}; lower train.lr (or raise "
                                f"train.explode_factor).")


def train_one_epoch(
    model: nn.Module,
    task: Task | nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    *,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    precision: str = "fp32",
    device: torch.device = torch.device("cpu"),
    max_steps: int = 0,
    on_step: Callable[[int, Meter], None] | None = None,
    guard: ExplosionGuard | None = None,
) -> Meter:
    """One pass over ``batches``; returns the task's meter (sums, ready for an all-reduce)."""
    task = as_task(task)
    model.train()
    meter = task.meter()
    for step, (x, y) in enumerate(batches):
        if max_steps and step >= max_steps:
            break
        x, y = _to(x, device), _to(y, device)
        if task.train_step is not None:  # a task that owns its step (several optimisers)
            outputs, loss = task.train_step(model, x, y, optimizer, precision=precision, device=device)
            if not math.isfinite(float(loss.detach())):  # the step says so on every rank at once
                raise LossExplosion(f"training diverged (non-finite loss) at step {step}; lower the learning rate.")
        else:
            with autocast(precision, device):
                outputs, loss = task.forward(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                # A non-finite local loss poisons the all-reduced gradients, which are identical on
                # every DDP rank: so every rank stops at the same step (one rank stopping alone would
                # leave the others waiting in all-reduce).
                if not (math.isfinite(float(loss.detach())) and _finite_grads(model)):
                    raise LossExplosion(f"training diverged (non-finite loss or gradients) at step {step}; "
                                        f"lower train.lr.")
                optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_value = float(loss.detach())
        if guard is not None:
            guard.check(loss_value, step)
        meter.add(_map_tensors(outputs, Tensor.detach), y, loss_value)
        if on_step is not None:
            on_step(step, meter)
    return meter


def prefetched(batches: Iterable[Any], depth: int = 2) -> Iterable[Any]:
    """``batches`` made in a background thread, up to ``depth`` ahead of the consumer: torch's ops release
    the GIL, so the next batch's augmentation overlaps this step's forward and backward. An error in the
    thread is raised in the consumer; a consumer that stops early (``max_steps``) stops the thread."""
    import queue
    import threading

    done = object()
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not put((None, item)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((e, None))
            return
        put((None, done))

    thread = threading.Thread(target=produce, name="visionray-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            error, item = q.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _map_tensors(t: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``fn`` on a tensor, or on every tensor of a tuple/list/dict (a task's inputs, targets or outputs)."""
    if isinstance(t, Tensor):
        return fn(t)
    if isinstance(t, dict):
        return {k: _map_tensors(v, fn) for k, v in t.items()}
    if isinstance(t, (tuple, list)):
        return type(t)(_map_tensors(v, fn) for v in t)
    return t


def _to(t: Any, device: torch.device) -> Any:
    return _map_tensors(t, lambda x: x.to(device, non_blocking=True))


def _finite_grads(model: nn.Module) -> bool:
    norms = [torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None]
    return bool(torch.isfinite(torch.stack(norms).sum())) if norms else True


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task | nn.Module,
    batches: Iterable[Batch],
    *,
    precision: str = "fp32",
    device: torch.device = torch.device("cpu"),
    max_steps: int = 0,
    collect: bool = False,
) -> tuple[Meter, np.ndarray | None, np.ndarray | None]:
    """The task's metrics over ``batches``; with ``collect``, also its predictions and the targets."""
    task = as_task(task)
    model.eval()
    meter = task.meter()
    preds, targets = [], []
    for step, (x, y) in enumerate(batches):
        if max_steps and step >= max_steps:
            break
        x, y = _to(x, device), _to(y, device)
        with autocast(precision, device):
            outputs = task.infer(model, x)
            loss = task.eval_loss(outputs, y)
        meter.add(outputs, y, float(loss))
        if collect:
            preds.append(task.predictions(outputs).cpu().numpy())
            targets.append(y.cpu().numpy())
    if not collect:
        return meter, None, None
    empty = np.zeros(0, dtype=np.int64)
    return meter, (np.concatenate(preds) if preds else empty), (np.concatenate(targets) if targets else empty)


class Throughput:
    """Images per second over the timed part of an epoch (excludes the first ``skip`` steps)."""

    def __init__(self, skip: int = 2):
        self.skip, self.start, self.images = skip, None, 0

    def step(self, step: int, batch_size: int) -> None:
        if step == self.skip:
            self.start = time.perf_counter()
        elif step > self.skip:
            self.images += batch_size

    @property
    def images_per_s(self) -> float:
        if self.start is None or self.images == 0:
            return float("nan")
        return self.images / (time.perf_counter() - self.start)
