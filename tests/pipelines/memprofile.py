"""Where a pipeline's peak memory goes: every process of a `visionray run`, sampled, at the peak.

    .venv/bin/python tests/pipelines/memprofile.py quickstart                 # any pipeline and overrides
    .venv/bin/python tests/pipelines/memprofile.py quickstart data=digits train.epochs=2
    .venv/bin/python tests/pipelines/memprofile.py --image-folder 4000 quickstart   # a folder of PNGs

Runs the command in a fresh process (its own MLflow store in a temporary directory) and samples the PSS
of it and all its descendants every 0.5 s, the way ``perf/peak_memory_gib`` sums them. Prints, for the
sample with the largest total, each kind of process (the driver, Ray's GCS, raylet, dashboard and agents,
Ray Train workers, Ray Data's actors and task workers, idle workers), how many and their PSS, and how many
Ray worker processes were ever started. ``--image-folder N`` first writes N Fashion-MNIST training images
as PNG files, one sub-folder per class, and runs on them (``data=image_folder``, the folder's defaults:
32×32 RGB).
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def kind(p: psutil.Process, driver: int) -> str:
    if p.pid == driver:
        return "driver (visionray run)"
    try:
        name, cmd = p.name(), " ".join(p.cmdline())
    except psutil.Error:
        return "gone"
    if name in ("gcs_server", "raylet"):
        return name
    for key in ("dashboard/dashboard.py", "dashboard/agent.py", "runtime_env/agent", "log_monitor", "monitor.py"):
        if key in cmd:
            return key.split("/")[-1].removesuffix(".py")
    title = re.match(r"ray::(\w+)", cmd)
    if title:
        return f"ray::{title.group(1)}"
    return name


def write_image_folder(folder: Path, n: int) -> None:
    """``n`` Fashion-MNIST training images as ``folder/<class>/<i>.png``."""
    from PIL import Image

    from components.data.sources.fashion_mnist import (
        FASHION_MNIST_CLASSES,
        fashion_mnist,
    )

    train = fashion_mnist().splits["train"]
    for i in range(n):
        directory = folder / FASHION_MNIST_CLASSES[int(train.labels[i])].replace("/", "-")
        directory.mkdir(parents=True, exist_ok=True)
        Image.fromarray(train.images[i].reshape(28, 28)).save(directory / f"{i:06d}.png")


def main(argv: list[str]) -> int:
    root = Path(tempfile.mkdtemp(prefix="vr-mem-"))
    if argv[:1] == ["--image-folder"]:
        write_image_folder(root / "photos", int(argv[1]))
        argv = [*argv[2:], "data=image_folder", f"data.path={root / 'photos'}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "PYTHONPATH": str(ROOT),
           "VISIONRAY_STATE_DIR": str(root / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", "run", *argv], env=env, cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    driver = psutil.Process(proc.pid)
    peak: tuple[int, dict[str, list[int]]] = (0, {})
    workers_seen: set[tuple[int, float]] = set()
    while proc.poll() is None:
        sample: dict[str, list[int]] = collections.defaultdict(list)
        try:
            tree = [driver, *driver.children(recursive=True)]
        except psutil.Error:
            break
        for p in tree:
            try:
                pss = p.memory_full_info().pss
                k = kind(p, proc.pid)
                if k.startswith("ray::"):
                    workers_seen.add((p.pid, p.create_time()))
            except psutil.Error:
                continue
            sample[k].append(pss)
        total = sum(sum(v) for v in sample.values())
        if total > peak[0]:
            peak = (total, dict(sample))
        time.sleep(0.5)
    err = proc.stderr.read() if proc.stderr else ""
    logged = re.findall(r"peak memory of all processes ([\d.]+) GiB", err)
    if proc.returncode != 0:
        print(err[-3000:], file=sys.stderr)
    print(f"exit {proc.returncode}; the run's own perf/peak_memory_gib: {logged[-1] if logged else '?'} GiB")
    print(f"peak of the samples here: {peak[0] / 2**30:.2f} GiB; Ray worker processes started: {len(workers_seen)}")
    for k, values in sorted(peak[1].items(), key=lambda kv: -sum(kv[1])):
        print(f"  {sum(values) / 2**20:8.0f} MiB  {len(values):3d} x {k}")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
