"""Snapshot + EMA ensemble measured in one plain-PyTorch process (no Ray): the same components as the
``ensemble`` pipeline (build_training with the cyclic schedule, EMAHook, SnapshotHook, BatchNorm
recompute, the ensemble package), for when the machine is too loaded to start a Ray cluster.

    PYTHONPATH=. python -m tests.pipelines.ensemble_local data/fashion_mnist/<version>/manifest.json \
        --rows 6000 --epochs 6 --snapshots 3 --ema 0.99 --lr 0.05 --out /tmp/ens-local
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from components import engine
    from components.data.shards import Manifest, read_split
    from components.ensembles import (
        config_hooks,
        hook_outputs,
        recompute_batchnorm,
        save_ensemble_package,
    )
    from components.hooks import build_hooks, hook_dirname
    from components.losses import build_criterion
    from components.models import Normalize, accumulate_moments, finalize_moments
    from components.packaging import load_package, save_package
    from pipelines.config import load_config
    from pipelines.stages.evaluate import numpy_batches
    from pipelines.stages.preprocess import augment_from
    from pipelines.stages.train import build_training, model_spec

    p = argparse.ArgumentParser()
    p.add_argument("manifest")
    p.add_argument("--rows", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--snapshots", type=int, default=3)
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-rows", type=int, default=0, help="score on at most this many val/test rows (0: all)")
    p.add_argument("--out", default="ens-local")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    cfg = load_config("ensemble", [f"train.epochs={args.epochs}", f"train.snapshots={args.snapshots}",
                                   f"train.ema_decay={args.ema}", f"train.lr={args.lr}"])
    manifest = Manifest.load(args.manifest)
    train, val, test = (read_split(manifest, s) for s in ("train", "val", "test"))
    x_tr, y_tr = train.images[:args.rows], train.labels[:args.rows]
    mean, std = finalize_moments([accumulate_moments(x_tr)], cfg.data.normalization)
    spec = model_spec(cfg, manifest)
    torch.manual_seed(cfg.seed)
    model = spec.build(Normalize(mean, std)).to(memory_format=torch.channels_last)
    hooks = build_hooks(config_hooks(cfg.train.ema_decay, cfg.train.snapshots, cfg.train.epochs, spec))
    for h in hooks:
        h.setup(model)
    tc = cfg.train
    steps = int(np.ceil(args.rows / tc.batch_size))
    optimizer, scheduler, criterion, eval_criterion = build_training(tc, model, steps)
    augment = augment_from(cfg.data)
    extras = out / "extras"
    started = time.perf_counter()
    for epoch in range(tc.epochs):
        order = np.random.default_rng(cfg.seed * 1000 + epoch).permutation(args.rows)
        prep = engine.BatchPrep(augment, cfg.seed, epoch, channels_last=True)
        batches = (prep({"image": x_tr[order[i:i + tc.batch_size]], "label": y_tr[order[i:i + tc.batch_size]],
                         "idx": order[i:i + tc.batch_size]}) for i in range(0, args.rows, tc.batch_size))
        stats = engine.train_one_epoch(model, criterion, optimizer, batches, scheduler=scheduler,
                                       on_step=lambda s, _: [h.after_step(model, s) for h in hooks])
        for i, h in enumerate(hooks):
            d = extras / hook_dirname(i, h)
            d.mkdir(parents=True, exist_ok=True)
            h.end_epoch(model, epoch, d)
        print(f"epoch {epoch + 1}/{tc.epochs} loss {stats.loss:.4f} acc {stats.accuracy:.4f} "
              f"lr {optimizer.param_groups[0]['lr']:.4f} {time.perf_counter() - started:.0f}s", flush=True)
    raw = save_package(out / "raw", model, spec)
    found = hook_outputs(extras)
    ema, _ = load_package(found["ema"])
    rows_bn = np.sort(np.random.default_rng(cfg.seed).permutation(args.rows)[:cfg.ensemble.bn_rows])
    prep = engine.BatchPrep()
    recompute_batchnorm(ema, (prep({"image": x_tr[rows_bn[i:i + 256]], "label": y_tr[rows_bn[i:i + 256]]})[0]
                              for i in range(0, len(rows_bn), 256)))
    ema_dir = save_package(out / "ema", ema, spec)
    members = [(p.name, p) for p in found["snapshots"]] + [("ema", ema_dir)]
    package = save_ensemble_package(out / "ensemble", members)

    def score(path, images, labels):
        m, _ = load_package(path)
        if args.eval_rows:
            images, labels = images[:args.eval_rows], labels[:args.eval_rows]
        s, _, _ = engine.evaluate(m, build_criterion("softmax"), map(engine.BatchPrep(), numpy_batches(images, labels, 512)))
        return s.accuracy

    table = []
    for name, path in [*members, ("ensemble", package), ("raw final weights", raw),
                       ("ensemble of snapshots only", save_ensemble_package(out / "snap-only", members[:-1]))]:
        table.append({"model": name, "val_accuracy": score(path, val.images, val.labels),
                      "test_accuracy": score(path, test.images, test.labels)})
        print(table[-1], flush=True)
    best = max(table[:len(members)], key=lambda r: r["val_accuracy"])
    summary = {"args": vars(args), "train": dataclasses.asdict(tc), "table": table, "best_member": best["model"],
               "ensemble_gain_pt": 100 * (table[len(members)]["test_accuracy"] - best["test_accuracy"]),
               "ema_gain_pt": 100 * (table[len(members) - 1]["test_accuracy"] - table[len(members) + 1]["test_accuracy"]),
               "seconds": time.perf_counter() - started}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "table"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
