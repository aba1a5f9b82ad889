"""Count-based baseline for character language models: an n-gram model with add-k smoothing.

    >>> import numpy as np
    >>> from components.text_baselines import NGramModel
    >>> rng = np.random.default_rng(0)
    >>> train, val = rng.integers(0, 82, 100_000), rng.integers(0, 82, 10_000)
    >>> k, per_k = NGramModel.tune_k(train, val, order=3, vocab_size=82)   # pick k on held-out text
    >>> bpc = NGramModel(order=3, k=k, vocab_size=82).fit(train).bits_per_char(val)   # ~log2(82) on noise

The bpc is comparable with :func:`components.models.charlm.bits_per_char`: both average over ``ids[1:]``.

Everything is vectorised: a context of ``order - 1`` ids is one int64 in base ``vocab_size + 1`` (the extra
digit pads the start of a sequence, so a short context never collides with a full one); the counts are
``np.unique`` over those codes and the look-ups ``np.searchsorted``. No Python loop runs over positions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class NGramModel:
    """Character n-gram model with add-k smoothing (order 5 by default):
    ``P(c | previous order-1 chars) = (count(ctx, c) + k) / (count(ctx) + k V)``.
    The first order-1 positions of a sequence use the shorter context they have. ``vocab_size=None`` takes
    ``max(ids) + 1`` of the ids given to :meth:`fit`."""

    def __init__(self, order: int = 5, k: float = 0.1, vocab_size: int | None = None) -> None:
        if order < 1 or k <= 0:
            raise ValueError(f"order must be >= 1 and k > 0, got order={order}, k={k}")
        self.order, self.k, self.vocab_size = order, k, vocab_size

    def _contexts(self, ids: np.ndarray) -> np.ndarray:
        """Code of the (order-1)-id context before each position; positions near the start are padded with
        the digit ``V`` (an id no sequence holds), so ``(a, b)`` at the start differs from ``(V, a, b)``."""
        V, m = self.vocab_size, self.order - 1
        if (V + 1) ** m * V >= 2 ** 63:
            raise ValueError(f"order {self.order} with vocab_size {V} overflows an int64 code")
        padded = np.concatenate([np.full(m, V, np.int64), ids])
        code = np.zeros(len(ids), np.int64)
        for j in range(m):  # a loop over the context's digits, not over positions
            code = code * (V + 1) + padded[j:j + len(ids)]
        return code

    def _check(self, ids: np.ndarray) -> np.ndarray:
        if self.vocab_size is None:
            raise ValueError("vocab_size is unknown: pass it or call fit first")
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or (len(ids) and (ids.min() < 0 or ids.max() >= self.vocab_size)):
            raise ValueError(f"ids must be a 1-d array of ids in [0, {self.vocab_size})")
        return ids

    def fit(self, ids: np.ndarray) -> NGramModel:
        """Count every (context, id) pair and every context in ``ids`` (replacing earlier counts)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            raise ValueError("fit needs at least one id")
        if self.vocab_size is None:
            self.vocab_size = int(ids.max()) + 1
        ctx = self._contexts(self._check(ids))
        self.ctx_keys, self.ctx_counts = np.unique(ctx, return_counts=True)
        self.pair_keys, self.pair_counts = np.unique(ctx * self.vocab_size + ids, return_counts=True)
        return self

    @staticmethod
    def _lookup(keys: np.ndarray, counts: np.ndarray, query: np.ndarray) -> np.ndarray:
        # Searching sorted queries walks `keys` in order: ~7x faster than random probes on millions of ids.
        order = np.argsort(query)
        at = np.empty_like(order)
        at[order] = np.minimum(np.searchsorted(keys, query[order]), len(keys) - 1)
        return np.where(keys[at] == query, counts[at], 0)

    def _probs_at(self, ctx: np.ndarray, ids: np.ndarray) -> np.ndarray:
        pair = self._lookup(self.pair_keys, self.pair_counts, ctx * self.vocab_size + ids)
        total = self._lookup(self.ctx_keys, self.ctx_counts, ctx)
        return (pair + self.k) / (total + self.k * self.vocab_size)

    def probs(self, context: Sequence[int]) -> np.ndarray:
        """P(c | context) for every c (shape (V,)); a context shorter than order-1 means the sequence start."""
        context = self._check(context)
        context = context[max(0, len(context) - (self.order - 1)):]
        ctx = self._contexts(np.append(context, 0))[-1]  # the context code of the id after `context`
        return self._probs_at(np.full(self.vocab_size, ctx), np.arange(self.vocab_size))

    def bits_per_char(self, ids: np.ndarray) -> float:
        """Mean -log2 P over ``ids[1:]`` (every id after the first), like the neural models' bits_per_char."""
        ids = self._check(ids)
        if len(ids) < 2:
            raise ValueError("bits_per_char needs at least 2 ids")
        return float(-np.log2(self._probs_at(self._contexts(ids), ids)[1:]).mean())

    @staticmethod
    def tune_k(train_ids: np.ndarray, val_ids: np.ndarray, order: int = 5, vocab_size: int | None = None,
               grid: Sequence[float] = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)) -> tuple[float, dict[float, float]]:
        """The k in ``grid`` with the lowest validation bpc, and every k's validation bpc. The counts do not
        depend on k, so they are taken once."""
        if vocab_size is None:
            vocab_size = int(max(np.max(train_ids), np.max(val_ids))) + 1
        model = NGramModel(order, grid[0], vocab_size).fit(train_ids)
        scores = {}
        for k in grid:
            model.k = k
            scores[k] = model.bits_per_char(val_ids)
        return min(scores, key=scores.get), scores
