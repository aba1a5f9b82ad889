"""Latency of a served model: raw uint8 images in (``predict_uint8``), median of timed repeats.

Every variant is timed the same way, at the same batch sizes and with the same torch / onnxruntime
thread count, so ratios between variants are what the methods change, not how they were called.

:func:`time_package` times one model package *alone*: the compress pipeline calls it in a fresh process
per model (``pipelines/flows/compress_timing.py``), because a runtime leaves work behind in the process
that ran it — onnxruntime's pool spins between calls, inductor's OpenMP threads spin after a compiled
call — and a model timed beside another is partly timing its neighbour::

    timing = time_package("variants/int8_static", images, threads=2, batches=(1, 64), repeats=20)
    timing["ms"][64], timing["fallback"], timing["threads"]
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

#: how a package is run: its own runtime; the same fp32 weights under torch.compile (inductor, frozen
#: weights: the compiled fp32 baseline int8 is also judged against); or under bf16 autocast
MODES = ("eager", "compiled", "bf16")


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
    """Median milliseconds of one ``predict_uint8`` call on ``batch`` images, after ``warmup`` untimed calls."""
    x = _batch_of(images, batch)
    for _ in range(warmup):
        _timed_ms(model, x, bf16)
    return statistics.median(_timed_ms(model, x, bf16) for _ in range(repeats))


def compile_fp32(model: torch.nn.Module) -> torch.nn.Module:
    """The fp32 classifier with its forward compiled by inductor, weights frozen into the graph (as int8's
    runtime compiles, so the two are compared like for like); one static graph per batch size."""
    compiled = torch.compile(model.forward, dynamic=False)

    def forward(x):
        # freezing is read when a graph is first compiled; predict_uint8 runs under inference mode, which
        # inductor's freezing passes accept for plain fp32 ops
        with torch._inductor.config.patch(freezing=True):
            return compiled(x)

    model.forward = forward
    return model


def fallback_of(model: Any) -> str | None:
    """The slower path a loaded model fell back to, if any: int8's runtime runs its uncompiled graph when
    inductor cannot compile it (``quantize.Compiled.fallback``)."""
    run = getattr(model, "run", None)
    if getattr(run, "fallback", None) is not None:
        return "int8 uncompiled graph (torch.compile failed)"
    return None


def _cpu_while_idle(seconds: float = 0.2) -> float:
    """CPU-seconds this process burns per second while its main thread sleeps: ≈ 0 unless a thread
    left behind by a runtime spins."""
    started = time.process_time()
    time.sleep(seconds)
    return (time.process_time() - started) / seconds


def time_package(model_dir: str, images: np.ndarray, threads: int, batches: tuple[int, ...] = (1, 64),
                 repeats: int = 20, mode: str = "eager", loader: str | None = None) -> dict[str, Any]:
    """Loads ``model_dir`` in this process with ``threads`` torch and onnxruntime threads and times it alone.

    ``repeats`` timed calls at the largest batch and 5x as many at smaller ones (they are short), each
    after 3 untimed warm-up calls (the first of a compiled model compiles). Returns the median ms per
    batch size, the slower path the runtime fell back to (or None), the threads alive after timing, the
    process's CPU use while idle right after (what its runtime leaves spinning), and its pid. ``loader`` ("module:function", default
    :func:`components.packaging.load_package`) loads the model from ``model_dir``."""
    import importlib

    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: expected one of {MODES}")
    torch.set_num_threads(threads)  # before loading: an onnxruntime session takes torch's count
    module, _, function = (loader or "components.packaging:load_package").partition(":")
    model, _ = getattr(importlib.import_module(module), function)(model_dir)
    if mode == "compiled":
        model = compile_fp32(model)
    ms = {}
    for batch in sorted(batches, reverse=True):  # the largest first: its warm-up also warms the caches
        ms[batch] = latency_ms(model, images, batch, repeats if batch == max(batches) else repeats * 5,
                               bf16=mode == "bf16")
    return {"ms": ms, "fallback": fallback_of(model), "pid": os.getpid(),
            "threads": sorted(t.name for t in threading.enumerate()), "idle_cpu": _cpu_while_idle()}
