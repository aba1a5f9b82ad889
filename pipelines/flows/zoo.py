"""Pipeline ``zoo``: every family on the same data and budget, one comparison table and plot (§9).

    visionray run zoo                                             # the families in zoo.models, conf/train/fast
    visionray run zoo zoo.models=[mlp,convnet,resnet20] train.epochs=3 data.max_train_rows=20000
    visionray run zoo data=cifar10 data.path=cifar-10-python.tar.gz

Ingest and preprocess run once; then each member of ``zoo.models`` gets its own nested run under the
``zoo`` stage run (tag ``visionray.stage=train``, tag ``visionray.model=<member>``, run name = the member),
trained by :func:`pipelines.stages.train.run` with the pipeline's ``train.*`` recipe and scored on the test
split by :func:`pipelines.stages.evaluate.run`. A member's run has everything a ``train`` run has (curves,
``test/accuracy``, confusion matrix, ``model/params``, ``model/flops_per_image``, the init diagnostic)
plus ``zoo/train_seconds``. The parent run gets the comparison table (``zoo/comparison.json`` via
``mlflow.log_table`` and ``zoo/comparison.csv``), the plot accuracy vs parameters with training time as
bubble size, and ``zoo/<member>/test_accuracy``.

A member is either a model config name (``conf/model/<name>.yaml``) or a non-neural baseline named
``"module:function"``. A baseline is called inside its own child run (so it may log there) as::

    baseline(cfg: Config, prepared: Prepared, manifest: Manifest) -> dict

and returns at least ``test_accuracy`` (0-1), ``params`` (numbers it stores; a kNN stores its
training set) and ``seconds`` (fit time); other numeric keys (``test_loss``, ``flops_per_image``, ...)
go into the table too. It must use only the train/val splits to fit and the test split to score.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import io
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.config import Config, ConfigError, model_config
from pipelines.flows import kit
from pipelines.services import names, tracking
from pipelines.services.progress import duration, say

#: Columns of the comparison table, in order.
COLUMNS = ("model", "family", "status", "test_accuracy", "test_loss", "best_val_accuracy", "params",
           "flops_per_image", "seconds", "images_per_s", "epochs", "run_id")

Baseline = Callable[..., dict[str, Any]]


def is_baseline(member: str) -> bool:
    return ":" in member


def load_baseline(member: str) -> Baseline:
    module, _, function = member.partition(":")
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"zoo.models: baseline {member!r} cannot be imported ({e}).") from None


def check_members(cfg: Config) -> None:
    """Every member resolves before anything trains: a typo is a config error, not a failed run."""
    for member in cfg.zoo.models:
        if is_baseline(member):
            load_baseline(member)
        else:
            model_config(member, "zoo.models")


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    check_members(cfg)
    out: dict[str, Any] = {}
    workdir = kit.workdir_for(cfg, parent.run_id)
    prepared = kit.prepare(cfg, parent, workdir, out)
    if prepared is None:
        return out
    manifest = out["manifest"]
    if "zoo" not in cfg.stages:
        return out
    rows: list[dict[str, Any]] = []
    with kit.stage("zoo", parent, cfg) as zoo_run_id:
        for i, member in enumerate(cfg.zoo.models, start=1):
            say(f"zoo: member {i}/{len(cfg.zoo.models)}: {member}")
            rows.append(run_member(cfg, member, prepared, manifest, parent, zoo_run_id, workdir))
            log_comparison(rows, cfg)  # on the zoo stage run, after each member: a stopped zoo keeps its table
    log_comparison(rows, cfg)  # ... and on the parent, where the dashboard's runs table shows it
    out["rows"] = rows
    failed = [r["model"] for r in rows if r["status"] != "ok"]
    if failed and not cfg.zoo.keep_going:
        raise RuntimeError(f"zoo members failed: {', '.join(failed)}")
    return out


def run_member(cfg: Config, member: str, prepared: Any, manifest: Any, parent: tracking.PipelineRun,
               zoo_run_id: str, workdir: Path) -> dict[str, Any]:
    """Train (or fit) and score one member in its own child run of the zoo stage; one table row."""
    name = member.rpartition(":")[2] if is_baseline(member) else member
    mcfg = cfg if is_baseline(member) else dataclasses.replace(cfg, model=model_config(member, "zoo.models"))
    child = dataclasses.replace(parent, run_id=zoo_run_id, cfg=mcfg, resumed=False,
                                tags={**parent.tags, names.ZOO_MODEL_TAG: name})
    row: dict[str, Any] = dict.fromkeys(COLUMNS, float("nan"))
    row.update(model=name, family=("baseline" if is_baseline(member) else mcfg.model.name), status="ok",
               epochs=cfg.train.epochs, run_id="")
    try:
        with tracking.stage_run("train", child, run_name=name) as run_id:
            row["run_id"] = run_id
            if is_baseline(member):
                row.update(_fit_baseline(load_baseline(member), mcfg, prepared, manifest))
            else:
                row.update(_train_net(mcfg, name, prepared, parent, run_id, workdir / name))
            tracking.log_metrics({names.ZOO_SECONDS: row["seconds"]})
    except Exception as e:  # recorded in the table; the child run is already FAILED
        if not cfg.zoo.keep_going:
            raise
        row["status"] = f"failed: {type(e).__name__}: {e}"[:300]
        say(f"zoo: {name} failed ({type(e).__name__}: {e}); the other members continue")
    else:
        say(f"zoo: {name}: test accuracy {row['test_accuracy']:.4f}, {row['params']:,.0f} parameters, "
            f"{duration(row['seconds'])}")
    return row


def _train_net(cfg: Config, name: str, prepared: Any, parent: tracking.PipelineRun, run_id: str,
               workdir: Path) -> dict[str, Any]:
    from pipelines.stages import evaluate, train

    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trained = train.run(cfg, prepared, parent.uri, run_id, f"{cfg.pipeline}-{parent.run_id}-{name}", workdir)
    wall = time.perf_counter() - started
    evaluation = evaluate.run(cfg, prepared, trained)
    logged = tracking.run_metrics(run_id, parent.uri)
    speeds = [v for _, v in trained.history.get(names.IMAGES_PER_S, [])]
    return {"test_accuracy": evaluation.test_accuracy, "test_loss": evaluation.test_loss,
            "best_val_accuracy": max((v for _, v in trained.history.get(names.VAL_ACCURACY, [])), default=math.nan),
            "params": logged.get(names.MODEL_PARAMS, math.nan),
            "flops_per_image": logged.get(names.MODEL_FLOPS, math.nan),
            # Ray Train's fit alone: the same for every member, without the worker start-up
            "seconds": logged.get(names.FIT_SECONDS, wall),
            "images_per_s": sum(speeds) / len(speeds) if speeds else math.nan}


def _fit_baseline(baseline: Baseline, cfg: Config, prepared: Any, manifest: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result = dict(baseline(cfg, prepared, manifest))
    missing = {"test_accuracy", "params", "seconds"} - set(result)
    if missing:
        raise ValueError(f"baseline returned no {', '.join(sorted(missing))}; see pipelines.flows.zoo's docstring")
    result.setdefault("seconds", time.perf_counter() - started)
    tracking.log_metrics({names.TEST_ACCURACY: result["test_accuracy"], names.MODEL_PARAMS: result["params"]})
    return {k: v for k, v in result.items() if k in COLUMNS or isinstance(v, (int, float))}


def majority_class(cfg: Config, prepared: Any, manifest: Any) -> dict[str, Any]:
    """The chance-level row of the table (and the reference baseline): predict the most common train class."""
    import numpy as np

    from components.data.shards import read_split
    from pipelines.stages.evaluate import test_split

    started = time.perf_counter()
    train_labels = read_split(manifest, "train").labels[:prepared.rows["train"]]
    majority = int(np.bincount(train_labels).argmax())
    _, test_labels = test_split(prepared)
    return {"test_accuracy": float(np.mean(test_labels == majority)), "params": 1,
            "seconds": time.perf_counter() - started}


def log_comparison(rows: list[dict[str, Any]], cfg: Config) -> None:
    """The table (MLflow table + CSV), the plot and per-member metrics on the active run."""
    from components.plots import zoo_figure

    columns = list(dict.fromkeys([*COLUMNS, *(k for r in rows for k in r)]))
    table = [{c: _plain(r.get(c)) for c in columns} for r in rows]
    tracking.log_table(table, names.ZOO_TABLE)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(table)
    tracking.log_text(buf.getvalue(), names.ZOO_CSV)
    ok = [r for r in rows if r["status"] == "ok" and math.isfinite(r["test_accuracy"])]
    metrics = {}
    for r in ok:
        metrics[names.zoo_member_metric(r['model'], "test_accuracy")] = r["test_accuracy"]
        metrics[names.zoo_member_metric(r['model'], "train_seconds")] = r["seconds"]
    if ok:
        best = max(ok, key=lambda r: r["test_accuracy"])
        metrics[names.ZOO_BEST_TEST_ACCURACY] = best["test_accuracy"]
        tracking.set_tags({names.ZOO_BEST_TAG: best["model"]})
        budget = f"{cfg.train.epochs} epoch(s), batch {cfg.train.batch_size}, {cfg.data.name}"
        tracking.log_figure(zoo_figure(ok, f"zoo on {budget}\naccuracy vs parameters (bubble: training time)"),
                            names.ZOO_PLOT)
    tracking.log_metrics(metrics)


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
