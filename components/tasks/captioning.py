"""Image captioning as a task: (images, captions) → next-word logits with teacher forcing; BLEU-4 ↑.

    task = Captioning.build(num_classes=len(words), classes=words)        # the word vocabulary
    for (images, ids), (targets, items) in task.stream_batches(arrays, rank=0, world=2, batch_size=32):
        outputs, loss = task.forward(model, (images, ids), (targets, items))
    task.predict(model, uint8_images, {"beam_size": 3})                  # {"caption": ["a bag in the top left"]}

Each rank reads its own slice of the ingested arrays (``images`` uint8 N×H×W×C, ``ids`` the encoded
captions: N×L, or N×K×L for K references per image (COCO has about five; all-<pad> rows where an image has
fewer), ``items`` the (cell → class) ground truth of a grid, -1 where empty, N×0 where the data have none),
shuffled per epoch. Training teaches one reference per image, drawn afresh each epoch. Evaluation decodes
greedily, without the reference, and scores the words: corpus BLEU-4 from n-gram counts summed over batches
and ranks (counts clipped by every reference, the closest reference length for the brevity penalty), and
mention F1 (does the caption name exactly the items present; not measured where the data have no items).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from components.tasks.base import Report, Task, TensorSpec

#: What a served captioner accepts besides its images (name → default).
SERVED_PARAMS: dict[str, Any] = {"beam_size": 1}
ORDERS = 4


@dataclass
class CaptionStats:
    """Summed loss, BLEU n-gram matches and totals, lengths, and mention hits over decoded captions."""

    vocab: tuple[str, ...]
    sums: list[float] = field(default_factory=lambda: [0.0] * (2 + 2 * ORDERS + 2 + 3 + 1))

    def add(self, outputs: Any, targets: Any, loss: float) -> None:
        from components.text_metrics import _ngrams, parse_mentions

        logits, generated = outputs
        ids, items = targets[0], targets[1]
        refs = targets[2] if len(targets) > 2 else ids  # every reference (B×K×L), or the one taught (B×L)
        s = self.sums
        s[0] += float(loss) * len(ids)
        s[1] += len(ids)
        if generated is None:  # training: teacher-forced only, nothing decoded
            return
        refs = refs[:, None] if refs.ndim == 2 else refs
        for hyp_ids, ref_rows, row in zip(generated.tolist(), refs.tolist(), items.tolist()):
            hyp = self.words(hyp_ids)
            references = [r for r in (self.words(ids_) for ids_ in ref_rows) if r] or [[]]
            for n in range(1, ORDERS + 1):
                counts = _ngrams(hyp, n)
                most = [_ngrams(r, n) for r in references]
                s[1 + n] += sum(min(c, max(m[g] for m in most)) for g, c in counts.items())
                s[1 + ORDERS + n] += max(len(hyp) - n + 1, 0)
            s[2 + 2 * ORDERS] += len(hyp)
            s[3 + 2 * ORDERS] += min((len(r) for r in references), key=lambda k: (abs(k - len(hyp)), k))
            if len(row):  # the data say which items each image holds (a grid's cells)
                said = parse_mentions(" ".join(hyp))
                true = {(cell, c) for cell, c in enumerate(row) if c >= 0}
                s[4 + 2 * ORDERS] += len(said & true)
                s[5 + 2 * ORDERS] += len(said - true)
                s[6 + 2 * ORDERS] += len(true - said)
                s[7 + 2 * ORDERS] += 1

    def words(self, ids: Sequence[int]) -> list[str]:
        out = []
        for i in ids:
            if i == 2:  # <end>
                break
            if i > 3:  # not <pad>, <start>, <unk>
                out.append(self.vocab[i])
        return out

    def totals(self) -> list[float]:
        return list(self.sums)

    def with_totals(self, totals: Sequence[float]) -> "CaptionStats":
        return CaptionStats(self.vocab, [float(t) for t in totals])

    def compute(self) -> dict[str, float]:
        s = self.sums
        out = {"loss": s[0] / max(s[1], 1.0)}
        hyp_len, ref_len = s[2 + 2 * ORDERS], s[3 + 2 * ORDERS]
        if ref_len == 0:  # nothing decoded (a training epoch)
            return {**out, "bleu4": float("nan"), "mention_f1": float("nan")}
        matched, total = s[2:2 + ORDERS], s[2 + ORDERS:2 + 2 * ORDERS]
        if min(matched) == 0 or hyp_len == 0:
            bleu = 0.0
        else:
            brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
            bleu = brevity * math.exp(sum(math.log(m / t) for m, t in zip(matched, total)) / ORDERS)
        tp, fp, fn, annotated = s[4 + 2 * ORDERS], s[5 + 2 * ORDERS], s[6 + 2 * ORDERS], s[7 + 2 * ORDERS]
        f1 = float("nan") if annotated == 0 else 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        return {**out, "bleu4": bleu, "mention_f1": f1}


@dataclass
class Captioning(Task):
    name: ClassVar[str] = "captioning"
    primary: ClassVar[str] = "bleu4"
    higher_is_better: ClassVar[bool] = True
    feed: ClassVar[str] = "stream"  # arrays each rank slices itself (stream_batches)

    vocab: tuple[str, ...] = ()  # id → word; 0-3 are <pad>, <start>, <end>, <unk>
    max_len: int = 32

    @classmethod
    def build(cls, num_classes: int, classes: Sequence[str] = (), **_: Any) -> "Captioning":
        return cls(vocab=tuple(classes) or tuple(str(i) for i in range(num_classes)))

    # -- the arrays
    def stream_steps(self, rows: int, world: int, batch_size: int) -> int:
        return max(0, (rows // world) // max(1, batch_size))

    def stream_batches(self, data: Mapping[str, np.ndarray], rank: int, world: int, batch_size: int,
                       epoch: int = 0, seed: int = 0, train: bool = True) -> Iterator[tuple[Any, Any]]:
        """Training: this rank's rows shuffled, whole batches only (every rank steps together). Evaluation
        (``train=False``): every row of this rank's slice once, in order, the last batch partial."""
        n = len(data["ids"])
        lo, hi = n * rank // world, n * (rank + 1) // world
        if train:
            steps = self.stream_steps(n, world, batch_size)
            if steps == 0:
                raise ValueError(f"{n:,} captioned images cannot fill one batch of {batch_size} on {world} worker(s)")
            order = lo + np.random.default_rng([seed, epoch, rank]).permutation(n // world)
        else:
            order = np.arange(lo, hi)
            steps = -(-len(order) // batch_size)
        images, ids, items = data["images"], data["ids"], data["items"]
        pick = np.random.default_rng([seed, epoch, rank, 1])
        for k in range(steps):
            rows = np.sort(order[k * batch_size:(k + 1) * batch_size])
            x = torch.from_numpy(np.ascontiguousarray(images[rows])).permute(0, 3, 1, 2).float().div_(255)
            labels = torch.from_numpy(np.asarray(items[rows], dtype=np.int64))
            refs = np.asarray(ids[rows], dtype=np.int64)
            if refs.ndim == 2:
                caps = torch.from_numpy(refs)
                yield (x, caps), (caps, labels)
                continue
            # K references per image: teach one, drawn among those present (first on val), score against all
            present = refs[:, :, 0] != 0  # a reference starts with <start>; an absent one is all <pad>
            chosen = [pick.choice(np.flatnonzero(p)) if train else int(np.argmax(p)) for p in present]
            caps = torch.from_numpy(refs[np.arange(len(rows)), chosen])
            yield (x, caps), (caps, labels, torch.from_numpy(refs))

    # -- training
    def batch_prep(self, **_: Any):
        raise TypeError("a captioning task reads its ingested arrays (stream_batches), not Ray Data rows")

    def loss(self, outputs: Any, targets: Any) -> Tensor:
        from components.models.captioner import caption_loss

        logits = outputs[0] if isinstance(outputs, tuple) else outputs
        return caption_loss(logits, targets[0])

    def infer(self, model: nn.Module, inputs: Any) -> Any:
        images, caps = inputs
        logits = model(images, caps)  # teacher forcing: the loss
        net = getattr(model, "module", model)
        generated = None if model.training else net.greedy(images, max_len=self.max_len)  # the words it says
        return logits, generated

    def meter(self) -> CaptionStats:
        return CaptionStats(self.vocab)

    def loss_floor(self) -> float:
        return math.log(len(self.vocab)) if len(self.vocab) > 1 else 0.0

    def predictions(self, outputs: Any) -> Tensor:
        return outputs[1]

    # -- serving
    def predict(self, model: nn.Module, raw: np.ndarray, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        p = {**SERVED_PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
        x = torch.from_numpy(np.asarray(raw, dtype=np.uint8))
        x = (x.unsqueeze(-1) if x.ndim == 3 else x).permute(0, 3, 1, 2).float().div(255)
        model.eval()
        beam = int(p["beam_size"])
        with torch.no_grad():
            ids = model.greedy(x, max_len=self.max_len) if beam <= 1 else \
                model.beam_search(x, beam_size=beam, max_len=self.max_len)
        stats = CaptionStats(self.vocab)
        return {"caption": [" ".join(stats.words(row)) for row in ids.tolist()]}

    def served_schema(self, example: np.ndarray, model_meta: Mapping[str, Any]) -> tuple[list[TensorSpec],
                                                                                          list[TensorSpec]]:
        return [TensorSpec("uint8", (-1, *example.shape[1:]))], [TensorSpec("string", (-1,), "caption")]

    def served_params(self) -> dict[str, Any]:
        return dict(SERVED_PARAMS)

    def report(self, predictions: np.ndarray, targets: np.ndarray, classes: Sequence[str],
               history: Mapping[str, Sequence[tuple[int, float]]], title: str) -> Report:
        from components.plots import curves_figure

        return Report(figures={"plots/curves.png": curves_figure(history, title)})
