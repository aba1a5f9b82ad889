"""The one training loop, shaped like torchvision's ``references/classification`` engine.

Plain PyTorch: it runs the same inside a Ray Train worker, in the ``bench`` baseline process and in a
debugger. Batches are ``(images, labels)`` with images float NCHW in [0, 1] (see :class:`BatchPrep`)::

    prep = BatchPrep(augment=Augment(flip=True), seed=0, epoch=0)
    stats = train_one_epoch(model, criterion, optimizer, map(prep, numpy_batches), scheduler=sched)
    val = evaluate(model, criterion, map(BatchPrep(), val_batches))
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from components.augment import Augment, generator_for
from components.metrics import RunningStats

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class BatchPrep:
    """uint8 NHWC images (+ labels, row ids) → float NCHW in [0, 1], augmented when training.

    The augmentation seed derives from (seed, epoch, first row id of the batch), so a batch is
    augmented the same way whichever thread or worker prepares it.
    """

    augment: Augment | None = None
    seed: int = 0
    epoch: int = 0
    channels_last: bool = False
    pin_memory: bool = False  # GPU training: page-locked batches let .to(device, non_blocking) overlap

    def __call__(self, batch: Mapping[str, Any]) -> Batch:
        images = torch.from_numpy(_writable(batch["image"]))
        if images.ndim == 3:  # N×H×W grey
            images = images.unsqueeze(-1)
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        if self.augment is not None and self.augment.enabled:
            first = int(batch["idx"][0]) if "idx" in batch and len(batch["idx"]) else 0
            x = self.augment(x, generator_for(self.seed, self.epoch, 0, first))
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
        y = torch.from_numpy(_writable(batch["label"])).long()
        return (x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y)


def _writable(a: Any) -> np.ndarray:
    """Arrow-backed batches are read-only views; torch wants memory it may write (a cheap copy)."""
    a = np.asarray(a)
    return a if a.flags.writeable and a.flags.c_contiguous else np.array(a, order="C")


def autocast(precision: str, device: torch.device) -> ContextManager:
    """bf16 autocast on CPU or GPU; fp16 autocast on GPU (with a GradScaler in the loop)."""
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
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    *,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    precision: str = "fp32",
    device: torch.device = torch.device("cpu"),
    max_steps: int = 0,
    on_step: Callable[[int, RunningStats], None] | None = None,
    guard: ExplosionGuard | None = None,
) -> RunningStats:
    """One pass over ``batches``; returns summed loss, correct and count (for all-reduce)."""
    model.train()
    stats = RunningStats()
    for step, (x, y) in enumerate(batches):
        if max_steps and step >= max_steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(precision, device):
            logits = model(x)
            loss = criterion(logits, y)
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
        n = y.shape[0]
        loss_value = float(loss.detach())
        if guard is not None:
            guard.check(loss_value, step)
        stats.update(loss_value * n, int((logits.detach().argmax(1) == y).sum()), n)
        if on_step is not None:
            on_step(step, stats)
    return stats


def _finite_grads(model: nn.Module) -> bool:
    norms = [torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None]
    return bool(torch.isfinite(torch.stack(norms).sum())) if norms else True


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    batches: Iterable[Batch],
    *,
    precision: str = "fp32",
    device: torch.device = torch.device("cpu"),
    max_steps: int = 0,
    collect: bool = False,
) -> tuple[RunningStats, np.ndarray | None, np.ndarray | None]:
    """Loss/accuracy over ``batches``; with ``collect``, also the predictions and true labels."""
    model.eval()
    stats = RunningStats()
    preds, labels = [], []
    for step, (x, y) in enumerate(batches):
        if max_steps and step >= max_steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(precision, device):
            logits = model(x)
            loss = criterion(logits.float(), y)
        pred = logits.argmax(1)
        stats.update(float(loss) * y.shape[0], int((pred == y).sum()), int(y.shape[0]))
        if collect:
            preds.append(pred.cpu().numpy())
            labels.append(y.cpu().numpy())
    if not collect:
        return stats, None, None
    empty = np.zeros(0, dtype=np.int64)
    return stats, (np.concatenate(preds) if preds else empty), (np.concatenate(labels) if labels else empty)


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
