"""Start-up with and without a warm local Ray, alternating, each run a fresh `visionray run` process.

    .venv/bin/python tests/pipelines/warmstart.py 2                      # 2 rounds of the 1-epoch quickstart
    .venv/bin/python tests/pipelines/warmstart.py 3 data=digits          # more overrides after the rounds
    .venv/bin/python tests/pipelines/warmstart.py --preload 3            # cold runs, workers preloading or not

Each round runs ``visionray run quickstart train.epochs=1 registry.enabled=false …`` twice in one fresh
store: cold (no warm runtime: the run starts and stops its own embedded Ray) and warm (attached to the Ray
of one ``visionray up`` made before the first round, stopped by ``visionray down`` at the end); the side
that goes first alternates. From each run's MLflow parent row it reads ``perf/startup_s`` (the process's
start to the first training step) and its phases, and prints the per-side medians and every run's phases.
Start-up does not depend on the epochs, so one epoch measures the quickstart's own. ``--preload`` compares
two cold sides instead: the worker processes Ray starts ahead importing torch and the training code
(``RAY_preload_python_modules``) and not (Ray's default; measured slower and larger, so not the default).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipelines.services import names  # noqa: E402


def cli(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=1800)


def startup_of(uri: str, run_id: str) -> dict[str, float]:
    import mlflow

    metrics = mlflow.MlflowClient(uri).get_run(run_id).data.metrics
    return {k: v for k, v in metrics.items() if k.startswith("perf/startup") or k == names.PEAK_MEMORY_GIB}


def main(argv: list[str]) -> int:
    preload = argv[:1] == ["--preload"]
    argv = argv[1:] if preload else argv
    rounds = int(argv[0]) if argv else 2
    overrides = ["train.epochs=1", "registry.enabled=false", *argv[1:]]
    root = Path(tempfile.mkdtemp(prefix="vr-warmstart-"))
    uri = f"sqlite:///{root}/mlflow.db"
    base = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)}
    base.pop("RAY_ADDRESS", None)
    cold_env = {**base, "VISIONRAY_STATE_DIR": str(root / "no-warm")}
    warm_env = {**base, "VISIONRAY_STATE_DIR": str(root / "warm")}
    if preload:  # A: Ray's default, B: preloading; both cold
        a, b = "cold, no preload", "cold, preload"
        envs = {a: {**cold_env, "RAY_preload_python_modules": ""},
                b: {**cold_env, "RAY_preload_python_modules": "torch,ray.train.torch,pipelines.stages.train"}}
    else:
        a, b = "cold", "warm"
        envs = {a: cold_env, b: warm_env}
        up = cli("up", env=warm_env, cwd=root)
        if up.returncode != 0:
            print(up.stdout, up.stderr, file=sys.stderr)
            return 1
        print(up.stdout.strip(), flush=True)
    seen: dict[str, list[dict[str, float]]] = {a: [], b: []}
    import mlflow

    client = mlflow.MlflowClient(uri)
    try:
        for r in range(rounds):
            for side in ((a, b) if r % 2 == 0 else (b, a)):
                done = cli("run", "quickstart", *overrides, env=envs[side], cwd=root)
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    return 1
                latest = client.search_runs(client.get_experiment_by_name("visionray/quickstart").experiment_id,
                                            filter_string="tags.mlflow.parentRunId IS NULL",
                                            order_by=["attributes.start_time DESC"], max_results=1)[0]
                got = startup_of(uri, latest.info.run_id)
                seen[side].append(got)
                phases = ", ".join(f"{k.removeprefix(names.STARTUP_PHASE_PREFIX).removesuffix('_s')} {v:.1f}"
                                   for k, v in sorted(got.items()) if k.startswith(names.STARTUP_PHASE_PREFIX))
                print(f"round {r + 1} {side}: perf/startup_s {got[names.STARTUP_SECONDS]:.1f} ({phases}); "
                      f"peak memory {got.get(names.PEAK_MEMORY_GIB, float('nan')):.2f} GiB", flush=True)
    finally:
        if not preload:
            cli("down", env=warm_env, cwd=root)
    medians = {side: {k: statistics.median(m.get(k, 0.0) for m in runs) for k in runs[0]}
               for side, runs in seen.items()}
    print(f"median perf/startup_s: {a} {medians[a][names.STARTUP_SECONDS]:.1f} s, {b} "
          f"{medians[b][names.STARTUP_SECONDS]:.1f} s "
          f"({medians[b][names.STARTUP_SECONDS] / medians[a][names.STARTUP_SECONDS]:.2f}x); peak memory "
          f"{medians[a].get(names.PEAK_MEMORY_GIB, 0.0):.2f} and {medians[b].get(names.PEAK_MEMORY_GIB, 0.0):.2f} GiB")
    for phase in sorted(set(medians[a]) | set(medians[b])):
        if phase.startswith(names.STARTUP_PHASE_PREFIX):
            label = phase.removeprefix(names.STARTUP_PHASE_PREFIX).removesuffix("_s")
            print(f"  {label:14s} {medians[a].get(phase, 0.0):5.1f} -> {medians[b].get(phase, 0.0):5.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
