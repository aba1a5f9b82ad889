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


def latency_ms(model, images: np.ndarray, batch: int, repeats: int = 20, warmup: int = 3,
               bf16: bool = False) -> float:
    """Median milliseconds of one ``predict_uint8`` call on ``batch`` images."""
    x = np.ascontiguousarray(images[:batch])
    if len(x) < batch:
        x = np.concatenate([x] * (batch // max(1, len(x)) + 1))[:batch]
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext
    times = []
    for i in range(warmup + repeats):
        with ctx():
            started = time.perf_counter()
            model.predict_uint8(x)
            elapsed = time.perf_counter() - started
        if i >= warmup:
            times.append(elapsed * 1000)
    return statistics.median(times)
