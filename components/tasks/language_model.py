"""Character-level language modelling as a task: ids → next-id logits, cross-entropy, bits per character ↓.

    task = LanguageModel.build(num_classes=82, classes=vocab_chars, seq_len=128, clip=1.0)
    for x, y in task.stream_batches(ids, rank=0, world=2, batch_size=32, epoch=0, seed=0):
        outputs, loss = task.train_step(model, x, y, optimizer)   # the state is carried, detached
    task.predict(model, ["It is a truth"], {"max_new_chars": 200, "temperature": 0.8})   # {"text": [...]}

Truncated backpropagation through time (§10): each rank cuts its own contiguous slice of the token stream
into ``batch_size`` streams side by side, and batch k holds chunk k of every stream. The recurrent state
that ends chunk k starts chunk k+1 — detached, so gradients stop at the chunk boundary while the state
still carries what came before. Every epoch starts from a zero state at a seeded offset, so chunk
boundaries move between epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from components.tasks.base import Report, Task, TensorSpec

LN2 = math.log(2.0)

#: What a served char LM accepts besides its prompts (name → default); the signature declares them.
SERVED_PARAMS: dict[str, Any] = {"max_new_chars": 200, "temperature": 1.0, "seed": 0, "mode": "generate"}


@dataclass
class NLLStats:
    """Summed negative log-likelihood (nats), predicted characters and top-1 hits, across ranks."""

    nll: float = 0.0
    count: float = 0.0
    correct: float = 0.0

    def add(self, outputs: Tensor, targets: Tensor, loss: float) -> None:
        n = targets.numel()
        self.nll += float(loss) * n
        self.count += n
        self.correct += float((outputs.argmax(-1) == targets).sum())

    def totals(self) -> list[float]:
        return [self.nll, self.count, self.correct]

    def with_totals(self, totals: Sequence[float]) -> "NLLStats":
        return NLLStats(*[float(t) for t in totals])

    def compute(self) -> dict[str, float]:
        n = max(self.count, 1.0)
        return {"loss": self.nll / n, "bpc": self.nll / n / LN2, "accuracy": self.correct / n}


def detach_state(state: Any) -> Any:
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


@dataclass
class LanguageModel(Task):
    name: ClassVar[str] = "language_model"
    primary: ClassVar[str] = "bpc"
    higher_is_better: ClassVar[bool] = False
    #: Batches come from a token stream each rank slices itself (``stream_batches``), not from Ray Data rows.
    feed: ClassVar[str] = "stream"
    #: What the throughput counts: characters, seq_len per stream per step.
    unit: ClassVar[str] = "char"
    served_input: ClassVar[str] = "text"

    vocab: tuple[str, ...] = ()  # id → character; id 0 is "never seen"
    seq_len: int = 128
    clip: float = 1.0
    state: Any = field(default=None, repr=False)  # the carried recurrent state (None: start from zeros)
    sample_chars: int = 300  # per epoch, a sample of this length at each of ``temperatures``
    temperatures: tuple[float, ...] = (0.5, 1.0)

    @classmethod
    def build(cls, num_classes: int, classes: Sequence[str] = (), seq_len: int = 128, clip: float = 1.0,
              **_: Any) -> "LanguageModel":
        vocab = tuple(classes) or tuple(chr(0xFFFD) for _ in range(num_classes))
        return cls(vocab=vocab, seq_len=seq_len, clip=clip)

    # -- the stream
    def examples_per_step(self, batch: int) -> int:
        return batch * self.seq_len

    def stream_steps(self, tokens: int, world: int, batch_size: int) -> int:
        """Steps per epoch on every rank (the same on all: DDP ranks must step together)."""
        per_rank = tokens // world - self.seq_len  # room for the epoch's offset
        return max(0, (per_rank - 1) // max(1, batch_size) // self.seq_len)

    def stream_batches(self, ids: np.ndarray, rank: int, world: int, batch_size: int, epoch: int = 0,
                       seed: int = 0, train: bool = True) -> Iterator[tuple[Tensor, Tensor]]:
        steps = self.stream_steps(len(ids), world, batch_size)
        if steps == 0:
            raise ValueError(f"{len(ids):,} characters cannot fill one step of {batch_size} streams x "
                             f"{self.seq_len} characters on each of {world} worker(s)")
        start = len(ids) * rank // world + int(np.random.default_rng([seed, epoch]).integers(self.seq_len))
        length = steps * self.seq_len
        part = torch.from_numpy(np.asarray(ids[start:start + batch_size * length + 1], dtype=np.int64))
        x = part[:-1].view(batch_size, length)
        y = part[1:].view(batch_size, length)
        self.state = None
        for k in range(steps):
            yield x[:, k * self.seq_len:(k + 1) * self.seq_len], y[:, k * self.seq_len:(k + 1) * self.seq_len]

    # -- training
    def batch_prep(self, **_: Any):
        raise TypeError("a language model reads a token stream (stream_batches), not Ray Data rows")

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]).float(), targets.reshape(-1))

    def infer(self, model: nn.Module, inputs: Tensor) -> Tensor:
        logits, state = model(inputs, self.state)
        self.state = detach_state(state)  # truncated BPTT: the next chunk starts here, without a graph
        return logits

    def forward(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        outputs = self.infer(model, inputs)
        return outputs, self.loss(outputs, targets)

    def train_step(self, model: nn.Module, inputs: Tensor, targets: Tensor, optimizer: torch.optim.Optimizer,
                   **_: Any) -> tuple[Tensor, Tensor]:
        """One step with gradient clipping (recurrent nets' gradients explode now and then, §10)."""
        outputs, loss = self.forward(model, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            nn.utils.clip_grad_norm_(model.parameters(), self.clip)
        optimizer.step()
        return outputs, loss

    def epoch_artifacts(self, model: nn.Module, epoch: int) -> dict[str, str]:
        """Samples after the epoch, from a newline, at each temperature (the same seed every epoch, so
        epochs compare); the carried training state is left as it was."""
        if not self.sample_chars:
            return {}
        saved, was_training = self.state, model.training
        parts = []
        for t in self.temperatures:
            text = self.predict(model, ["\n"], {"max_new_chars": self.sample_chars, "seed": 0, "temperature": t})
            parts.append(f"--- temperature {t:g}\n{text['text'][0]}\n")
        self.state = saved
        model.train(was_training)
        return {f"samples/epoch_{epoch + 1:03d}.txt": "\n".join(parts)}

    def meter(self) -> NLLStats:
        return NLLStats()

    def loss_floor(self) -> float:
        return math.log(len(self.vocab)) if len(self.vocab) > 1 else 0.0

    def predictions(self, outputs: Tensor) -> Tensor:
        return outputs.argmax(-1)

    # -- text in, text out
    def encode(self, text: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.vocab)}
        return np.fromiter((index.get(c, 0) for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def predict(self, model: nn.Module, raw: Any, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``mode=generate``: each prompt's continuation; ``mode=bpc``: each string's bits per character."""
        from components.models.charlm import bits_per_char, generate

        p = {**SERVED_PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
        prompts = [str(s) for s in np.asarray(raw, dtype=object).reshape(-1)]
        model.eval()
        if p["mode"] == "bpc":
            return {"bpc": [bits_per_char(model, torch.from_numpy(self.encode(s))) if len(s) > 1 else float("nan")
                            for s in prompts]}
        if p["mode"] != "generate":
            raise ValueError(f"mode must be 'generate' or 'bpc', not {p['mode']!r}")
        out = []
        for i, prompt in enumerate(prompts):
            ids = self.encode(prompt or "\n")
            gen = torch.Generator().manual_seed(int(p["seed"]) + i)
            new = generate(model, torch.from_numpy(ids), int(p["max_new_chars"]), float(p["temperature"]), gen)
            out.append(self.decode(new.tolist()))
        return {"text": out}

    def served_schema(self, example: Any, model_meta: Mapping[str, Any]) -> tuple[list[TensorSpec],
                                                                                   list[TensorSpec]]:
        return [TensorSpec("string", (-1,), "prompt")], [TensorSpec("string", (-1,), "text")]

    def served_params(self) -> dict[str, Any]:
        return dict(SERVED_PARAMS)

    def report(self, predictions: np.ndarray, targets: np.ndarray, classes: Sequence[str],
               history: Mapping[str, Sequence[tuple[int, float]]], title: str) -> Report:
        from components.plots import curves_figure

        return Report(figures={"plots/curves.png": curves_figure(history, title)})
