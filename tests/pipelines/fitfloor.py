"""What a Ray Train fit() costs beyond its epochs, A/B over Ray settings, alternating in fresh processes.

    .venv/bin/python tests/pipelines/fitfloor.py 3                       # 3 rounds, ~1 min each on 2 cores
    .venv/bin/python tests/pipelines/fitfloor.py 3 RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=2.0
    .venv/bin/python tests/pipelines/fitfloor.py --prestart 2           # can a fit reuse warmed processes?
    .venv/bin/python tests/pipelines/fitfloor.py --idle 3               # the CPU a fit's start leaves idle

Each round runs, in a fresh process per side (Ray reads its settings when a process starts): side A with
the given ``KEY=VALUE`` settings (default: Ray's own 2 s health-check interval), side B with visionray's
``RAY_ENV`` as is. Per side: a local Ray, two fits of a loop that only reports (the floor), then the
digits quickstart's train stage (2 epochs, 2 workers): its wall time and its steady img/s (the in-loop
speed, which must not move). Prints medians per side; the machine is shared, so read the ratios.

``--prestart``: in one driver, no-op fits alternating cold and warmed: before a warmed fit, two tasks with
Ray Train's worker runtime env (the propagated ``RAY_TRAIN_*`` variables) import torch and
``ray.train.torch`` and return their pids, leaving two idle pool processes that Ray Train's worker actors
could take. Prints each fit's seconds and whether its ranks ran in the warmed processes.

``--idle``: in one driver on a running Ray, no-op fits while a thread samples the machine's idle CPU time
(``/proc/stat``, every 50 ms): the core-seconds the fit's start leaves unused. That is the most that
overlapping the driver's own work (tracking, ingest, preprocessing) with a worker group's start could
take off a run's start-up on this machine.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, logging, re, sys, time, io, contextlib
sys.path.insert(0, sys.argv[1])
import ray, ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from pipelines.services.runtime import init_local
from pipelines.dispatch import run_pipeline
from tests.conftest import shrunk_config

init_local(2, logging_level=logging.WARNING)
floor = []
for i in range(2):
    t = time.perf_counter()
    TorchTrainer(lambda c: ray.train.report({"x": 1}), scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(storage_path=sys.argv[2], name=f"noop{i}")).fit()
    floor.append(time.perf_counter() - t)
cfg = shrunk_config("quickstart", "stages=[ingest,preprocess,train]", "tracking.uri=sqlite:///" + sys.argv[2] + "/m.db")
out = io.StringIO()
t = time.perf_counter()
with contextlib.redirect_stdout(out):
    run_pipeline(cfg, command="fitfloor")
stage = time.perf_counter() - t
speeds = [float(s) for s in re.findall(r"epoch 2/2 done.* (\d+) img/s", out.getvalue())]
print("RESULT " + json.dumps({"noop_fit_s": min(floor), "quickstart_s": stage,
                              "img_per_s": speeds[-1] if speeds else None}))
"""


PRESTART = r"""
import logging, os, sys, time
sys.path.insert(0, sys.argv[1])
import ray, ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.constants import get_env_vars_to_propagate
from pipelines.services.runtime import init_local

init_local(2, logging_level=logging.WARNING)
OUT = sys.argv[2]  # the loop runs in Ray's worker processes: a global, pickled with it


@ray.remote(num_cpus=1)
def warm():
    import torch, ray.train.torch  # noqa: F401
    return os.getpid()


def loop(_config):
    with open(os.path.join(OUT, f"pid{ray.train.get_context().get_world_rank()}"), "w") as f:
        f.write(str(os.getpid()))
    ray.train.report({})


for i in range(2 * int(sys.argv[3])):
    mode = ("cold", "warmed")[i % 2]
    t = time.perf_counter()
    warmed = set(ray.get([warm.options(runtime_env={"env_vars": get_env_vars_to_propagate()}).remote()
                          for _ in range(2)])) if mode == "warmed" else set()
    TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(storage_path=sys.argv[2], name=f"fit{i}")).fit()
    ranks = {int(open(os.path.join(OUT, f"pid{k}")).read()) for k in (0, 1)}
    print(f"{mode:6s} fit {time.perf_counter() - t:5.1f} s (warm-up included); ranks in the warmed "
          f"processes: {len(ranks & warmed)} of 2", flush=True)
"""


IDLE = r"""
import logging, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
import ray, ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from pipelines.services.runtime import init_local

init_local(2, logging_level=logging.WARNING)
TICK = os.sysconf("SC_CLK_TCK")


def idle_seconds() -> float:
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return (int(fields[3]) + int(fields[4])) / TICK  # idle + iowait, all CPUs


for i in range(int(sys.argv[3]) + 1):
    time.sleep(3)  # the previous fit's processes gone
    idle0, t = idle_seconds(), time.perf_counter()
    TorchTrainer(lambda c: ray.train.report({}), scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(storage_path=sys.argv[2], name=f"fit{i}")).fit()
    seconds, idle = time.perf_counter() - t, idle_seconds() - idle0
    if i:  # the first fit also imports Ray Train into this driver
        print(f"fit {seconds:5.1f} s on {os.cpu_count()} CPUs: {idle:4.1f} CPU-seconds idle "
              f"({idle / (seconds * os.cpu_count()):.0%})", flush=True)
"""


def idle(rounds: int) -> int:
    with tempfile.TemporaryDirectory(prefix="idle-") as d:
        done = subprocess.run([sys.executable, "-c", IDLE, str(ROOT), d, str(rounds)], cwd=d,
                              capture_output=True, text=True, timeout=900)
    print("\n".join(x for x in done.stdout.splitlines() if x.startswith("fit ")) or done.stderr[-3000:])
    return done.returncode


def prestart(rounds: int) -> int:
    with tempfile.TemporaryDirectory(prefix="prestart-") as d:
        done = subprocess.run([sys.executable, "-c", PRESTART, str(ROOT), d, str(rounds)], cwd=d,
                              capture_output=True, text=True, timeout=900)
    print("\n".join(x for x in done.stdout.splitlines() if x.startswith(("cold", "warmed"))) or done.stderr[-3000:])
    return done.returncode


def side(settings: dict[str, str]) -> dict:
    env = {**os.environ, **settings}
    with tempfile.TemporaryDirectory(prefix="fitfloor-") as d:
        done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), d], cwd=d, env=env,
                              capture_output=True, text=True, timeout=900)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"a side failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(line[7:])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--idle"]:
        return idle(int(argv[1]) if len(argv) > 1 else 3)
    if argv[:1] == ["--prestart"]:
        return prestart(int(argv[1]) if len(argv) > 1 else 2)
    rounds = int(argv[0]) if argv else 3
    a = dict(kv.split("=", 1) for kv in argv[1:]) or {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0"}
    results: dict[str, list[dict]] = {"A": [], "B": []}
    for r in range(rounds):
        for name, settings in (("A", a), ("B", {})):
            t = time.perf_counter()
            results[name].append(side(settings))
            print(f"round {r + 1} {name}: {results[name][-1]} ({time.perf_counter() - t:.0f} s)", flush=True)
    print(f"A = {a}; B = visionray's RAY_ENV")
    for key in ("noop_fit_s", "quickstart_s", "img_per_s"):
        med = {n: statistics.median(x[key] for x in rs if x[key] is not None) for n, rs in results.items()}
        print(f"{key:14s} A {med['A']:8.1f}  B {med['B']:8.1f}  B/A {med['B'] / med['A']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
