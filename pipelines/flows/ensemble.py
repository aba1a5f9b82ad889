"""Pipeline ``ensemble`` (§7.1): average the class probabilities of several models, register the average.

    visionray run ensemble                                  # one run: 3 snapshots + the EMA of its weights
    visionray run ensemble ensemble.members=[sweep] ensemble.sweep_run=last ensemble.top_k=3
    visionray run ensemble ensemble.members=[sweep,snapshots,ema] ensemble.sweep_run=RUN_ID
    visionray run ensemble ensemble.members=[ema,seeds] ensemble.seeds=2   # + 2 runs from other seeds
    visionray run ensemble "ensemble.members=[seeds,models]" "ensemble.models=[resnet20,vgg]"  # + other architectures

Members come from (a) the ``top_k`` trials of a sweep (runs tagged ``visionray.stage=trial`` under the
sweep's run, ranked by ``train/best_val_accuracy``, each with its ``best_model/`` package), (b) the
snapshots of one training run here along a cyclic cosine schedule (``train.snapshots`` cycles),
(c) that run's exponential moving average of the weights (``train.ema_decay``), its BatchNorm
statistics recomputed on ``ensemble.bn_rows`` training images, (d) ``ensemble.seeds`` more runs of the
same recipe from other seeds and (e) one run of each architecture in ``ensemble.models``. Stage
``evaluate`` scores every member, the ensemble, the best single member (chosen on val) and, with an
EMA, the raw final weights, on the same test split, as metrics and one table
(``ensemble/members.json``); ``register`` registers the ensemble as one MLflow model that takes raw
images, like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import Config, ConfigError
from pipelines.services import names, tracking
from pipelines.services.progress import say


@dataclass(frozen=True)
class Member:
    name: str  # trial-<run id>, snapshot-<n>, ema, seed-<n>, model-<name>
    source: str  # sweep | snapshots | ema | seeds | models
    package: str  # a model package directory
    origin: str  # the MLflow run it was trained in


@dataclass(frozen=True)
class Built:
    trained: Any  # pipelines.stages.train.Trained whose best_checkpoint is the ensemble package
    members: list[Member]
    raw_final: str | None = None  # the final weights of the run the EMA member comes from
    chosen: list[str] | None = None  # names of the members in the package (ensemble.select); None: all
    extra: dict[str, float] = field(default_factory=dict)


def check(cfg: Config) -> None:
    """Cross-section settings: a source needs the training keys that produce it."""
    e, t = cfg.ensemble, cfg.train
    if "snapshots" in e.members and t.snapshots < 1:
        raise ConfigError("ensemble.members has snapshots but train.snapshots=0; set train.snapshots=M "
                          "(M cosine cycles, M snapshots).")
    if "ema" in e.members and t.ema_decay <= 0:
        raise ConfigError("ensemble.members has ema but train.ema_decay=0; set train.ema_decay (e.g. 0.99).")
    if "models" in e.members:
        from pipelines.config import model_config

        for name in e.models:  # a typo is a config error before anything trains
            model_config(name, "ensemble.models")


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines.flows import kit
    from pipelines.stages import evaluate

    check(cfg)
    out: dict[str, Any] = {}
    workdir = kit.workdir_for(cfg, parent.run_id)
    prepared = kit.prepare(cfg, parent, workdir, out)
    manifest = out["manifest"]
    if "ensemble" in cfg.stages:
        with kit.stage("ensemble", parent, cfg) as run_id:
            built = out["built"] = build(cfg, prepared, parent, run_id, workdir)
    if "evaluate" in cfg.stages:
        with kit.stage("evaluate", parent, cfg):
            evaluation = out["evaluation"] = evaluate.run(cfg, prepared, built.trained)
            metrics, rows = out["comparison"] = compare(cfg, prepared, built, evaluation.test_accuracy)
        tracking.log_metrics({**kit.test_metrics(evaluation), **metrics})
        tracking.log_table(rows, names.ENSEMBLE_TABLE_ARTIFACT)
        kit.register(cfg, parent, evaluation, prepared.num_classes, out, manifest.version)
    return out


# --------------------------------------------------------------------------- stage ensemble


def build(cfg: Config, prepared, parent: tracking.PipelineRun, run_id: str, workdir: Path) -> Built:
    from components.ensembles import hook_outputs, save_ensemble_package
    from pipelines.stages import train

    members: list[Member] = []
    history: dict = {}
    raw_final = None
    best_epoch = 0
    sources = cfg.ensemble.members
    if "sweep" in sources:
        members += sweep_members(cfg, parent.uri, prepared.manifest().version, workdir / "sweep")
    if "snapshots" in sources or "ema" in sources:
        trained = train.run(cfg, prepared, parent.uri, run_id, f"{cfg.pipeline}-{parent.run_id}", workdir)
        history, raw_final, best_epoch = trained.history, trained.last_checkpoint, trained.best_epoch
        found = hook_outputs(trained.extras)
        if "snapshots" in sources:
            if len(found["snapshots"]) != cfg.train.snapshots:
                raise RuntimeError(f"training left {len(found['snapshots'])} snapshots, expected "
                                   f"train.snapshots={cfg.train.snapshots}")
            members += [Member(p.name, "snapshots", str(p), run_id) for p in found["snapshots"]]
        if "ema" in sources:
            if found["ema"] is None:
                raise RuntimeError("training left no EMA package in its final checkpoint")
            members.append(Member("ema", "ema", str(ema_package(cfg, prepared, found["ema"], workdir)), run_id))
    members += run_members(cfg, prepared, parent, run_id, workdir)
    candidates = members
    if cfg.ensemble.select == "greedy" and len(members) > 1:
        members = select(prepared, members)
        say(f"ensemble: {len(members)} of {len(candidates)} members chosen on val by greedy selection "
            f"(in order: {', '.join(m.name for m in members)})")
    package = save_ensemble_package(workdir / "ensemble", [(m.name, m.package) for m in members])
    tracking.set_tags({names.ENSEMBLE_MEMBER_TAG: ", ".join(m.name for m in members)})
    tracking.log_metrics({names.ENSEMBLE_MEMBERS: len(members), names.ENSEMBLE_CANDIDATES: len(candidates)})
    say(f"ensemble: {len(members)} members: {', '.join(m.name for m in members)}")
    return Built(train.Trained(best_checkpoint=str(package), best_epoch=best_epoch, history=history,
                               last_checkpoint=raw_final), candidates, raw_final, chosen=[m.name for m in members])


def val_split(prepared) -> tuple[np.ndarray, np.ndarray]:
    """The raw uint8 val images and labels (``data.max_eval_rows`` applied), as selection and scoring see them."""
    from components.data.shards import read_split

    val = read_split(prepared.manifest(), "val")
    n = prepared.rows["val"]
    return val.images[:n], np.asarray(val.labels[:n])


def select(prepared, members: list[Member]) -> list[Member]:
    """The members :func:`components.ensembles.greedy_selection` keeps, scored on the val split."""
    from components.ensembles import greedy_selection
    from components.packaging import load_package

    images, labels = val_split(prepared)
    n = len(labels)
    probs = []
    for m in members:
        model, _ = load_package(m.package)
        probs.append(np.concatenate([model.predict_uint8(images[i:i + 1000])[1].numpy()
                                     for i in range(0, n, 1000)]))
    return [members[i] for i in greedy_selection(probs, labels)]


def member_configs(cfg: Config) -> list[tuple[str, str, Config]]:
    """The extra training runs the ensemble asks for, as (member name, source, config) triples.

    §7.1's first recipe, ``seeds``: the same model from ``ensemble.seeds`` other initialisations (and data
    orders), seed+1, seed+2, ...; and ``models``: each architecture of ``ensemble.models`` (conf/model/) on the
    same data and recipe, with the seeds after those. These runs train plainly: no snapshots, no EMA (those
    come from the stage's own run)."""
    import dataclasses

    from pipelines.config import model_config

    plain = dataclasses.replace(cfg.train, snapshots=0, ema_decay=0.0)
    runs = []
    if "seeds" in cfg.ensemble.members:
        runs += [(f"seed-{cfg.seed + i}", "seeds", dataclasses.replace(cfg, seed=cfg.seed + i, train=plain))
                 for i in range(1, cfg.ensemble.seeds + 1)]
    if "models" in cfg.ensemble.members:
        first = cfg.seed + len(runs) + 1
        runs += [(f"model-{name}", "models", dataclasses.replace(cfg, seed=first + j, train=plain,
                                                                 model=model_config(name, "ensemble.models")))
                 for j, name in enumerate(cfg.ensemble.models)]
    return runs


def run_members(cfg: Config, prepared, parent: tracking.PipelineRun, stage_run_id: str, workdir: Path) -> list[Member]:
    """Train each run of :func:`member_configs`, nested under the ensemble stage's run; its best-val package
    is the member."""
    import dataclasses

    from pipelines.stages import train

    runs = member_configs(cfg)
    members = []
    for i, (name, source, mcfg) in enumerate(runs, 1):
        child = dataclasses.replace(parent, run_id=stage_run_id, cfg=mcfg, resumed=False)
        say(f"ensemble: training member {name} ({i}/{len(runs)})")
        with tracking.stage_run("train", child, run_name=name) as member_run:
            trained = train.run(mcfg, prepared, parent.uri, member_run, f"{cfg.pipeline}-{parent.run_id}-{name}",
                                workdir / name)
        members.append(Member(name, source, str(trained.best_checkpoint), member_run))
    return members


def ema_package(cfg: Config, prepared, src: Path, workdir: Path) -> Path:
    """The EMA package, with BatchNorm statistics recomputed for the averaged weights (ensemble.bn_rows)."""
    from components import engine
    from components.data.shards import read_split
    from components.ensembles import recompute_batchnorm
    from components.packaging import load_package, save_package

    if cfg.ensemble.bn_rows == 0:
        return src
    model, spec = load_package(src)
    split = read_split(prepared.manifest(), "train")
    rows = np.random.default_rng(cfg.seed).permutation(min(prepared.rows["train"], len(split.labels)))
    rows = np.sort(rows[:cfg.ensemble.bn_rows])
    images, labels = split.images[rows], split.labels[rows]
    prep = engine.BatchPrep()
    seen = recompute_batchnorm(model, (prep({"image": images[i:i + 256], "label": labels[i:i + 256]})[0]
                                       for i in range(0, len(rows), 256)))
    say(f"ensemble: EMA BatchNorm statistics recomputed on {seen:,} training images")
    return save_package(workdir / "ema", model, spec)


def resolve_sweep_run(uri: str, which: str) -> str:
    """A sweep run id as given, or 'last': the latest finished parent run of experiment visionray/sweep."""
    if which != "last":
        run = tracking.find_run(uri, which)
        if run is None:
            raise ConfigError(f"ensemble.sweep_run={which}: no such MLflow run in this store.")
        return run.run_id
    runs = tracking.pipeline_runs(uri, names.SWEEP_PIPELINE, status="FINISHED")
    if not runs:
        raise ConfigError("ensemble.sweep_run=last: no finished sweep run in this store; run "
                          "`visionray run sweep` first or name a run id.")
    return runs[0].run_id


def trial_runs(uri: str, sweep_run_id: str) -> list[tracking.RunSummary]:
    """The sweep's trial runs (``visionray.stage=trial``) that reported a best val accuracy, best first.

    Trials may hang under the sweep's parent run or under one of its stage runs (e.g. ``sweep``)."""
    exp = tracking.find_run(uri, sweep_run_id).experiment_id
    children = tracking.child_runs(uri, exp, sweep_run_id)
    trials = [r for r in children if r.tags.get(names.STAGE_TAG) == names.TRIAL_STAGE]
    for stage in (r for r in children if r.tags.get(names.STAGE_TAG) != names.TRIAL_STAGE):
        trials += tracking.child_runs(uri, exp, stage.run_id, tags={names.STAGE_TAG: names.TRIAL_STAGE})
    trials = [t for t in trials if names.BEST_VAL_ACCURACY in t.metrics]
    return sorted(trials, key=lambda t: -t.metrics[names.BEST_VAL_ACCURACY])


def sweep_members(cfg: Config, uri: str, dataset_version: str, dst: Path) -> list[Member]:
    from components.packaging import ARCH_FILE

    sweep_id = resolve_sweep_run(uri, cfg.ensemble.sweep_run or "last")
    trials = trial_runs(uri, sweep_id)
    if not trials:
        raise ConfigError(f"ensemble.sweep_run={cfg.ensemble.sweep_run}: run {sweep_id} has no finished trials "
                          f"(runs tagged {names.STAGE_TAG}={names.TRIAL_STAGE} with {names.BEST_VAL_ACCURACY}).")
    chosen = trials[:cfg.ensemble.top_k]
    if len(chosen) < cfg.ensemble.top_k:
        say(f"ensemble: sweep {sweep_id} has {len(chosen)} finished trials, fewer than ensemble.top_k="
            f"{cfg.ensemble.top_k}; taking them all")
    members = []
    for t in chosen:
        trained_on = t.tags.get(names.DATASET_VERSION)
        if trained_on and trained_on != dataset_version:
            # Another split would put some of this run's test images in the member's training data.
            raise ConfigError(f"sweep trial {t.run_id} was trained on dataset version {trained_on}, this run "
                              f"uses {dataset_version}; run the ensemble with the sweep's data settings.")
        local = tracking.download_artifacts(uri, t.run_id, names.BEST_MODEL_ARTIFACT, dst / t.run_id)
        if not (local / ARCH_FILE).is_file():
            raise ConfigError(f"sweep trial {t.run_id} has no model package in its "
                              f"{names.BEST_MODEL_ARTIFACT}/ artifact.")
        members.append(Member(f"trial-{t.run_id[:8]}", "sweep", str(local), t.run_id))
    say(f"ensemble: top {len(members)} of {len(trials)} trials of sweep {sweep_id} (val accuracy "
        + ", ".join(f"{t.metrics[names.BEST_VAL_ACCURACY]:.4f}" for t in chosen) + ")")
    return members


# --------------------------------------------------------------------------- stage evaluate (side by side)


def _score(model, images: np.ndarray, labels: np.ndarray, loss: str) -> tuple[float, float, np.ndarray]:
    """Loss, accuracy and the predicted classes of ``model`` on raw images."""
    from components import engine
    from components.losses import build_criterion
    from pipelines.stages.evaluate import numpy_batches

    stats, preds, _ = engine.evaluate(model, build_criterion(loss), map(engine.BatchPrep(),
                                                                         numpy_batches(images, labels, 512)),
                                      collect=True)
    return stats.loss, stats.accuracy, preds


def compare(cfg: Config, prepared, built: Built, ensemble_test_accuracy: float) -> tuple[dict[str, float], list[dict]]:
    """Every member, the ensemble, the best single member (chosen on val) and, with an EMA member, the
    raw final weights of its run: val and test scores side by side, as metrics and table rows."""
    from components.metrics import paired_gain_stderr
    from components.packaging import load_package
    from pipelines.stages.evaluate import test_split

    splits = {"val": val_split(prepared), "test": test_split(prepared)}
    test_preds: dict[str, np.ndarray] = {}  # package -> predicted test classes, for the paired errors

    def score(package: str) -> dict[str, float]:
        model, _ = load_package(package)
        out = {}
        for split, (images, labels) in splits.items():
            out[f"{split}_loss"], out[f"{split}_accuracy"], preds = _score(model, images, labels, cfg.train.loss)
            if split == "test":
                test_preds[package] = preds
        return out

    def stderr(a: str, b: str) -> float:
        return paired_gain_stderr(test_preds[a], test_preds[b], splits["test"][1])

    chosen = set(built.chosen if built.chosen is not None else [m.name for m in built.members])
    rows = [{"model": m.name, "source": m.source, "run_id": m.origin, "in_ensemble": m.name in chosen,
             **score(m.package)} for m in built.members]
    package_of = {m.name: m.package for m in built.members}
    metrics: dict[str, float] = {}
    for row in rows:
        for key in ("val_accuracy", "test_accuracy"):
            metrics[names.ensemble_member_metric(row["model"], key)] = row[key]
    best = max(rows, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    ensemble_row = {"model": "ensemble", "source": "+".join(cfg.ensemble.members), "run_id": "", "in_ensemble": True,
                    **score(built.trained.best_checkpoint)}
    metrics.update({
        names.ENSEMBLE_MEMBERS: len(chosen),
        names.ENSEMBLE_BEST_MEMBER_TEST_ACCURACY: best["test_accuracy"],
        names.ENSEMBLE_MAX_MEMBER_TEST_ACCURACY: max(r["test_accuracy"] for r in rows),
        names.ENSEMBLE_GAIN: ensemble_row["test_accuracy"] - best["test_accuracy"],
        names.ENSEMBLE_GAIN_STDERR: stderr(built.trained.best_checkpoint, package_of[best["model"]]),
    })
    table = [*rows, ensemble_row, {**best, "model": f"best single: {best['model']}"}]
    ema = next((r for r in rows if r["source"] == "ema"), None)
    if ema is not None and built.raw_final:
        raw = {"model": "raw final weights", "source": "final epoch", "run_id": ema["run_id"], **score(built.raw_final)}
        table.append(raw)
        metrics.update({names.ENSEMBLE_EMA_TEST_ACCURACY: ema["test_accuracy"],
                        names.ENSEMBLE_RAW_TEST_ACCURACY: raw["test_accuracy"],
                        names.ENSEMBLE_EMA_GAIN: ema["test_accuracy"] - raw["test_accuracy"],
                        names.ENSEMBLE_EMA_GAIN_STDERR: stderr(package_of[ema["model"]], built.raw_final)})
        say(f"ensemble: EMA weights {ema['test_accuracy']:.4f} vs raw final weights {raw['test_accuracy']:.4f} "
            f"test accuracy ({100 * metrics[names.ENSEMBLE_EMA_GAIN]:+.2f} "
            f"± {100 * metrics[names.ENSEMBLE_EMA_GAIN_STDERR]:.2f} pt, paired standard error)")
    tracking.log_metrics(metrics)
    tracking.log_table(table, names.ENSEMBLE_TABLE_ARTIFACT)
    from components.plots import model_comparison_figure

    shown = [*rows, ensemble_row, *table[len(rows) + 2:]]
    tracking.log_figure(model_comparison_figure([r["model"] for r in shown], [r["val_accuracy"] for r in shown],
                                                [r["test_accuracy"] for r in shown], "members vs ensemble"),
                        "plots/ensemble_members.png")
    say(f"ensemble: test accuracy {ensemble_row['test_accuracy']:.4f} vs best single member "
        f"{best['model']} {best['test_accuracy']:.4f} ({100 * metrics[names.ENSEMBLE_GAIN]:+.2f} "
        f"± {100 * metrics[names.ENSEMBLE_GAIN_STDERR]:.2f} pt, paired standard error)")
    if abs(ensemble_row["test_accuracy"] - ensemble_test_accuracy) > 1e-9:
        raise RuntimeError("the ensemble scored differently in evaluate and in the comparison")
    return metrics, table
