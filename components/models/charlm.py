"""Character-level language models (course notes §10): recurrent nets ``h_t = f_W(h_{t-1}, x_t)`` and a small
decoder-only transformer to compare them with, plus sampling and bits-per-character evaluation.

    >>> import torch
    >>> from components.models.charlm import bits_per_char, build_charlm, generate
    >>> text = torch.randint(0, 80, (5000,))                  # ids of a corpus encoded one char per id
    >>> model = build_charlm("lstm", vocab_size=80, hidden=128)
    >>> state = None
    >>> for s in range(0, 4000, 64):                           # truncated BPTT over 64-char chunks
    ...     logits, state = model(text[None, s:s + 64], state)
    ...     # loss = cross_entropy(logits[0], text[s + 1:s + 65]); loss.backward(); step ...
    ...     state = model.detach_state(state)                  # keep the values, cut the graph
    >>> sample = generate(model, text[:10], max_new=100, temperature=0.8)
    >>> bpc = bits_per_char(model, text[4000:])                # log2(80) ~ 6.32 for an untrained model

Every model maps ``ids (B, T) -> (logits (B, T, V), state)``. ``stateful`` models (the RNNs) return a state to
feed back with the next chunk; the transformer returns ``None`` and sees at most ``context`` ids at a time.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
ARCHS = (*CELLS, "transformer")
#: nn.RNN/nn.GRU state: h (layers, B, hidden); nn.LSTM state: (h, c); the transformer has none.
State = Union[Tensor, tuple[Tensor, Tensor], None]


def _map_state(state: State, fn: Callable[[Tensor], Tensor]) -> State:
    if state is None:
        return None
    return tuple(fn(t) for t in state) if isinstance(state, tuple) else fn(state)


class CharRNN(nn.Module):
    """Embedding -> stacked recurrent layers (cell "rnn" (tanh), "gru" or "lstm") -> dropout -> linear to the
    vocabulary. With ``tie_weights`` the decoder reuses the embedding matrix (needs ``embed == hidden``)."""

    stateful: ClassVar[bool] = True

    def __init__(self, vocab_size: int, cell: str = "lstm", embed: int = 64, hidden: int = 256, layers: int = 2,
                 dropout: float = 0.1, tie_weights: bool = False) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}")
        if tie_weights and embed != hidden:
            raise ValueError(f"tie_weights needs embed == hidden, got embed={embed}, hidden={hidden}")
        self.cell, self.hidden, self.layers = cell, hidden, layers
        self.embed = nn.Embedding(vocab_size, embed)
        # nn.RNN etc. apply dropout between stacked layers only, and warn when there is a single layer.
        self.rnn = CELLS[cell](embed, hidden, num_layers=layers, batch_first=True,
                               dropout=dropout if layers > 1 else 0.0)
        if cell == "lstm":  # forget-gate bias 1 (0.5 in each of bias_ih, bias_hh; gates are i, f, g, o): the cell
            # starts out remembering, so gradients can discover long dependencies (Jozefowicz et al., 2015)
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias"):
                    nn.init.constant_(p.data[hidden:2 * hidden], 0.5)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab_size)
        if tie_weights:  # one Parameter in two places: the same (V, hidden) matrix embeds and decodes
            self.decoder.weight = self.embed.weight

    def forward(self, ids: Tensor, state: State = None) -> tuple[Tensor, State]:
        out, state = self.rnn(self.embed(ids), state)  # state None = zeros, like init_state
        return self.decoder(self.drop(out)), state

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        h = torch.zeros(self.layers, batch, self.hidden, device=device)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    @staticmethod
    def detach_state(state: State) -> State:
        """Truncated BPTT: the next chunk starts from these values, but backward stops here, so memory and
        time per step stay bounded by the chunk length instead of growing with everything seen so far."""
        return _map_state(state, Tensor.detach)


class CharTransformer(nn.Module):
    """A small decoder-only transformer over characters (learned positions, pre-norm blocks, causal mask) — the
    modern comparison. It has no state: each forward sees at most ``context`` ids."""

    stateful: ClassVar[bool] = False

    def __init__(self, vocab_size: int, d_model: int = 128, heads: int = 4, layers: int = 2, context: int = 128,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, activation="gelu", batch_first=True,
                                       norm_first=True) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)  # pre-norm blocks leave the residual stream unnormalised
        self.head = nn.Linear(d_model, vocab_size)
        # -inf above the diagonal: position t attends to positions <= t only, so logits[t] never sees ids[t+1].
        self.register_buffer("mask", torch.full((context, context), float("-inf")).triu(1), persistent=False)

    def forward(self, ids: Tensor, state: State = None) -> tuple[Tensor, None]:
        T = ids.shape[1]
        if T > self.context:
            raise ValueError(f"sequence length {T} exceeds the context {self.context}")
        x = self.drop(self.tok(ids) + self.pos(torch.arange(T, device=ids.device)))
        for block in self.blocks:
            x = block(x, src_mask=self.mask[:T, :T], is_causal=True)
        return self.head(self.norm(x)), None

    def init_state(self, batch: int, device: torch.device | str | None = None) -> None:
        return None

    @staticmethod
    def detach_state(state: State) -> State:
        return state


class TextModel(nn.Module):
    """A character language model as a package holds it (components.package_base: ``ModelSpec.build``): the
    net under ``net``, the same ``(ids, state) -> (logits, state)`` call, its ``stateful``/``context``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.stateful = bool(net.stateful)
        self.context = getattr(net, "context", None)

    def forward(self, ids: Tensor, state: State = None) -> tuple[Tensor, State]:
        return self.net(ids, state)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        return self.net.init_state(batch, device)

    def detach_state(self, state: State) -> State:
        return self.net.detach_state(state)


