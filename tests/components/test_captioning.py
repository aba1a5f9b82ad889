"""Image captioning (§10): Fashion-MNIST grids and their captions, a COCO-format reader, BLEU and mention F1,
the CNN -> LSTM captioner with and without attention (shapes, beam search, a tiny overfit).

    .venv/bin/python -m pytest -q tests/components/test_captioning.py      # ~30-40 s on 2 busy cores
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from components.data.errors import DataError
from components.data.sources import (
    CaptionedImages,
    coco_captions,
    fashion_grid,
    fashion_mnist,
)
from components.data.sources.fashion_grid import (
    CELLS,
    CLASS_NAMES,
    caption_for,
    item_mentions,
)
from components.models.captioner import (
    END,
    PAD,
    START,
    UNK,
    Captioner,
    WordVocab,
    caption_loss,
)
from components.text_metrics import corpus_bleu, mention_f1, parse_mentions, tokenize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def raw():
    return fashion_mnist()


# ---------------------------------------------------------------- fashion_grid


def test_caption_grammar():
    assert CLASS_NAMES[0] == "t-shirt" and CLASS_NAMES[9] == "ankle boot" and len(CLASS_NAMES) == 10
    assert caption_for([7, -1, -1, 8]) == "a sneaker in the top left and a bag in the bottom right"
    assert caption_for([8, 4, 6, -1]) == "a bag in the top left, a coat in the top right and a shirt in the bottom left"
    assert caption_for([-1, 9, -1, -1]) == "an ankle boot in the top right"
    assert caption_for([0, 1, 2, 3]) == ("a t-shirt in the top left, a trouser in the top right, "
                                         "a pullover in the bottom left and a dress in the bottom right")


def test_grid_captions_match_items(raw):
    data = fashion_grid("train", 200, seed=3, source=raw)
    assert isinstance(data, CaptionedImages) and len(data) == 200
    assert data.images.shape == (200, 56, 56, 1) and data.images.dtype == np.uint8
    assert data.items.shape == (200, 4) and data.items.dtype == np.int64
    for caption, row in zip(data.captions, data.items):
        assert parse_mentions(caption) == item_mentions(row)
        assert caption == caption_for(row)
    filled = (data.items >= 0).sum(1)
    assert filled.min() == 1 and filled.max() == 4 and len(set(filled)) == 4
    assert (data.items >= 0).any(0).all()  # every cell gets used


def test_grid_pixels_come_from_the_right_split(raw):
    test, train = raw.splits["test"], raw.splits["train"]
    data = fashion_grid("test", 20, seed=0, source=raw)
    checked = 0
    for i in range(5):
        for cell in range(4):
            r, c = divmod(cell, 2)
            pixels = data.images[i, 28 * r:28 * r + 28, 28 * c:28 * c + 28]
            if data.items[i, cell] < 0:
                assert not pixels.any()
                continue
            # Pixel equality against the test images, without trusting source_index...
            hits = np.flatnonzero((test.images == pixels).all(axis=(1, 2, 3)))
            assert len(hits) and data.items[i, cell] in test.labels[hits]
            # ...and source_index says which one it was.
            assert np.array_equal(test.images[data.source_index[i, cell]], pixels)
            checked += 1
    assert checked >= 5
    # train and val draw from disjoint halves of the 60k train images.
    half = len(train) // 2
    tr = fashion_grid("train", 300, seed=0, source=raw).source_index
    va = fashion_grid("val", 300, seed=0, source=raw).source_index
    assert tr[tr >= 0].max() < half <= va[va >= 0].min()


def test_grid_is_seeded(raw):
    a, b = fashion_grid("val", 50, seed=7, source=raw), fashion_grid("val", 50, seed=7, source=raw)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions and np.array_equal(a.items, b.items)
    c = fashion_grid("val", 50, seed=8, source=raw)
    assert not np.array_equal(a.items, c.items)
    with pytest.raises(DataError, match="split"):
        fashion_grid("dev", 5, source=raw)


# ---------------------------------------------------------------- coco_captions


def _png(path, value):
    Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(path)


def test_coco_captions_quarantines_missing_and_corrupt(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _png(images / "good.png", 200)
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    _png(images / "also_good.png", 10)
    _png(tmp_path / "elsewhere.png", 99)
    (images / "linked.png").symlink_to(tmp_path / "elsewhere.png")  # a folder of symlinks is fine
    doc = {"images": [{"id": 1, "file_name": "good.png", "width": 30}, {"id": 2, "file_name": "missing.png"},
                      {"id": 3, "file_name": "corrupt.png"}, {"id": 4, "file_name": "also_good.png"},
                      {"id": 5, "file_name": "../outside.png"}, {"id": 6, "file_name": "linked.png"}],
           "annotations": [{"image_id": 1, "caption": "A white square. "}, {"image_id": 2, "caption": "gone"},
                           {"image_id": 1, "caption": "a  blank\nimage"}, {"image_id": 3, "caption": "broken"},
                           {"image_id": 4, "caption": "dark"}, {"image_id": 5, "caption": "escape"},
                           {"image_id": 6, "caption": "linked"}]}
    ann = tmp_path / "captions.json"
    ann.write_text(json.dumps(doc))
    data, quarantine = coco_captions(ann, images, image_size=16, channels=3)
    assert data.images.shape == (3, 16, 16, 3) and data.images.dtype == np.uint8
    assert data.captions == (("A white square.", "a blank image"), ("dark",), ("linked",))  # all, spaces collapsed
    assert data.image_ids.tolist() == [1, 4, 6] and data.file_names == ("good.png", "also_good.png", "linked.png")
    assert (data.images[0] == 200).all() and (data.images[1] == 10).all()
    reasons = {q.path.rsplit("/", 1)[-1]: q.reason for q in quarantine}
    assert reasons["missing.png"] == "file not found"
    assert "decod" in reasons["corrupt.png"] and "outside" in reasons["outside.png"]

    grey, _ = coco_captions(ann, images, image_size=8, channels=1, limit=1)
    assert grey.images.shape == (1, 8, 8, 1) and grey.fingerprint != data.fingerprint

    ann.write_text('{"images": [], "annotations": [')
    with pytest.raises(DataError, match="captions.json") as err:
        coco_captions(ann, images, image_size=16)
    assert str(err.value).count(". ") == 0  # one sentence
    ann.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(DataError, match=r"captions\.json is malformed: images\[0\]"):
        coco_captions(ann, images, image_size=16)


# ---------------------------------------------------------------- text metrics


def test_tokenize():
    assert tokenize("A T-shirt in the top left, an Ankle boot.") == ["a", "t-shirt", "in", "the", "top", "left",
                                                                    "an", "ankle", "boot"]


def test_bleu_hand_cases():
    s = ["the", "cat", "sat", "on", "the", "mat"]
    assert corpus_bleu([s], [[s]]) == pytest.approx(1.0)
    assert corpus_bleu([s], [["on", "the", "mat", "the", "cat", "sat"]]) == 0.0  # no 4-gram in common
    # Hypothesis is a prefix of its reference: every precision is 1, only the brevity penalty is left.
    assert corpus_bleu([s], [[s + ["today", "again"]]]) == pytest.approx(math.exp(1 - 8 / 6))
    # p1..p4 = 4/5, 3/4, 2/3, 1/2 -> geometric mean (1/5)^(1/4).
    assert corpus_bleu([list("abcde")], [[list("abcdf")]]) == pytest.approx(0.2 ** 0.25)
    # Clipping takes the most any one reference holds ("the" twice), not the sum over references.
    refs = [["the", "cat", "the"], ["the", "dog"]]
    assert corpus_bleu([["the"] * 4], [refs], max_n=1) == pytest.approx(2 / 4)
    # Closest reference length, ties to the shorter: 5 tokens vs references of 4 and 6 -> r = 4, no penalty.
    assert corpus_bleu([list("abcde")], [[list("abcd"), list("abcdef")]], max_n=1) == pytest.approx(1.0)
    assert corpus_bleu([list("abcde")], [[list("abcdef")]], max_n=1) == pytest.approx(math.exp(1 - 6 / 5))
    # Corpus level: counts are summed before dividing (4+1)/(5+2) unigrams, not sentence scores averaged.
    assert corpus_bleu([list("abcde"), list("xy")], [[list("abcdz")], [list("xz")]], max_n=1) == pytest.approx(5 / 7)
    assert corpus_bleu([[]], [[s]]) == 0.0


def test_bleu_matches_a_reference_implementation():
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    rng = np.random.default_rng(0)
    words = list("abcdefg")
    hyps = [list(rng.choice(words, rng.integers(4, 12))) for _ in range(30)]
    refs = [[list(rng.choice(words, rng.integers(4, 12))) for _ in range(2)] + [h[:-1]] for h in hyps]
    assert corpus_bleu(hyps, refs) == pytest.approx(nltk_bleu.corpus_bleu(refs, hyps))


def test_parse_mentions_and_f1():
    assert parse_mentions("A T-shirt in the top left, a shirt in the BOTTOM right.") == {(0, 0), (3, 6)}
    assert parse_mentions("an ankle boot in the top right and a bag in the bottom left") == {(1, 9), (2, 8)}
    for garbage in ("", "a a bag in the the top left", "bag in the top left", "a hat in the top left",
                    "a bag in the top", "<unk> in the left and and"):
        assert parse_mentions(garbage) == set()
    assert parse_mentions("a bag a coat in the top left a bag in the middle") == {(0, 4)}
    assert mention_f1([{(0, 8), (3, 4)}], [{(0, 8), (3, 4)}]) == 1.0
    assert mention_f1([{(0, 8), (3, 4)}], [{(0, 8), (3, 6)}]) == 0.5       # tp 1, fp 1, fn 1
    assert mention_f1([set(), {(1, 2)}], [{(0, 1)}, {(1, 2)}]) == pytest.approx(2 / 3)  # tp 1, fn 1
    assert mention_f1([{(0, 1)}], [{(1, 1)}]) == 0.0
    assert mention_f1([set()], [set()]) == 1.0


# ---------------------------------------------------------------- vocabulary and captioner


def test_word_vocab():
    vocab = WordVocab.build(["a bag in the top left", "a t-shirt in the top right", "a rare word"], min_count=2)
    assert vocab.itos[:4] == ("<pad>", "<start>", "<end>", "<unk>") and vocab.itos[4] == "a"  # most frequent
    ids = vocab.encode("a bag in the top left", max_len=10)
    assert len(ids) == 10 and ids[0] == START and ids[ids.index(END) + 1:] == [PAD] * 2 and UNK in ids
    assert vocab.decode(ids) == "a <unk> in the top <unk>"
    assert vocab.encode("a a a a a a a a", max_len=5) == [START, 4, 4, 4, END]  # cut, <end> kept
    assert vocab.decode([START, 4, END, 5, 5]) == "a"
    assert vocab.encode_batch(["a", "the"], max_len=6).shape == (2, 6)


@pytest.mark.parametrize("attention", [False, True])
def test_captioner_shapes_and_decoding(attention):
    torch.manual_seed(0)
    model = Captioner(12, width=8, embed=16, hidden=32, attention=attention, dropout=0.0)
    images, captions = torch.rand(3, 1, 56, 56), torch.randint(0, 12, (3, 9))
    assert model.encode(images)[0].shape[-2:] == (7, 7)
    logits, alphas = model(images, captions, return_attention=True)
    assert logits.shape == (3, 8, 12)
    if attention:
        assert alphas.shape == (3, 8, 49) and (alphas >= 0).all()
        assert torch.allclose(alphas.sum(-1), torch.ones(3, 8))
    else:
        assert alphas is None
    caption_loss(logits, captions).backward()
    assert all(p.grad is not None for p in model.encoder.parameters())

    model.eval()
    greedy = model.greedy(images, max_len=10)
    assert greedy.shape[0] == 3 and greedy.shape[1] <= 10
    assert torch.equal(model.beam_search(images, beam_size=1, max_len=10), greedy)
    beams = model.beam_search(images, beam_size=4, max_len=10)
    assert beams.shape[0] == 3 and beams.shape[1] <= 10
    for row in (*greedy, *beams):  # after an <end>, only <pad>
        ends = (row == END).nonzero()
        if len(ends):
            assert (row[ends[0, 0] + 1:] == PAD).all()


def _normalised_logprob(model, images, ids):
    """Sum of log-probs / length (through the first <end>) of each row of ``ids`` under ``model``."""
    captions = torch.cat([torch.full((len(ids), 1), START), ids], 1)
    logp = model(images, captions).log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)
    keep = torch.cumsum((ids == END).long(), 1) - (ids == END).long() == 0  # up to and including the first <end>
    return (logp * keep).sum(1) / keep.sum(1)


def test_wide_beam_search_is_exhaustive_search():
    # With as many beams as there are prefixes nothing is ever pruned, so the beam's pick must be the best
    # length-normalised sequence of all: this checks the scoring, the bookkeeping of finished beams and reordering.
    torch.manual_seed(1)
    V, T = 6, 3
    model = Captioner(V, width=8, embed=16, hidden=32, attention=True, dropout=0.0).eval()
    images = torch.rand(2, 1, 56, 56)
    words = [w for w in range(V) if w != END]
    every = [[*p, END] + [PAD] * (T - 1 - n) for n in range(T) for p in itertools.product(words, repeat=n)]
    every += [list(p) for p in itertools.product(words, repeat=T)]  # cut at T without an <end>
    every = torch.tensor(every)
    with torch.no_grad():
        for i in range(len(images)):
            image = images[i:i + 1]
            best = _normalised_logprob(model, image.expand(len(every), -1, -1, -1), every).max()
            beam = model.beam_search(image, beam_size=V ** T, max_len=T)
            beam = torch.cat([beam, torch.full((1, T - beam.shape[1]), PAD)], 1)
            assert _normalised_logprob(model, image, beam)[0] == pytest.approx(best.item(), abs=1e-5)
            greedy = model.greedy(image, max_len=T)
            greedy = torch.cat([greedy, torch.full((1, T - greedy.shape[1]), PAD)], 1)
            assert _normalised_logprob(model, image, greedy)[0] <= best + 1e-5


def test_attention_captioner_overfits_a_few_grids(raw):
    data = fashion_grid("train", 64, seed=1, source=raw)
    vocab = WordVocab.build(data.captions)
    ids = vocab.encode_batch(data.captions, max_len=32)
    ids = ids[:, :int((ids != PAD).sum(1).max())]  # no all-pad steps
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255
    torch.manual_seed(0)
    model = Captioner(len(vocab), width=16, embed=32, hidden=64, attention=True, dropout=0.0)
    steps = 300
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-2, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randperm(len(ids), generator=g)[:32]
        loss = caption_loss(model(images[batch], ids[batch]), ids[batch])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    said = [vocab.decode(row) for row in model.greedy(images, max_len=32)]
    bleu = corpus_bleu([tokenize(s) for s in said], [[tokenize(c)] for c in data.captions])
    f1 = mention_f1([parse_mentions(s) for s in said], [item_mentions(r) for r in data.items])
    assert bleu > 0.9 and f1 > 0.9, (bleu, f1)
    assert len(CELLS) == 4


# ---------------------------------------------------------------- several references per image (COCO)


def test_caption_stats_score_every_reference_as_corpus_bleu_does():
    from components.tasks.captioning import CaptionStats

    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(6)]
    vocab = WordVocab.build([" ".join(words)])
    hyps = [list(rng.choice(words, rng.integers(4, 9))) for _ in range(20)]
    refs = [[list(rng.choice(words, rng.integers(4, 9))) for _ in range(2)] + [h[:-1]] for h in hyps]
    refs[3] = refs[3][:1]  # an image with one reference: the others are absent (all <pad>)
    ids = torch.zeros((20, 3, 12), dtype=torch.long)
    for i, rs in enumerate(refs):
        ids[i, :len(rs)] = vocab.encode_batch([" ".join(r) for r in rs], 12)
    generated = vocab.encode_batch([" ".join(h) for h in hyps], 12)[:, 1:]  # decoded ids carry no <start>
    stats = CaptionStats(tuple(vocab.itos))
    stats.add((None, generated), (ids[:, 0], torch.zeros((20, 0), dtype=torch.long), ids), 0.0)
    out = stats.compute()
    assert out["bleu4"] == pytest.approx(corpus_bleu(hyps, refs))
    assert math.isnan(out["mention_f1"])  # the data name no items: not measured, not 1.0
    one = CaptionStats(tuple(vocab.itos))  # only the first reference: a lower score
    one.add((None, generated), (ids[:, 0], torch.zeros((20, 0), dtype=torch.long)), 0.0)
    assert one.compute()["bleu4"] < out["bleu4"]


def test_stream_batches_teach_one_present_reference_and_score_all():
    from components.tasks.captioning import Captioning

    ids = np.zeros((8, 3, 5), dtype=np.int64)
    ids[:, 0] = [1, 4, 2, 0, 0]
    ids[:, 1] = [1, 5, 2, 0, 0]  # the third reference is absent everywhere
    data = {"images": np.zeros((8, 4, 4, 3), np.uint8), "ids": ids, "items": np.zeros((8, 0), np.int64)}
    task = Captioning.build(num_classes=6)
    taught = set()
    for epoch in range(6):
        for (x, caps), (target, items, refs) in task.stream_batches(data, 0, 1, 4, epoch=epoch, train=True):
            assert x.shape == (4, 3, 4, 4) and items.shape == (4, 0) and refs.shape == (4, 3, 5)
            assert torch.equal(caps, target) and (caps[:, 0] == 1).all()  # never the absent reference
            taught.update(caps[:, 1].tolist())
    assert taught == {4, 5}  # both present references are taught over the epochs
    (_, caps), (_, _, refs) = next(task.stream_batches(data, 0, 1, 8, train=False))
    assert (caps[:, 1] == 4).all()  # evaluation: the first reference, every one scored
