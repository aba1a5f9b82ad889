"""Image captioning (course notes §10): a small CNN encoder and an LSTM decoder, with or without soft attention
over the CNN's feature map (Show and Tell, Vinyals et al. 2015; Show, Attend and Tell, Xu et al. 2015).

    >>> import torch
    >>> from components.models.captioner import Captioner, WordVocab, caption_loss
    >>> vocab = WordVocab.build(["a bag in the top left", "an ankle boot in the bottom right"])
    >>> ids = vocab.encode_batch(["a bag in the top left"], max_len=12)   # <start> ... <end> <pad>...
    >>> model = Captioner(len(vocab), in_channels=1, attention=True)
    >>> images = torch.rand(1, 1, 56, 56)                                 # float in [0, 1]
    >>> loss = caption_loss(model(images, ids), ids)                      # teacher forcing
    >>> _ = model.eval()
    >>> caption = vocab.decode(model.beam_search(images, beam_size=3)[0]) # or model.greedy(images)

The encoder halves the image three times (a 7x7 map for 56x56 inputs) and appends each position's (x, y), so a
context vector says *where* it looked (a conv net's features are nearly translation-invariant, and the grid
captions are all about position).  Its map, average-pooled to 4x4 and flattened like a classifier's FC input,
initialises the LSTM's (h, c) in both modes; with ``attention=True`` every step also reads an additive-attention
(Bahdanau) context over the 49 positions, fed to the LSTM with the word and to the output layer with ``h``.
``forward(..., return_attention=True)`` also returns the weights, e.g. for SAT's doubly stochastic penalty
``((1 - alphas.sum(1)) ** 2).mean()``.  Decoding (``greedy``, ``beam_search``) expects ``model.eval()``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.text_metrics import tokenize

__all__ = ["END", "PAD", "SPECIALS", "START", "UNK", "Captioner", "WordVocab", "caption_loss"]

PAD, START, END, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")


@dataclass(frozen=True)
class WordVocab:
    """Words <-> ids; ids 0-3 are ``SPECIALS``, then the words by falling count (ties alphabetical)."""

    itos: tuple[str, ...]
    stoi: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.itos[:4] != SPECIALS:
            raise ValueError(f"a WordVocab starts with {SPECIALS}, got {self.itos[:4]}")
        object.__setattr__(self, "stoi", {w: i for i, w in enumerate(self.itos)})

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> WordVocab:
        counts = Counter(w for c in captions for w in tokenize(c))
        words = sorted((w for w, k in counts.items() if k >= min_count and w not in SPECIALS),
                       key=lambda w: (-counts[w], w))
        return cls(SPECIALS + tuple(words))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str, max_len: int) -> list[int]:
        """``[<start>, words..., <end>, <pad>...]`` of exactly ``max_len`` ids; words past ``max_len - 2`` are
        cut (the <end> is kept, so a model still learns to stop); unknown words are <unk>."""
        words = [self.stoi.get(w, UNK) for w in tokenize(caption)][:max_len - 2]
        return [START, *words, END] + [PAD] * (max_len - 2 - len(words))

    def encode_batch(self, captions: Sequence[str], max_len: int) -> Tensor:
        return torch.tensor([self.encode(c, max_len) for c in captions], dtype=torch.long).reshape(-1, max_len)

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        """Words up to the first <end>; <start> and <pad> are skipped."""
        words = []
        for i in (ids.tolist() if isinstance(ids, Tensor) else ids):
            if i == END:
                break
            if i not in (PAD, START):
                words.append(self.itos[i])
        return " ".join(words)


def caption_loss(logits: Tensor, captions: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits`` (B, L-1, V) against ``captions[:, 1:]``, <pad> positions ignored."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), captions[:, 1:].reshape(-1), ignore_index=PAD)


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: the same function in train and eval, whatever the batch (beam search runs one
    # image's beams together, and an overfit on a few images has no useful batch statistics).
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.ReLU(),
                         nn.MaxPool2d(2))


class Captioner(nn.Module):
    """CNN encoder (a small conv net; a 7x7 feature map for 56x56 inputs) -> LSTM decoder; attention=True: soft
    attention over the feature map at every step (Show, Attend and Tell style, additive attention), else the
    pooled feature initialises the LSTM state (it does in both modes)."""

    def __init__(self, vocab_size: int, in_channels: int = 1, width: int = 32, embed: int = 64, hidden: int = 256,
                 attention: bool = False, dropout: float = 0.1, attention_dim: int | None = None) -> None:
        super().__init__()
        self.attention, self.hidden = attention, hidden
        self.encoder = nn.Sequential(_stage(in_channels, width), _stage(width, 2 * width),
                                     _stage(2 * width, 4 * width))
        feat = 4 * width + 2  # + the (x, y) of each position
        self.summary = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * feat, hidden), nn.Tanh())
        self.init_h, self.init_c = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=PAD)
        context = feat if attention else 0
        if attention:
            a = attention_dim or hidden
            self.att_feat, self.att_hidden, self.att_score = nn.Linear(feat, a), nn.Linear(hidden, a), nn.Linear(a, 1)
        self.cell = nn.LSTMCell(embed + context, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden + context, vocab_size)

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Feature map (B, C, h, w) with coordinates appended, and the initial LSTM state (h, c)."""
        fmap = self.encoder(images * 2 - 1)  # centre [0, 1] pixels
        b, _, h, w = fmap.shape
        ys = torch.linspace(-1, 1, h, device=fmap.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=fmap.device).view(1, 1, 1, w).expand(b, 1, h, w)
        fmap = torch.cat([fmap, xs, ys], 1)
        s = self.summary(fmap)
        return fmap, torch.tanh(self.init_h(s)), torch.tanh(self.init_c(s))

    def _prepare(self, images: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        fmap, h, c = self.encode(images)
        feats = fmap.flatten(2).transpose(1, 2)  # (B, P, C): one annotation vector per position
        keys = self.att_feat(feats) if self.attention else None  # the step-independent half of the score
        return feats, keys, h, c

    def attend(self, feats: Tensor, keys: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Additive attention: ``alpha = softmax_p(v . tanh(W_f f_p + W_h h))``; the context is ``sum_p alpha_p
        f_p``. Returns (context (B, C), alpha (B, P))."""
        alpha = self.att_score(torch.tanh(keys + self.att_hidden(h)[:, None])).squeeze(-1).softmax(-1)
        return torch.einsum("bp,bpc->bc", alpha, feats), alpha

    def _step(self, words: Tensor, feats: Tensor, keys: Tensor | None, h: Tensor, c: Tensor):
        x = self.embed(words)
        alpha = None
        if self.attention:
            context, alpha = self.attend(feats, keys, h)  # looks with the previous state, as in SAT
            x = torch.cat([x, context], -1)
        h, c = self.cell(x, (h, c))
        out = torch.cat([h, context], -1) if self.attention else h
        return self.out(self.drop(out)), h, c, alpha

    def forward(self, images: Tensor, captions: Tensor, return_attention: bool = False):
        """Teacher forcing: logits (B, L-1, V) predicting ``captions[:, 1:]`` from ``captions[:, :-1]``; with
        ``return_attention`` also the weights (B, L-1, P) (None without attention)."""
        feats, keys, h, c = self._prepare(images)
        logits, alphas = [], []
        for t in range(captions.shape[1] - 1):
            step, h, c, alpha = self._step(captions[:, t], feats, keys, h, c)
            logits.append(step)
            alphas.append(alpha)
        logits = torch.stack(logits, 1)
        if not return_attention:
            return logits
        return logits, torch.stack(alphas, 1) if self.attention else None

    @torch.no_grad()
    def greedy(self, images: Tensor, max_len: int = 32) -> Tensor:
        """The most likely next word at each step: ids (B, T <= max_len) without <start>; a row ends with <end>
        (unless cut at max_len) and is <pad> after it. Stops once every row has ended."""
        feats, keys, h, c = self._prepare(images)
        words = torch.full((images.shape[0],), START, dtype=torch.long, device=images.device)
        done = torch.zeros_like(words, dtype=torch.bool)
        out = []
        for _ in range(max_len):
            logits, h, c, _ = self._step(words, feats, keys, h, c)
            words = logits.argmax(-1).masked_fill(done, PAD)
            out.append(words)
            done |= words == END
            if done.all():
                break
        return torch.stack(out, 1)

    @torch.no_grad()
    def beam_search(self, images: Tensor, beam_size: int = 3, max_len: int = 32) -> Tensor:
        """Beam search ranked by length-normalised log-probability (sum of word log-probs / words so far,
        <end> included), so longer captions are not penalised for being long; the best of the final beams.
        Ids (B, T <= max_len) shaped like ``greedy``'s; ``beam_size=1`` is greedy decoding."""
        feats, keys, h, c = self._prepare(images)
        b, k = images.shape[0], beam_size
        # Every image's k beams side by side in a batch of B*k.
        feats, h, c = (t.repeat_interleave(k, 0) for t in (feats, h, c))
        keys = keys.repeat_interleave(k, 0) if keys is not None else None
        score = torch.full((b, k), float("-inf"), device=images.device)
        score[:, 0] = 0  # one live beam at first, else k copies of the same hypothesis would fill the beam
        length = torch.zeros((b, k), device=images.device)
        done = torch.zeros((b, k), dtype=torch.bool, device=images.device)
        history = torch.zeros((b, k, 0), dtype=torch.long, device=images.device)
        words = torch.full((b * k,), START, dtype=torch.long, device=images.device)
        for _ in range(max_len):
            logits, h, c, _ = self._step(words, feats, keys, h, c)
            logp = logits.log_softmax(-1).view(b, k, -1)
            # A finished beam only extends with <pad>, at no cost and no length: it keeps its score.
            logp = torch.where(done[..., None], torch.full_like(logp, float("-inf")), logp)
            logp[..., PAD] = torch.where(done, 0.0, logp[..., PAD])
            total = score[..., None] + logp  # (B, k, V)
            new_length = length + (~done).float()
            v = logp.shape[-1]
            ranked = (total / new_length.clamp(min=1)[..., None]).view(b, -1)
            best = ranked.topk(k, dim=1).indices  # (B, k) into k*V
            beam, words = best // v, best % v
            score = total.view(b, -1).gather(1, best)
            length = new_length.gather(1, beam)
            done = done.gather(1, beam) | (words == END)
            history = torch.cat([history.gather(1, beam[..., None].expand(-1, -1, history.shape[-1])),
                                 words[..., None]], -1)
            rows = (torch.arange(b, device=images.device)[:, None] * k + beam).view(-1)
            h, c, words = h[rows], c[rows], words.view(-1)
            if done.all():
                break
        pick = (score / length.clamp(min=1)).argmax(1)
        return history[torch.arange(b, device=images.device), pick]
