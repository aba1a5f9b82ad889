"""The train stage's helpers: which rows each Ray Train worker reads from the in-memory splits, when they are
used, and which epoch becomes the run's model."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.stages.train import feeds_in_memory, train_share, val_block


def test_every_rank_gets_as_many_distinct_rows_and_a_new_order_each_epoch():
    n, world = 1001, 2
    shares = [train_share(n, 7, 0, rank, world) for rank in range(world)]
    assert [len(s) for s in shares] == [500, 500]  # equal: the DDP ranks step together
    both = np.concatenate(shares)
    assert len(set(both.tolist())) == 1000 and both.max() < n  # disjoint, within the split
    assert np.array_equal(shares[0], train_share(n, 7, 0, 0, world))  # the seed fixes it (a restart repeats it)
    assert not np.array_equal(shares[0], train_share(n, 7, 1, 0, world))  # the next epoch reshuffles
    assert not np.array_equal(shares[0], train_share(n, 8, 0, 0, world))


@pytest.mark.parametrize("n,world", [(10, 1), (269, 2), (5, 4), (3, 4)])
def test_val_blocks_cover_every_row_once(n, world):
    blocks = [val_block(n, rank, world) for rank in range(world)]
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))


def test_auto_feeds_from_memory_up_to_the_budget_and_the_user_can_force_either():
    shape = (28, 28, 1)
    assert feeds_in_memory("auto", 1000, shape, 1000 * 784)
    assert not feeds_in_memory("auto", 1001, shape, 1000 * 784)
    assert feeds_in_memory("memory", 10**9, shape, 0)
    assert not feeds_in_memory("ray_data", 1, shape, 10**12)


def test_the_model_is_the_best_val_epoch_or_with_model_epoch_last_the_last_one():
    from pipelines.services import names
    from pipelines.stages.train import model_epoch

    history = {"val/accuracy": [(1, 0.90), (2, 0.93), (3, 0.929)]}  # val noise: epoch 2 edges out the last
    best = {names.EPOCH: 2, "val/accuracy": 0.93}
    assert model_epoch("best", best, history, "val/accuracy") == (2, 0.93)
    assert model_epoch("last", best, history, "val/accuracy") == (3, 0.929)


def test_the_logged_flops_are_a_training_steps_not_the_ten_test_time_views():
    from components.models import Normalize, count_macs
    from components.package_base import ModelSpec
    from pipelines.stages.train import training_macs

    spec = ModelSpec(name="convnet", in_channels=1, num_classes=10, image_size=28, classes=tuple("abcdefghij"),
                     width=8, tta="flip_shift")
    model = spec.build(Normalize.identity(1))
    plain = ModelSpec(**{**spec.to_dict(), "tta": None, "classes": spec.classes}).build(Normalize.identity(1))
    assert training_macs(model, spec) == count_macs(plain, (1, 28, 28))
    assert count_macs(model.eval(), (1, 28, 28)) == 10 * training_macs(model, spec)  # served: ten views
    assert model.tta == "flip_shift"  # left as it was
