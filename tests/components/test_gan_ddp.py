"""A GAN's step under torch.distributed: two gloo ranks on different batches stay identical replicas."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, out: str) -> None:
    from components.gan import GanRecipe, PairOptimizer, gan_step
    from components.models.dcgan import GAN

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different initial weights on each rank ...
    gan = GAN(1, 8, latent=8, width=8, num_classes=10)
    for p in gan.parameters():  # ... made equal as DDP's constructor does: rank 0's broadcast
        dist.broadcast(p.data, 0)
    opt = PairOptimizer.build(gan, "adam", lr=1e-3)
    for step in range(3):  # each rank its own batch and its own noise
        real, labels = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
        gan_step(gan, real, labels, opt, GanRecipe(d_steps=2))
    torch.save([p.detach() for p in gan.parameters()], f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # two processes that import torch: ~10 s
def test_replicas_stay_equal_across_ranks(tmp_path):
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    from components.models.dcgan import GAN

    torch.manual_seed(0)
    untrained = list(GAN(1, 8, latent=8, width=8, num_classes=10).parameters())
    assert any(not torch.equal(x, u) for x, u in zip(a, untrained))  # and they did train
