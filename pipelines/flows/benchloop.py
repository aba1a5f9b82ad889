"""The loop every bench contender times, the rows feed, and the native-PyTorch DDP contender.

    python -m torch.distributed.run --standalone --nproc-per-node=2 -m pipelines.flows.benchloop CONFIG.json

:func:`timed_loop` is the engine's training loop with a clock started after the warm-up steps; it also
keeps the running loss after every step (the loss trajectory). :func:`row_batches` is the feed of the
Ray-Train-against-DDP comparison: the bench's decoded train rows, saved once as one ``.npz``, each rank
reading its own contiguous block in order through the task's batch prep, so both sides see the same data
in the same order. Run as a module under ``torch.distributed.run`` (what a user writing DDP by hand
launches), each process does what a Ray Train worker does, without Ray: ``init_process_group("gloo")``
from torchrun's environment, its threads and seed, the same net wrapped in ``DistributedDataParallel``,
its block of the rows, the timed loop; rank 0 writes its rate and loss trajectory to ``result``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from components import engine
from components.augment import Augment
from components.models import Normalize
from components.packaging import ModelSpec
from pipelines.config import TrainConfig
from pipelines.stages.train import build_task, build_training


def timed_loop(model, tc: TrainConfig, spec: ModelSpec, batches, steps: int, warmup: int, per_step_images: int,
               device=torch.device("cpu"), losses: list[float] | None = None) -> float:
    """Images/s over ``steps`` optimiser steps after ``warmup`` untimed ones; ``losses``, when given,
    receives the running mean loss after each step."""
    optimizer, scheduler, task = build_training(tc, model, warmup + steps, spec)
    clock: dict[str, float] = {}

    def on_step(step: int, meter: Any) -> None:
        if step == warmup - 1:
            clock["start"] = time.perf_counter()
        if step == warmup + steps - 1:
            clock["end"] = time.perf_counter()
        if losses is not None:
            losses.append(float(meter.compute()["loss"]))

    engine.train_one_epoch(model, task, optimizer, batches, scheduler=scheduler, device=device,
                           precision=tc.precision, max_steps=warmup + steps, on_step=on_step)
    if "end" not in clock:
        raise RuntimeError(f"the bench ran out of data before {warmup + steps} steps; lower bench.steps.")
    return steps * per_step_images / (clock["end"] - clock["start"])


def row_batches(path: str | Path, rank: int, world: int, batch_size: int, prep) -> Iterator[Any]:
    """Rank ``rank``'s contiguous block of the saved rows, in order, in batches of ``batch_size`` through
    ``prep`` (the task's batch prep); the last partial batch is dropped, as every rank steps together."""
    with np.load(path) as saved:
        rows = {key: saved[key] for key in saved.files}
    n = len(next(iter(rows.values())))
    lo, hi = rank * n // world, (rank + 1) * n // world
    for start in range(lo, hi - batch_size + 1, batch_size):
        yield prep({key: value[start:start + batch_size] for key, value in rows.items()})


def build_net(spec: ModelSpec, tc: TrainConfig) -> torch.nn.Module:
    """The bench's net: behind an identity Normalize (images) and in the layout ``train.channels_last`` asks."""
    image = spec.task in ("classification", "segmentation")
    model = spec.build(Normalize.identity(spec.in_channels) if image else None)
    return model.to(memory_format=torch.channels_last) if tc.channels_last else model


def rows_loop(model, config: dict[str, Any], rank: int, world: int) -> tuple[float, list[float]]:
    """One rank of the rows-fed comparison (Ray Train worker or DDP process alike): (rate, loss trajectory)."""
    tc, spec = TrainConfig(**config["train"]), ModelSpec.from_dict(config["spec"])
    per_worker = config["batch_size"] // world
    task = build_task(tc, spec)
    prep = task.batch_prep(augment=Augment(**config["augment"]), seed=config["seed"], channels_last=tc.channels_last)
    losses: list[float] = []
    rate = timed_loop(model, tc, spec, row_batches(config["rows"], rank, world, per_worker, prep), config["steps"],
                      config["warmup"], task.examples_per_step(per_worker) * world, losses=losses)
    return rate, losses


def main(argv: list[str]) -> int:
    """One DDP process under ``torch.distributed.run``: the config file is its only argument."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    config = json.loads(Path(argv[0]).read_text())
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    dist.init_process_group("gloo")  # MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE: torchrun's environment
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        model = DistributedDataParallel(build_net(ModelSpec.from_dict(config["spec"]), TrainConfig(**config["train"])))
        rate, losses = rows_loop(model, config, rank, world)
        if rank == 0:
            Path(config["result"]).write_text(json.dumps({"images_per_s": rate, "losses": losses}))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