def build_text_model(arch: str, vocab_size: int, *, embed: int | None = None, hidden: int | None = None,
                     layers: int | None = None, dropout: float = 0.0, tie_weights: bool | None = None,
                     context: int | None = None, heads: int | None = None) -> TextModel:
    """From a model spec's fields (None: the architecture's default): ``hidden`` is the transformer's width;
    each architecture takes only its own options."""
    if arch == "transformer":
        options = {"d_model": hidden, "heads": heads, "layers": layers, "context": context, "dropout": dropout}
    else:
        options = {"embed": embed, "hidden": hidden, "layers": layers, "dropout": dropout,
                   "tie_weights": tie_weights}
    return TextModel(build_charlm(arch, vocab_size, **{k: v for k, v in options.items() if v is not None}))


def build_charlm(arch: str, vocab_size: int, **kwargs) -> nn.Module:
    """``arch`` in :data:`ARCHS`; ``kwargs`` go to :class:`CharRNN` (rnn/gru/lstm) or :class:`CharTransformer`."""
    if arch in CELLS:
        return CharRNN(vocab_size, cell=arch, **kwargs)
    if arch == "transformer":
        return CharTransformer(vocab_size, **kwargs)
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def _pick(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    if temperature == 0:
        return logits.argmax()
    probs = torch.softmax(logits.double() / temperature, -1)
    if generator is not None:  # multinomial draws on the generator's device
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator)[0].to(logits.device)


