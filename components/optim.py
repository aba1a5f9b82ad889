"""Optimizers and learning-rate schedules by name, with explicit hyper-parameters.

    >>> import torch
    >>> from components.optim import build_optimizer, build_scheduler
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = build_optimizer("nesterov", model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    >>> sched = build_scheduler(opt, schedule="cosine", total_steps=1000, warmup_steps=50)
    >>> for _ in range(3):                      # per optimizer step:
    ...     opt.step(); sched.step()

Weight decay applies only to weights of matrices and conv kernels (ndim >= 2):
biases and BatchNorm scales/shifts (ndim <= 1) go in a second group without
decay, since shrinking them towards 0 only constrains the layer's offset/scale,
not its capacity, and hurts BN nets.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "param_groups",
    "build_optimizer",
    "lr_factor",
    "build_scheduler",
]

OPTIMIZERS: tuple[str, ...] = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES: tuple[str, ...] = ("constant", "step", "cosine")


def param_groups(params: Iterable[Tensor], weight_decay: float) -> list[dict]:
    """Split trainable tensors into a decayed (ndim >= 2) and an undecayed group.

    Empty groups are left out; frozen tensors (``requires_grad=False``) too.
    """
    decay: list[Tensor] = []
    no_decay: list[Tensor] = []
    for p in params:
        if isinstance(p, dict):
            raise TypeError("pass tensors (e.g. model.parameters()), not param-group dicts")
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise ValueError("no trainable parameters to optimize")
    return groups


def build_optimizer(
    name: str,
    params: Iterable[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> Optimizer:
    """The optimizer called ``name`` (one of :data:`OPTIMIZERS`).

    Every hyper-parameter is explicit: their defaults live once, in the config (``train.*``).

    ``momentum`` is used by ``momentum`` and ``nesterov`` only (``sgd`` is plain
    SGD); the adaptive methods keep torch's defaults (RMSprop alpha=0.99, Adam
    betas=(0.9, 0.999)). ``weight_decay`` is L2 added to the gradient, except
    for ``adamw`` where it is decoupled (Loshchilov & Hutter 2019).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if name == "nesterov" and momentum == 0:
        raise ValueError("nesterov needs momentum > 0")
    groups = param_groups(params, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.0)
    if name == "momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "nesterov":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def lr_factor(
    step: int,
    *,
    schedule: str,
    total_steps: int,
    warmup_steps: int,
    step_every: int = 0,
    gamma: float = 0.1,
    min_lr_ratio: float = 0.0,
    cycles: int = 0,
) -> float:
    """Multiplier of the base lr for 0-based optimizer step ``step``.

    Warm-up: ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps,
    so the first step uses a small lr and step ``warmup_steps - 1`` the full one.
    After it: ``constant`` 1; ``step`` ``gamma ** (step // step_every)`` (counted
    from step 0, so milestones are absolute step numbers); ``cosine`` decays
    from 1 to ``min_lr_ratio`` over the steps after warm-up and stays there.
    ``min_lr_ratio`` also floors the ``step`` schedule.

    ``cycles`` > 1 (snapshot ensembles, Huang et al. 2017; ``cosine`` only): the cosine restarts
    ``cycles`` times, each cycle ``total_steps // cycles`` steps long, from the peak down to
    ``min_lr_ratio``; warm-up, if any, is part of the first cycle.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return max(min_lr_ratio, gamma ** (step // step_every))
    if cycles > 1:
        length = max(1, total_steps // cycles)
        cycle, start = min(step // length, cycles - 1), warmup_steps if step < length else 0
        begin = cycle * length + start
        end = total_steps if cycle == cycles - 1 else (cycle + 1) * length
        progress = min(1.0, (step - begin) / max(1, end - begin))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: Optimizer,
    *,
    schedule: str,
    total_steps: int,
    warmup_steps: int,
    step_every: int = 0,
    gamma: float = 0.1,
    min_lr_ratio: float = 0.0,
    cycles: int = 0,
) -> LambdaLR:
    """A ``LambdaLR`` following :func:`lr_factor`; call ``.step()`` once per optimizer step."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if schedule == "step" and step_every <= 0:
        raise ValueError("the 'step' schedule needs step_every > 0")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if cycles > 1 and schedule != "cosine":
        raise ValueError(f"cycles={cycles} (snapshot ensembles) needs the 'cosine' schedule, got {schedule!r}")
    if cycles > 1 and warmup_steps >= total_steps // cycles:
        raise ValueError(f"warm-up ({warmup_steps} steps) must end inside the first of {cycles} cycles")

    # A partial of a module-level function (not a lambda) keeps the scheduler picklable.
    factor = functools.partial(
        lr_factor,
        schedule=schedule,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        step_every=step_every,
        gamma=gamma,
        min_lr_ratio=min_lr_ratio,
        cycles=cycles,
    )
    return LambdaLR(optimizer, factor)
