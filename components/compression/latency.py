"""Latency of a served model: raw uint8 images in (``predict_uint8``), median of timed repeats.

Every variant is timed the same way, at the same batch sizes and with the same torch / onnxruntime
thread count, so ratios between variants are what the methods change, not how they were called.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import numpy as np
import torch


def _batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    x = np.ascontiguousarray(images[:batch])
    if len(x) < batch:
        x = np.concatenate([x] * (batch // max(1, len(x)) + 1))[:batch]
    return x


def _timed_ms(model, x: np.ndarray, bf16: bool) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
        started = time.perf_counter()
        model.predict_uint8(x)
        return (time.perf_counter() - started) * 1000


def latency_ms(model, images: np.ndarray, batch: int, repeats: int = 20, warmup: int = 3,
               bf16: bool = False) -> float:
    """Median milliseconds of one ``predict_uint8`` call on ``batch`` images."""
    return paired_latency_ms([model], images, batch, repeats, warmup, [bf16])[0]


def paired_latency_ms(models, images: np.ndarray, batch: int, repeats: int = 20, warmup: int = 3,
                      bf16: list[bool] | None = None, block: int = 5) -> list[float]:
    """Median milliseconds per model, the models timed in alternating blocks (A×block B×block A×block …):
    on a shared machine a change of load hits every model alike, so the ratio of two medians is a
    side-by-side figure even when the absolute times drift. Within a block the first call after a
    switch is not timed: it pays for the other model having just evicted this one's weights and
    workspaces from the caches, which a server running one model does not. ``warmup`` calls per model
    come first, untimed."""
    x = _batch_of(images, batch)
    flags = bf16 or [False] * len(models)
    for j, model in enumerate(models):
        for _ in range(warmup):
            _timed_ms(model, x, flags[j])
    times: list[list[float]] = [[] for _ in models]
    block = max(1, block)
    while len(times[0]) < repeats:
        for j, model in enumerate(models):
            _timed_ms(model, x, flags[j])  # the switch-over call
            for _ in range(min(block, repeats - len(times[j]))):
                times[j].append(_timed_ms(model, x, flags[j]))
    return [statistics.median(t) for t in times]