@torch.no_grad()
def generate(model: nn.Module, prompt: Tensor, max_new: int, temperature: float = 1.0,
             generator: torch.Generator | None = None) -> Tensor:
    """Sample ``max_new`` ids (LongTensor (max_new,)) after ``prompt`` (LongTensor (T0,), T0 >= 1); temperature 0
    is greedy. Runs in eval mode and restores the model's mode after."""
    if prompt.dim() != 1 or len(prompt) < 1:
        raise ValueError(f"prompt must be a 1-d tensor of at least one id, got shape {tuple(prompt.shape)}")
    if max_new < 0 or temperature < 0:
        raise ValueError(f"max_new and temperature must be >= 0, got {max_new}, {temperature}")
    was_training, device = model.training, _device(model)
    model.eval()
    ids, out = prompt.to(device).long(), []
    try:
        if model.stateful:  # the state summarises everything seen: feed the prompt once, then one id at a time
            logits, state = model(ids[None])
            for i in range(max_new):
                out.append(_pick(logits[0, -1], temperature, generator))
                if i + 1 < max_new:
                    logits, state = model(out[-1].view(1, 1), state)
        else:  # no state: re-read the last `context` ids for every new one
            for _ in range(max_new):
                logits, _ = model(ids[-model.context:][None])
                out.append(_pick(logits[0, -1], temperature, generator))
                ids = torch.cat([ids, out[-1].view(1)])
    finally:
        model.train(was_training)
    return torch.stack(out).to(prompt.device) if out else torch.empty(0, dtype=torch.long, device=prompt.device)


def _nll_stateful(model: nn.Module, x: Tensor, y: Tensor, chunk: int, streams: int) -> float:
    # The corpus is cut into `streams` contiguous rows read side by side, each carrying its own state; the
    # few leftover ids follow the last row, so they continue from its final state.
    n = len(x)
    B = max(1, min(streams, n))
    L = n // B
    total, state = 0.0, None
    for xs, ys in ((x[:B * L].view(B, L), y[:B * L].view(B, L)), (x[B * L:][None], y[B * L:][None])):
        for s in range(0, xs.shape[1], chunk):
            logits, state = model(xs[:, s:s + chunk], state)
            total += F.cross_entropy(logits.flatten(0, 1).float(), ys[:, s:s + chunk].flatten(),
                                     reduction="sum").item()
        state = _map_state(state, lambda t: t[:, -1:])  # the leftover row continues the last stream
    return total


def _nll_windowed(model: nn.Module, x: Tensor, y: Tensor, batch: int) -> float:
    # Windows of `context` ids every context//2: each target is scored once, in the first window that holds
    # it past what earlier windows scored, so it has at least context//2 ids of history (except at the start).
    n, C = len(x), model.context
    windows, s, done = [], 0, 0
    while done < n:
        e = min(s + C, n)
        windows.append((s, e, done))
        s, done = s + max(1, C // 2), e
    total = 0.0
    for lo in range(0, len(windows), batch):
        group = windows[lo:lo + batch]
        for size in {e - s for s, e, _ in group}:  # only the last window can be shorter
            part = [w for w in group if w[1] - w[0] == size]
            logits, _ = model(torch.stack([x[s:e] for s, e, _ in part]))
            for row, (s, e, d) in enumerate(part):
                total += F.cross_entropy(logits[row, d - s:].float(), y[d:e], reduction="sum").item()
    return total


@torch.no_grad()
def bits_per_char(model: nn.Module, ids: Tensor, chunk: int = 256, batch_streams: int = 1) -> float:
    """Mean cross-entropy / ln 2 of predicting ``ids[1:]`` from what precedes each. Stateful models read
    ``chunk`` ids at a time carrying state, over ``batch_streams`` parallel streams; the transformer slides a
    window of its context (stride context // 2), ``batch_streams`` windows per forward."""
    if ids.dim() != 1 or len(ids) < 2:
        raise ValueError(f"ids must be a 1-d tensor of at least 2 ids, got shape {tuple(ids.shape)}")
    was_training = model.training
    model.eval()
    ids = ids.to(_device(model)).long()
    x, y = ids[:-1], ids[1:]
    try:
        if model.stateful:
            total = _nll_stateful(model, x, y, chunk, batch_streams)
        else:
            total = _nll_windowed(model, x, y, max(1, batch_streams))
    finally:
        model.train(was_training)
    return total / len(y) / math.log(2)
