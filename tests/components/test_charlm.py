"""Character language models (§10): shapes and state, truncated BPTT, sampling, bits per char, the n-gram baseline.

    .venv/bin/python -m pytest -q tests/components/test_charlm.py      # ~20 s on 2 busy cores
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from components.models.charlm import (
    ARCHS,
    CharRNN,
    bits_per_char,
    build_charlm,
    generate,
)
from components.text_baselines import NGramModel

V = 7
SMALL = {"rnn": dict(embed=8, hidden=16), "gru": dict(embed=8, hidden=16), "lstm": dict(embed=8, hidden=16),
         "transformer": dict(d_model=16, heads=2, context=32)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _small(arch: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return build_charlm(arch, V, **{**SMALL[arch], "layers": 2, "dropout": 0.0, **kw}).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shapes_and_state(arch):
    model = _small(arch)
    logits, state = model(torch.randint(0, V, (3, 11)))
    assert logits.shape == (3, 11, V)
    if arch == "transformer":
        assert state is None and not model.stateful and model.init_state(3, "cpu") is None
        return
    assert model.stateful
    zeros = model.init_state(3, "cpu")
    shapes = [t.shape for t in (state if arch == "lstm" else (state,))]
    assert shapes == [t.shape for t in (zeros if arch == "lstm" else (zeros,))] == [(2, 3, 16)] * len(shapes)
    assert isinstance(state, tuple) == (arch == "lstm")


@pytest.mark.parametrize("arch", ["rnn", "gru", "lstm"])
def test_carried_state_equals_one_long_forward(arch):
    model, x = _small(arch), torch.randint(0, V, (2, 25))
    whole, _ = model(x)
    first, state = model(x[:, :10], model.init_state(2, "cpu"))  # init_state = the zeros a None state means
    rest, _ = model(x[:, 10:], model.detach_state(state))
    torch.testing.assert_close(torch.cat([first, rest], 1), whole)


def test_detach_state_keeps_values_and_cuts_the_graph():
    model = _small("lstm").train()
    _, state = model(torch.randint(0, V, (2, 5)))
    detached = CharRNN.detach_state(state)
    for old, new in zip(state, detached):
        assert old.grad_fn is not None and new.grad_fn is None and torch.equal(old, new)


def test_tie_weights_shares_the_embedding():
    tied = CharRNN(V, "gru", embed=16, hidden=16, tie_weights=True)
    assert tied.decoder.weight is tied.embed.weight
    untied = CharRNN(V, "gru", embed=16, hidden=16)
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == V * 16
    with pytest.raises(ValueError, match="embed == hidden"):
        CharRNN(V, embed=8, hidden=16, tie_weights=True)
    with pytest.raises(ValueError, match="arch"):
        build_charlm("cnn", V)


@pytest.mark.parametrize("train", [False, True])
def test_transformer_is_causal_and_bounded_by_its_context(train):
    model = _small("transformer").train(train)
    x = torch.randint(0, V, (2, 20))
    y = x.clone()
    y[:, 12:] = (y[:, 12:] + 1) % V
    torch.testing.assert_close(model(x)[0][:, :12], model(y)[0][:, :12])
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 33, dtype=torch.long))


def _echo_blocks(g: torch.Generator, streams: int, blocks: int) -> torch.Tensor:
    """Period 12: a random marker m in {0, 1}, ten 2s, then 3 + m (the marker echoed 11 steps later); one more
    marker at the end, so that inputs and targets are whole blocks."""
    m = torch.randint(0, 2, (streams, blocks + 1), generator=g)
    block = torch.full((streams, blocks, 12), 2)
    block[:, :, 0], block[:, :, 11] = m[:, :-1], 3 + m[:, :-1]
    return torch.cat([block.flatten(1), m[:, -1:]], 1)


def _stateless_floor(x: torch.Tensor, y: torch.Tensor, chunk: int) -> float:
    """The lowest mean cross-entropy (nats) that any model reset at every chunk can reach on (x, y): the empirical
    H(target | the ids so far in its chunk), over every position of a chunk."""
    xs, ys = x.reshape(-1, chunk).numpy(), y.reshape(-1, chunk).numpy()
    code, total = np.zeros(len(xs), np.int64), 0.0
    for j in range(chunk):
        code = code * 8 + xs[:, j] + 1
        pairs, n = np.unique(code * 8 + ys[:, j], return_counts=True)
        _, ctx = np.unique(pairs // 8, return_inverse=True)
        total -= (n * np.log(n / np.bincount(ctx, weights=n)[ctx])).sum()
    return total / xs.size


def test_truncated_bptt_carries_information_past_the_chunk():
    # Chunks of 4 start at block offsets 0, 4, 8. Reset at each chunk, a model cannot tell the chunk at offset 4
    # (targets z z z z) from the one at 8 (z z e m') after "z z z", nor which echo comes: 1.5 bits twice per block,
    # plus 1 bit for the next marker = 4 bits / 12 chars = 0.231 nats. Carried state can know both: 1 bit / 12
    # chars = 0.058 nats. Backward still stops at each chunk (detach_state), so the LSTM has to learn to keep
    # the marker from gradients that never reach it, through its forget gates.
    g, chunk, epochs = torch.Generator().manual_seed(0), 4, 30
    data = _echo_blocks(g, 32, 40)
    x, y = data[:, :-1], data[:, 1:]
    torch.manual_seed(0)
    model = CharRNN(5, "lstm", embed=8, hidden=64, layers=1, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps = epochs * x.shape[1] // chunk
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    for _ in range(epochs):
        state = None
        for s in range(0, x.shape[1], chunk):
            logits, state = model(x[:, s:s + chunk], state)
            loss = F.cross_entropy(logits.flatten(0, 1), y[:, s:s + chunk].flatten())
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            state = model.detach_state(state)  # carry the values into the next chunk, not the graph
    test = _echo_blocks(g, 32, 40)
    floor = _stateless_floor(test[:, :-1], test[:, 1:], chunk)
    assert floor == pytest.approx(4 * math.log(2) / 12, abs=0.01)
    with torch.no_grad():
        logits, _ = model.eval()(test[:, :-1])  # one forward = state carried throughout
    carried = F.cross_entropy(logits.flatten(0, 1), test[:, 1:].flatten()).item()
    assert carried < floor - 0.05, (carried, floor)


def test_lstm_overfits_a_short_passage():
    text = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
            "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light.")
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text])
    torch.manual_seed(0)
    model = CharRNN(len(vocab), "lstm", embed=32, hidden=64, layers=1, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        logits, _ = model(ids[None, :-1])
        loss = F.cross_entropy(logits[0], ids[1:])
        if loss.item() < 0.05:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_generate_seeded_greedy_and_lengths(arch):
    model = _small(arch, context=8) if arch == "transformer" else _small(arch)
    prompt = torch.tensor([3])
    a = generate(model, prompt, 20, generator=torch.Generator().manual_seed(1))
    b = generate(model, prompt, 20, generator=torch.Generator().manual_seed(1))
    assert a.shape == (20,) and a.dtype == torch.long and torch.equal(a, b)
    greedy = generate(model, torch.tensor([1, 2, 3]), 20, temperature=0)
    assert torch.equal(greedy, generate(model, torch.tensor([1, 2, 3]), 20, temperature=0))
    seq = torch.tensor([1, 2, 3])  # greedy by re-reading the (cropped) sequence every step: the same ids
    for _ in range(20):
        window = seq[-model.context:] if arch == "transformer" else seq
        seq = torch.cat([seq, model(window[None])[0][0, -1].argmax().view(1)])
    assert torch.equal(greedy, seq[3:])
    assert generate(model, prompt, 0).shape == (0,)
    model.train()
    generate(model, prompt, 2)
    assert model.training
    with pytest.raises(ValueError, match="prompt"):
        generate(model, torch.tensor([], dtype=torch.long), 5)


class _Table(nn.Module):
    """logits[t] = table[ids[t]] (uniform when zero): its bpc is the same however the sequence is cut up."""

    def __init__(self, stateful: bool, uniform: bool = False, context: int = 8) -> None:
        super().__init__()
        self.stateful, self.context = stateful, context
        self.table = nn.Embedding(V, V)
        if uniform:
            nn.init.zeros_(self.table.weight)

    def forward(self, ids, state=None):
        return self.table(ids), state


@pytest.mark.parametrize("stateful", [True, False])
def test_bits_per_char_scores_every_position_once(stateful):
    ids = torch.randint(0, V, (53,), generator=torch.Generator().manual_seed(0))
    assert bits_per_char(_Table(stateful, uniform=True), ids, chunk=5, batch_streams=3) == pytest.approx(
        math.log2(V), rel=1e-6)
    model = _Table(stateful)
    direct = F.cross_entropy(model(ids[:-1])[0], ids[1:]).item() / math.log(2)
    for chunk, streams in [(5, 1), (5, 3), (100, 4), (1, 60)]:
        assert bits_per_char(model, ids, chunk, streams) == pytest.approx(direct, rel=1e-5)


def test_bits_per_char_windows_keep_half_a_context_of_history():
    class HistoryProbe(nn.Module):  # 1 bit for a target seen with fewer than context//2 ids, ~0 otherwise
        stateful, context = False, 8

        def __init__(self) -> None:
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(()))

        def forward(self, ids, state=None):
            confident = torch.arange(ids.shape[1]) + 1 >= self.context // 2
            logits = torch.zeros(*ids.shape, 2)
            logits[..., 0] = torch.where(confident, 40.0, 0.0)
            return logits, None

    for n, streams in [(50, 1), (61, 4)]:
        got = bits_per_char(HistoryProbe(), torch.zeros(n, dtype=torch.long), batch_streams=streams)
        assert got * (n - 1) == pytest.approx(HistoryProbe.context // 2 - 1, abs=1e-5)  # the first window's


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_bits_per_char_of_a_real_model_matches_one_forward(arch):
    model = _small(arch)
    ids = torch.randint(0, V, (30,))  # shorter than the transformer's context: one window
    direct = F.cross_entropy(model(ids[None, :-1])[0][0], ids[1:]).item() / math.log(2)
    assert bits_per_char(model, ids, chunk=7) == pytest.approx(direct, rel=1e-5)


# --- the n-gram baseline ---------------------------------------------------------------------------------


def test_ngram_matches_a_hand_count():
    model = NGramModel(order=2, k=0.5, vocab_size=3).fit(np.array([0, 1, 0, 1, 1, 2, 0, 1]))
    # counts: after 0 -> 1 three times; after 1 -> 0, 1, 2 once each; after 2 -> 0 once. P = (c + .5) / (n + 1.5)
    hand = [3.5 / 4.5, 1.5 / 4.5, 3.5 / 4.5, 1.5 / 4.5, 1.5 / 4.5, 1.5 / 2.5, 3.5 / 4.5]
    assert model.bits_per_char(np.array([0, 1, 0, 1, 1, 2, 0, 1])) == pytest.approx(-np.mean(np.log2(hand)))
    assert model.bits_per_char(np.array([2, 2, 0])) == pytest.approx(-np.mean(np.log2([0.5 / 2.5, 1.5 / 2.5])))
    # order 3: the second id of a sequence has the 1-id context "start, a", not "a, a" nor "b, a"
    model = NGramModel(order=3, k=1.0, vocab_size=2).fit(np.array([0, 1, 0, 1, 1]))
    assert model.bits_per_char(np.array([0, 1, 1])) == pytest.approx(-np.mean(np.log2([2 / 3, 2 / 4])))
    assert model.bits_per_char(np.array([1, 0])) == pytest.approx(1.0)  # (start, 1) never seen: 1 / V


def test_ngram_matches_a_dictionary_count_and_sums_to_one():
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 4, 400), rng.integers(0, 4, 100)
    model = NGramModel(order=4, k=0.3, vocab_size=4).fit(train)
    pad = lambda s, i: tuple(int(c) for c in s[max(0, i - 3):i])  # noqa: E731 - the (short) context of s[i]
    pairs = Counter((pad(train, i), int(train[i])) for i in range(len(train)))
    ctxs = Counter(pad(train, i) for i in range(len(train)))
    ref = [(pairs[pad(val, i), int(val[i])] + 0.3) / (ctxs[pad(val, i)] + 1.2) for i in range(1, len(val))]
    assert model.bits_per_char(val) == pytest.approx(-np.mean(np.log2(ref)), rel=1e-12)
    for context in ([], [1], [2, 3, 1], [0, 0, 2, 3, 1], [3, 3, 3]):
        assert model.probs(context).sum() == pytest.approx(1.0, rel=1e-12)


def test_ngram_tune_k_picks_the_best_of_the_grid():
    rng = np.random.default_rng(1)
    train, val = rng.integers(0, 5, 3000), rng.integers(0, 5, 500)
    best, scores = NGramModel.tune_k(train, val, order=3, vocab_size=5, grid=(1.0, 0.1, 0.01))
    assert set(scores) == {1.0, 0.1, 0.01} and best == min(scores, key=scores.get)
    for k, bpc in scores.items():
        assert bpc == pytest.approx(NGramModel(3, k, 5).fit(train).bits_per_char(val))
    assert best == 1.0  # on noise the heaviest smoothing wins
