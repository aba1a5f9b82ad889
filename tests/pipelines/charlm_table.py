"""The charlm comparison: every architecture on the same budget (the same characters trained on), one table.

    .venv/bin/python tests/pipelines/charlm_table.py                          # the default recipe, 4 archs
    .venv/bin/python tests/pipelines/charlm_table.py train.epochs=1 -- rnn lstm  # overrides, then archs

Runs ``visionray run charlm charlm.arch=A <overrides> registry.enabled=false`` for each architecture in
its own store under ``$CHARLM_TABLE_DIR`` (default /tmp/charlm-table), one after the other, and prints a
Markdown table read back from MLflow: test bits per character, the n-gram baseline on the same split,
parameters, characters per second in training and wall time. The transformer gets ``charlm.hidden=128``
(its width; 256 would be four times the parameters of the others' embedding path).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ARCH_OPTIONS = {"transformer": ["charlm.hidden=128", "train.lr=0.001"]}


def run(arch: str, overrides: list[str], root: Path) -> dict:
    from mlflow import MlflowClient

    store = root / arch
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store}/mlruns/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipelines", "run", "charlm", f"charlm.arch={arch}",
                           *ARCH_OPTIONS.get(arch, []), *overrides, "registry.enabled=false"],
                          cwd=store, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (store / "log.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return {"arch": arch, "error": f"exit {done.returncode}, see {store / 'log.txt'}"}
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("visionray/charlm")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    train = next(r for r in runs if r.data.tags.get("visionray.stage") == "train"
                 and r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    speeds = [m.value for m in client.get_metric_history(train.info.run_id, "perf/chars_per_s")]
    return {"arch": arch, "test_bpc": parent.data.metrics.get("test/bpc"),
            "baseline_bpc": parent.data.metrics.get("baseline/bpc"),
            "best_val_bpc": train.data.metrics.get("train/best_val_bpc"),
            "params": train.data.metrics.get("model/params"),
            "chars_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None, "wall_s": wall}


def main(argv: list[str]) -> int:
    overrides, archs = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    archs = archs or ["rnn", "gru", "lstm", "transformer"]
    root = Path(os.environ.get("CHARLM_TABLE_DIR", "/tmp/charlm-table"))
    rows = []
    for arch in archs:
        rows.append(run(arch, overrides, root))
        print(rows[-1], flush=True)
    print(f"\noverrides: {' '.join(overrides) or '(the default recipe)'}\n")
    print("| model | test bpc | n-gram baseline bpc | parameters | train chars/s (median epoch) | wall |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['arch']} | {r['error']} | | | | |")
            continue
        print(f"| {r['arch']} | {r['test_bpc']:.3f} | {r['baseline_bpc']:.3f} | {int(r['params'] or 0):,} | "
              f"{(r['chars_per_s'] or 0):,.0f} | {r['wall_s'] / 60:.1f} min |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
