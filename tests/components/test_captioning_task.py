"""The captioning task: each rank's slice of the arrays, BLEU-4 and mention F1 summed like the references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.data.sources.fashion_grid import caption_for
from components.models.captioner import WordVocab
from components.tasks import Captioning
from components.text_metrics import corpus_bleu, tokenize


def _arrays(n: int = 40):
    rng = np.random.default_rng(0)
    items = np.where(rng.random((n, 4)) < 0.5, rng.integers(0, 10, (n, 4)), -1)
    items[:, 0] = np.maximum(items[:, 0], 0)  # at least one item
    captions = [caption_for(row) for row in items]
    vocab = WordVocab.build(captions)
    return {"images": rng.integers(0, 255, (n, 56, 56, 1), dtype=np.uint8), "ids": vocab.encode_batch(captions, 32).numpy(),
            "items": items}, vocab, captions


def test_each_rank_reads_its_own_rows_every_epoch_reshuffled():
    data, vocab, _ = _arrays()
    task = Captioning.build(num_classes=len(vocab), classes=vocab.itos)
    data["images"][:] = np.arange(40, dtype=np.uint8)[:, None, None, None]  # each image shows its row
    for rank in range(2):
        batches = [images for (images, _), _ in task.stream_batches(data, rank, 2, 4, epoch=0)]
        assert len(batches) == task.stream_steps(40, 2, 4) == 5
        rows = sorted(round(float(img[0, 0, 0]) * 255) for batch in batches for img in batch)
        assert rows == list(range(20 * rank, 20 * rank + 20))  # this rank's own half, every row once
    first = next(task.stream_batches(data, 0, 2, 4, epoch=0))[0][1]
    again = next(task.stream_batches(data, 0, 2, 4, epoch=1))[0][1]
    assert not torch.equal(first, again)


def test_meter_bleu_and_mention_f1_match_the_reference_functions():
    data, vocab, captions = _arrays()
    task = Captioning.build(num_classes=len(vocab), classes=vocab.itos)
    ids = torch.from_numpy(data["ids"])
    hyp = ids[:, 1:].clone()  # the reference itself, without <start>
    hyp[::3, 0] = 4  # every third caption's first word replaced
    meter = task.meter()
    half = len(ids) // 2
    meter.add((None, hyp[:half]), (ids[:half], torch.from_numpy(data["items"][:half])), 1.0)
    other = task.meter()
    other.add((None, hyp[half:]), (ids[half:], torch.from_numpy(data["items"][half:])), 1.0)
    merged = task.meter().with_totals(np.add(meter.totals(), other.totals()))  # two ranks' sums
    words = [meter.words(row) for row in hyp.tolist()]
    expected = corpus_bleu(words, [[tokenize(c)] for c in captions])
    assert merged.compute()["bleu4"] == pytest.approx(expected)
    assert 0 < merged.compute()["mention_f1"] < 1
    perfect = task.meter()
    perfect.add((None, ids[:, 1:]), (ids, torch.from_numpy(data["items"])), 1.0)
    assert perfect.compute()["bleu4"] == pytest.approx(1.0) and perfect.compute()["mention_f1"] == 1.0
