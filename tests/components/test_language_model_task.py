"""The language-model task: truncated-BPTT batches, the carried state, its meter, package and served form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components import engine
from components.packaging import ModelSpec, load_package, save_package
from components.tasks import LanguageModel, build_task

VOCAB = ("\ufffd", *"abcdefgh")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _spec(arch: str = "lstm") -> ModelSpec:
    return ModelSpec(name=arch, in_channels=1, num_classes=len(VOCAB), image_size=0, classes=VOCAB,
                     normalization="none", width=16, depth=1, dropout=0.0, task="language_model", embed=8,
                     context=16)


def test_each_rank_reads_its_own_contiguous_slice_in_bptt_order():
    task = LanguageModel.build(num_classes=len(VOCAB), classes=VOCAB, seq_len=5)
    ids = np.arange(1000)  # each id is its position: contiguity is visible
    world, streams = 2, 3
    steps = task.stream_steps(len(ids), world, streams)
    for rank in range(world):
        batches = list(task.stream_batches(ids, rank, world, streams, epoch=0, seed=0))
        assert len(batches) == steps  # every rank steps the same number of times (DDP)
        x = torch.cat([b[0] for b in batches], dim=1)  # (streams, steps * seq_len)
        y = torch.cat([b[1] for b in batches], dim=1)
        assert torch.equal(y, x + 1)  # targets are the next characters
        flat = x.reshape(-1).numpy()
        assert (np.diff(flat) == 1).all()  # chunk k+1 of a stream continues chunk k, streams side by side
        lo, hi = len(ids) * rank // world, len(ids) * (rank + 1) // world
        assert lo <= flat[0] and flat[-1] + 1 < hi  # inside this rank's own slice
    other = next(task.stream_batches(ids, 0, world, streams, epoch=1, seed=0))[0]
    assert not torch.equal(other, next(task.stream_batches(ids, 0, world, streams, epoch=0, seed=0))[0])


def test_too_short_a_stream_says_so():
    task = LanguageModel.build(num_classes=4, seq_len=64)
    with pytest.raises(ValueError, match="cannot fill one step"):
        next(task.stream_batches(np.zeros(100, dtype=np.int64), 0, 1, 8))


def test_the_state_is_carried_between_steps_and_reset_each_pass():
    model = _spec().build()
    task = build_task("language_model", num_classes=len(VOCAB), classes=VOCAB, seq_len=4)
    ids = np.random.default_rng(0).integers(1, len(VOCAB), 400)
    batches = task.stream_batches(ids, 0, 1, 2)
    x, _ = next(batches)
    assert task.state is None
    task.infer(model, x)
    carried = task.state
    assert carried is not None and not carried[0].requires_grad  # detached: BPTT stops at the chunk edge
    next(batches)
    task.infer(model, x)
    assert not torch.equal(task.state[0], carried[0])
    next(task.stream_batches(ids, 0, 1, 2))  # a new pass starts from zeros
    assert task.state is None


def test_meter_bits_per_character_and_one_epoch_through_the_engine():
    model = _spec("gru").build()
    task = LanguageModel.build(num_classes=len(VOCAB), classes=VOCAB, seq_len=8, clip=1.0)
    meter = task.meter()
    meter.add(torch.zeros(2, 8, len(VOCAB)), torch.ones(2, 8, dtype=torch.long), math.log(len(VOCAB)))
    assert meter.compute()["bpc"] == pytest.approx(math.log2(len(VOCAB)))
    assert meter.with_totals(meter.totals()).compute() == meter.compute()
    text = np.tile(np.array([1, 2, 3, 4, 5, 6, 7, 8]), 200)  # a period the GRU learns quickly
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for epoch in range(3):
        train = engine.train_one_epoch(model, task, opt, task.stream_batches(text, 0, 1, 4, epoch=epoch))
    val, _, _ = engine.evaluate(model, task, task.stream_batches(text, 0, 1, 4))
    assert train.compute()["bpc"] < math.log2(len(VOCAB))
    assert val.compute()["bpc"] < 0.5  # the next character of a fixed cycle is certain


@pytest.mark.parametrize("arch", ["rnn", "transformer"])
def test_a_package_round_trips_and_serves_text(tmp_path, arch):
    model = _spec(arch).build()
    save_package(tmp_path / "pkg", model, _spec(arch))
    loaded, spec = load_package(tmp_path / "pkg")
    assert spec.task == "language_model" and spec.classes == VOCAB
    task = build_task(spec.task, num_classes=spec.num_classes, classes=spec.classes)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(loaded(ids)[0], model.eval()(ids)[0])
    out = task.predict(loaded, ["abc", "zz"], {"max_new_chars": 7, "seed": 1})
    assert [len(t) for t in out["text"]] == [7, 7] and set("".join(out["text"])) <= set(VOCAB)
    assert out == task.predict(loaded, ["abc", "zz"], {"max_new_chars": 7, "seed": 1})  # seeded
    scored = task.predict(loaded, ["abcdefgh"], {"mode": "bpc"})["bpc"][0]
    assert 0 < scored < 2 * math.log2(len(VOCAB))
    assert task.encode("az")[1] == 0  # a character never seen maps to the reserved id
    with pytest.raises(ValueError, match="mode"):
        task.predict(loaded, ["a"], {"mode": "translate"})
    samples = task.epoch_artifacts(loaded, 0)
    assert list(samples) == ["samples/epoch_001.txt"] and "temperature 0.5" in samples["samples/epoch_001.txt"]
