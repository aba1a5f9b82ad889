"""Compression timing: each model alone in its own process, so a runtime's spinning threads cannot slow the
fp32 baseline; the drift flag; a failed method fails the run.

    .venv/bin/python -m pytest -q tests/pipelines/test_compress_timing.py
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from components.packaging import ModelSpec, load_package, save_package
from pipelines.flows.compress_timing import DRIFT_TOLERANCE, Clock


def load_spinning(model_dir: str):
    """The fp32 package, loaded by a runtime that leaves a thread spinning, as onnxruntime's pool does by
    default and inductor's OpenMP threads do after a compiled call (numpy releases the GIL: a real core's
    worth of work beside the model, not a lock)."""
    model, spec = load_package(model_dir)
    a = np.random.default_rng(0).random((128, 128))

    def spin():
        while True:
            a @ a

    threading.Thread(target=spin, name="spinner", daemon=True).start()
    return model, spec


@pytest.fixture(scope="module")
def fp32_package(tmp_path_factory):
    spec = ModelSpec(name="convnet", in_channels=1, num_classes=10, image_size=8,
                     classes=tuple(str(i) for i in range(10)), width=4, dropout=0.0)
    return str(save_package(tmp_path_factory.mktemp("pkg") / "fp32", spec.build(), spec))


@pytest.mark.slow  # three fresh Python processes, each importing torch
def test_the_baseline_is_timed_where_no_variant_runtime_ever_ran(fp32_package):
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    clock = Clock(threads=1, repeats=3, images=images)
    before = clock.baseline(fp32_package)
    spun = clock.time(fp32_package, loader=f"{__name__}:load_spinning")
    after = clock.baseline(fp32_package)
    # the spinning runtime really ran, and left its thread working in its own process ...
    assert "spinner" in spun["threads"]
    # ... which was neither process that timed the baseline, before or after it: nothing of it was there
    assert len({before["pid"], spun["pid"], after["pid"]}) == 3
    assert "spinner" not in before["threads"] and "spinner" not in after["threads"]
    # medians per batch size, real timings (a call on 64 images cannot take 0 ms)
    assert set(before["ms"]) == {1, 64} and all(ms > 0 for ms in before["ms"].values())
    assert clock.eager == [before, after]
    assert clock.drift() == pytest.approx(abs(after["ms"][64] - before["ms"][64]) / before["ms"][64])


def test_a_baseline_that_moves_between_start_and_end_is_flagged():
    clock = Clock(threads=1, repeats=1, images=np.zeros((1, 8, 8, 1), np.uint8))
    clock.eager = [{"ms": {1: 0.4, 64: 5.0}}, {"ms": {1: 0.9, 64: 5.0 * (1 + DRIFT_TOLERANCE / 2)}}]
    assert not clock.drifted()  # batch 1 is reported, not flagged on; batch 64 moved within the tolerance
    clock.eager.append({"ms": {1: 0.4, 64: 5.0 * (1 + 2 * DRIFT_TOLERANCE)}})
    assert clock.drifted() and clock.drift() == pytest.approx(2 * DRIFT_TOLERANCE)


def test_a_failed_method_fails_the_run_after_the_others_naming_it():
    from pipelines.flows.compress import MethodsFailed

    error = MethodsFailed({"onnx": "RuntimeError: logits differ"})
    assert isinstance(error, RuntimeError) and "onnx (RuntimeError: logits differ)" in str(error)
    assert "other variants are registered" in str(error)
