"""Each compressed variant timed alone, in a fresh process, against an fp32 baseline timed alone too.

    clock = Clock(threads=2, repeats=20, images=test_images)
    clock.baseline(source_dir)                      # fp32 eager alone, at the start
    clock.baseline(source_dir, mode="compiled")     # the same weights under torch.compile
    timing = clock.time(variant_dir)                # one process per variant
    clock.baseline(source_dir)                      # fp32 eager again, at the end: the drift check

Why a process each: a runtime keeps working after it returns (onnxruntime's pool spins waiting for the
next call, inductor's OpenMP threads spin after a compiled call), and a process that has run one model
times the next one slower. A fresh process starts with no runtime but the one it times and ends before
the next starts. The fp32 baseline is timed at the
start and at the end; when the two differ by more than :data:`DRIFT_TOLERANCE` the machine's load
changed during the run and its speed-ups are flagged (``compress/baseline_drift``, tag
``visionray.compress.baseline_drift``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: |end − start| / start of the two fp32 timings above which a run's speed-ups are flagged
DRIFT_TOLERANCE = 0.10
BATCHES = (1, 64)


def time_alone(model_dir: str, images: np.ndarray, threads: int, repeats: int, mode: str = "eager",
               loader: str | None = None) -> dict[str, Any]:
    """:func:`components.compression.latency.time_package` in a fresh Python process (a new interpreter,
    not a fork: a forked child would inherit this process's thread pools and Ray's threads)."""
    with tempfile.TemporaryDirectory(prefix="visionray-timing-") as tmp:
        np.save(Path(tmp, "images.npy"), np.ascontiguousarray(images[:max(BATCHES)]))
        Path(tmp, "args.json").write_text(json.dumps({"model_dir": str(model_dir), "threads": threads,
                                                      "batches": BATCHES, "repeats": repeats, "mode": mode,
                                                      "loader": loader}))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        done = subprocess.run([sys.executable, "-c", f"from {__name__} import _child; _child({tmp!r})"],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"timing {model_dir} ({mode}) failed in its process: "
                               f"{(done.stderr.strip().splitlines() or ['exit ' + str(done.returncode)])[-1]}")
        timing = json.loads(Path(tmp, "timing.json").read_text())
    timing["ms"] = {int(b): ms for b, ms in timing["ms"].items()}
    return timing


def _child(tmp: str) -> None:
    """The timing process's body: arguments and result as files in ``tmp``."""
    from components.compression.latency import time_package

    args = json.loads(Path(tmp, "args.json").read_text())
    timing = time_package(args["model_dir"], np.load(Path(tmp, "images.npy")), args["threads"],
                          tuple(args["batches"]), args["repeats"], args["mode"], args["loader"])
    Path(tmp, "timing.json").write_text(json.dumps(timing))


@dataclass
class Clock:
    """The timings of one compress run: baselines and variants, each in its own process."""

    threads: int
    repeats: int
    images: np.ndarray
    eager: list[dict[str, Any]] = field(default_factory=list)  # fp32 eager timings, in order
    compiled: dict[str, Any] | None = None

    def baseline(self, source_dir: str, mode: str = "eager") -> dict[str, Any]:
        timing = time_alone(source_dir, self.images, self.threads, self.repeats, mode)
        if mode == "compiled":
            self.compiled = timing
        else:
            self.eager.append(timing)
        return timing

    def time(self, model_dir: str, mode: str = "eager", loader: str | None = None) -> dict[str, Any]:
        return time_alone(model_dir, self.images, self.threads, self.repeats, mode, loader)

    def drift(self) -> float:
        """The largest relative change of the fp32 baseline at batch 64 (the headline speed-up's) between its
        first timing and a later one (0: one timing). Batch 1 calls last a fraction of a millisecond and
        move more with the neighbours' load; they are reported, not used to flag."""
        b = max(BATCHES)
        first = self.eager[0]["ms"][b]
        return max((abs(t["ms"][b] - first) / first for t in self.eager[1:]), default=0.0)

    def drifted(self) -> bool:
        return self.drift() > DRIFT_TOLERANCE
