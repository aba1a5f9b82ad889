"""Variants of one pipeline side by side at the same budget, one Markdown table read back from MLflow.

    .venv/bin/python tests/pipelines/compare.py charlm                        # rnn, gru, lstm, transformer
    .venv/bin/python tests/pipelines/compare.py charlm train.epochs=3 -- rnn lstm   # overrides, then variants
    .venv/bin/python tests/pipelines/compare.py caption                       # with and without attention

Runs ``visionray run PIPELINE <variant's overrides> <overrides> registry.enabled=false`` for each variant in
its own store under ``$COMPARE_DIR/PIPELINE`` (default /tmp/compare), one after the other (never two at
once: they would share the cores), and prints each variant's figures: the parent run's test metrics, the
train stage's best val epoch, parameters, median training throughput and wall time. charlm's transformer
gets ``charlm.hidden=128`` (its width; more would be several times the others' parameters) and a lower rate.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

#: pipeline → (variants → their overrides, the columns: (header, metric, run it is on: parent | train))
PRESETS = {
    "charlm": ({"rnn": ["charlm.arch=rnn"], "gru": ["charlm.arch=gru"], "lstm": ["charlm.arch=lstm"],
                "transformer": ["charlm.arch=transformer", "charlm.hidden=128", "train.lr=0.001"]},
               [("test bpc", "test/bpc", "parent"), ("best val bpc", "train/best_val_bpc", "train"),
                ("n-gram baseline bpc", "baseline/bpc", "parent"), ("parameters", "model/params", "train"),
                ("train chars/s (median epoch)", "perf/chars_per_s", "train")]),
    "caption": ({"attention": ["caption.attention=true"], "no attention": ["caption.attention=false"]},
                [("test BLEU-4", "test/bleu4", "parent"), ("test mention F1", "test/mention_f1", "parent"),
                 ("best val BLEU-4", "train/best_val_bleu4", "train"), ("parameters", "model/params", "train"),
                 ("train img/s (median epoch)", "perf/images_per_s", "train")]),
}


def run(pipeline: str, variant: str, overrides: list[str], root: Path) -> dict:
    from mlflow import MlflowClient

    variants, columns = PRESETS[pipeline]
    store = root / pipeline / variant.replace(" ", "-")
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store}/mlruns/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipelines", "run", pipeline, *variants[variant], *overrides,
                           "registry.enabled=false"], cwd=store, env=env, capture_output=True, text=True)
    row = {"variant": variant, "wall_s": time.perf_counter() - started}
    (store / "log.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return {**row, "error": f"exit {done.returncode}, see {store / 'log.txt'}"}
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(f"visionray/{pipeline}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    train = next(r for r in runs if r.data.tags.get("visionray.stage") == "train"
                 and r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    for header, metric, where in columns:
        source = parent if where == "parent" else train
        if metric.startswith("perf/"):  # a per-epoch curve: its median
            values = sorted(m.value for m in client.get_metric_history(source.info.run_id, metric))
            row[header] = values[len(values) // 2] if values else None
        else:
            row[header] = source.data.metrics.get(metric)
    return row


def _cell(value) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in PRESETS:
        print(f"usage: compare.py {{{','.join(PRESETS)}}} [overrides] [-- variants]", file=sys.stderr)
        return 2
    pipeline, argv = argv[0], argv[1:]
    overrides, chosen = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    variants, columns = PRESETS[pipeline]
    root = Path(os.environ.get("COMPARE_DIR", "/tmp/compare"))
    rows = []
    for variant in chosen or list(variants):
        rows.append(run(pipeline, variant, overrides, root))
        print(rows[-1], flush=True)
    print(f"\n{pipeline}, overrides: {' '.join(overrides) or '(the default recipe)'}\n")
    headers = [h for h, _, _ in columns]
    print("| variant | " + " | ".join(headers) + " | wall |")
    print("|---" * (len(headers) + 2) + "|")
    for r in rows:
        cells = [r["error"]] + [""] * (len(headers) - 1) if "error" in r else [_cell(r.get(h)) for h in headers]
        print(f"| {r['variant']} | " + " | ".join(cells) + f" | {r['wall_s'] / 60:.1f} min |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
