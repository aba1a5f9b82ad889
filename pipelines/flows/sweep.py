"""Pipeline ``sweep``: random search on Ray Tune over ``tune.space``, each trial a Ray Train run.

    visionray run sweep                                       # Fashion-MNIST, 8 trials, ASHA
    visionray run sweep data=digits tune.num_samples=4 train.epochs=2
    visionray run sweep tune.refine_samples=4                 # + a coarse-to-fine second round
    visionray run sweep tune.compare_asha=true                # + the same search without ASHA (bench)
    visionray run sweep resume=last                           # Tuner.restore of an interrupted sweep

Ingest and preprocess run once. Each trial is a Tune function that applies its sampled values to the
pipeline's config and calls ``train.run`` (the one training loop) with Tune's ``TuneReportCallback``,
so every epoch reaches ASHA. A trial whose loss passes ``train.explode_factor`` x its start (§6.2)
ends as a stopped trial, not a failed sweep. Each trial has its own MLflow run nested under the
sweep's parent (tag ``visionray.stage=trial``): sampled params, per-epoch metrics, ``best_model/``,
``train/best_val_accuracy``. The parent gets the trials table, a parallel-coordinates plot, the best
config as ``best_overrides.txt`` and a ``visionray run train ...`` command; the best trial's model is
evaluated on the test split and registered like ``train``'s.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipelines.config import Config, build
from pipelines.flows import search_space
from pipelines.flows.kit import prepare, register, stage, test_metrics, workdir_for
from pipelines.services import names, tracking
from pipelines.services.progress import say
from pipelines.services.runtime import CpuMeter

#: Ray Data's read and decode tasks take 1 CPU each: a cluster whose CPUs are all held by training
#: workers never feeds them (the 2-CPU deadlock). One CPU stays unreserved.
DATA_CPUS = 1.0
#: A trial's own function only launches and watches its Ray Train run (whose controller takes 0 CPU):
#: it reserves no CPU, so the workers' reservations are all a trial holds. (Tune refuses an empty
#: request, hence one byte of memory; Tune's default, 1 CPU, deadlocks a 2-CPU machine.)
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 1}
EPOCH_METRICS = (names.TRAIN_LOSS, names.TRAIN_ACCURACY, names.VAL_LOSS, names.VAL_ACCURACY, names.LR,
                 names.IMAGES_PER_S)
PACKAGE_MARKER = "arch.json"  # components.packaging.ARCH_FILE: every model package directory holds it


@dataclass(frozen=True)
class TrialSetup:
    """What every trial needs besides its sampled values (shipped once through the object store)."""

    cfg: dict[str, Any]  # the sweep's config, plain
    prepared_path: str
    uri: str
    experiment_id: str
    parent_run_id: str
    workdir: str
    round: str
    tags: dict[str, str]
    threads: int
    #: The train and val splits decoded once and materialised in the object store: concurrent trials
    #: share them, and iterate them with no Ray Data task to schedule. (Each trial reading its own
    #: shards starves: Ray Data divides the CPUs the training workers leave among all executions,
    #: and on 2 CPUs no execution gets the 1 CPU a read task needs.)
    datasets: dict[str, Any] | None = None
    #: Or, for a split within ``data.feed``'s budget, the decoded splits put in the object store once.
    in_memory: dict[str, Any] | None = None


# --------------------------------------------------------------------------- one trial (a Tune actor)


def run_trial(values: dict[str, Any], setup: TrialSetup) -> None:
    """One trial: the sweep's config with ``values`` applied, trained through ``train.run``."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    cfg = search_space.apply(build(Config, setup.cfg, ""), {**values, "cluster.torch_threads": setup.threads})
    run_id = tracking.trial_run(setup.uri, setup.experiment_id, setup.parent_run_id, trial_id,
                                f"trial-{trial_id}", values, {**setup.tags, names.TRIAL_ROUND_TAG: setup.round})
    if cfg.tune.base == "rl":
        return _rl_trial(cfg, run_id)
    from ray.tune.integration.ray_train import TuneReportCallback

    from components.engine import LossExplosion
    from pipelines.records import Prepared
    from pipelines.stages import train

    # train.run logs its summary and best_model/ to the active run. Only an ending the trial itself
    # knows is written here; a trial that raises (a real failure, or ASHA stopping it, which kills this
    # actor) leaves its run open for the driver's callback, which knows which.
    class CountedReports(TuneReportCallback):
        """Tune's bridge from Ray Train, counting the epochs this attempt reported."""

        count = 0

        def after_report(self, run_context, metrics, checkpoint):
            self.count += 1
            super().after_report(run_context, metrics, checkpoint)

    stopped, trained, reports = None, None, CountedReports()
    with tracking.continue_run(setup.uri, run_id):
        tracking.log_config(cfg)  # the contract: every run carries its resolved config
        try:
            trained = train.run(cfg, Prepared.load(Path(setup.prepared_path)), setup.uri, run_id,
                                f"{cfg.pipeline}-{setup.parent_run_id}-{trial_id}",
                                Path(setup.workdir) / "trials" / trial_id,
                                callbacks=[reports], datasets=setup.datasets, in_memory=setup.in_memory)
        except LossExplosion as e:
            # §6.2: a stopped trial, not a failed sweep.
            stopped = e
            tracking.set_tags({names.TRIAL_STATUS_TAG: "stopped_loss", names.STOPPED_TAG: str(e)})
    if stopped is not None:  # Tune needs the metric in every result: the worst.
        tune.report({cfg.tune.metric: _worst(cfg.tune.mode), names.TRIAL_STOPPED_LOSS: 1.0})
    elif trained is not None and reports.count == 0:
        # A sweep interrupted after this trial's last checkpoint but before Tune saw it finish: restored, the
        # trial resumes past its last epoch and trains nothing, and Tune refuses a result without its metric.
        curve = trained.history.get(cfg.tune.metric, [])
        if curve:
            best = (max if cfg.tune.mode == "max" else min)(value for _, value in curve)
            tune.report({cfg.tune.metric: best, names.EPOCH: max(epoch for epoch, _ in curve)})


def _rl_trial(cfg: Config, run_id: str) -> None:
    """An RL trial: ``pipelines.flows.rl.train_agent`` reports each iteration to Tune."""
    from ray import tune

    from pipelines.flows import rl  # type: ignore[attr-defined]

    rl.train_agent(cfg, on_iteration=lambda _iteration, metrics: tune.report(dict(metrics)), run_id=run_id)


def _worst(mode: str) -> float:
    return -math.inf if mode == "max" else math.inf


# --------------------------------------------------------------------------- the driver's side


def _tune_callback(uri: str, experiment_id: str, parent_run_id: str, metric: str, mode: str, epochs: int):
    from ray import tune

    class CloseTrialRuns(tune.Callback):
        """Closes each trial's MLflow run when Tune is done with it, whatever ended it: a trial ASHA
        stops never returns from its function, so its run is finished here, with its best model."""

        def __init__(self):
            self.best: dict[str, tuple[float, str]] = {}  # trial id -> (metric, checkpoint path)
            self.epochs: dict[str, int] = {}  # trial id -> epochs reported
            self.curves: dict[str, dict[int, dict[str, float]]] = {}  # trial id -> epoch -> metrics

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if names.EPOCH in result:
                epoch = int(result[names.EPOCH])  # numbered from 1: the epochs reported so far
                self.epochs[trial.trial_id] = max(self.epochs.get(trial.trial_id, 0), epoch)
                self.curves.setdefault(trial.trial_id, {})[epoch] = {
                    k: float(result[k]) for k in EPOCH_METRICS if isinstance(result.get(k), (int, float))}
            value, path = result.get(metric), result.get("checkpoint_path")
            if value is None or path is None or not math.isfinite(value):
                return
            old = self.best.get(trial.trial_id)
            if old is None or (value > old[0] if mode == "max" else value < old[0]):
                self.best[trial.trial_id] = (value, path)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._close(trial, "FINISHED")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._close(trial, "FAILED")

        def _close(self, trial, status: str) -> None:
            run = _find_trial_run(uri, experiment_id, parent_run_id, trial.trial_id)
            if run is None:
                return
            last = trial.last_result or {}
            # ASHA stops a trial right at Tune's report, which can be before rank 0 logged that epoch
            logger = tracking.RunLogger(uri, run.info.run_id)
            logger.backfill({k: [(e, m[k]) for e, m in sorted(self.curves.get(trial.trial_id, {}).items()) if k in m]
                             for k in EPOCH_METRICS})
            # Epochs trained: the last one Tune saw or the run holds. A trial's last report can reach Tune
            # only with its completion, or not at all when the trial's function returns as Ray Train hands
            # the report over; rank 0 logged that epoch to the run either way.
            done = max(self.epochs.get(trial.trial_id, 0), int(last.get(names.EPOCH, 0)),
                       max(logger.logged_epochs, default=0))
            state = ("failed" if status == "FAILED" else "stopped_loss" if last.get(names.TRIAL_STOPPED_LOSS)
                     else "completed" if done >= epochs else "early_stopped")
            metrics: dict[str, float] = {names.TRIAL_EPOCHS: done}
            best = self.best.get(trial.trial_id)
            # train.run logs both when it returns; a trial stopped early never returned
            summarised = names.BEST_VAL_ACCURACY in run.data.metrics
            if best and not summarised and metric == names.VAL_ACCURACY:
                metrics[names.BEST_VAL_ACCURACY] = best[0]
            if best and not summarised and state != "stopped_loss" and Path(best[1], "model").is_dir():
                # the layout train.run logs: best_model/best/<package files>
                tracking.log_artifacts_to(uri, run.info.run_id, Path(best[1], "model"), f"{names.BEST_MODEL_ARTIFACT}/best")
            tracking.finish_run(uri, run.info.run_id, status, metrics, {names.TRIAL_STATUS_TAG: state})

    return CloseTrialRuns()


def _find_trial_run(uri: str, experiment_id: str, parent_run_id: str, trial_id: str):
    for run in tracking.trial_runs(uri, experiment_id, parent_run_id):
        if run.data.tags.get(names.TRIAL_ID_TAG) == trial_id:
            return run
    return None


def concurrency(cfg: Config) -> tuple[int, int]:
    """(trials at once, torch threads per worker) that fit the cluster with a CPU left for Ray Data."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1)), float(res.get("GPU", 0))
    c = cfg.cluster
    per_trial = TRIAL_DRIVER_RESOURCES["CPU"] + c.num_workers * c.cpus_per_worker
    fits = max(1, math.floor((cpus - DATA_CPUS) / per_trial + 1e-9))
    if c.use_gpu:
        fits = min(fits, max(1, math.floor(gpus / c.num_workers)))
    n = min(cfg.tune.max_concurrent or fits, fits)
    if cfg.tune.max_concurrent > fits:
        say(f"sweep: tune.max_concurrent={cfg.tune.max_concurrent} does not fit {cpus:g} CPUs "
            f"({per_trial:g} per trial + {DATA_CPUS:g} for Ray Data): running {fits} at once")
    threads = c.torch_threads or max(1, math.floor(cpus / (n * c.num_workers)))
    return n, threads


@dataclass
class Round:
    name: str
    rows: list[dict[str, Any]]  # one per trial: id, run id, sampled values, status, epochs, metrics

    @property
    def trial_epochs(self) -> int:
        return sum(r["epochs"] for r in self.rows)

    @property
    def cpu_seconds(self) -> float:
        """Every trial's wall seconds × the CPUs it held (pipelines/flows/sweep_compute.py)."""
        return sum(r.get("cpu_s", 0.0) for r in self.rows)


def run_round(cfg: Config, setup: TrialSetup, name: str, space: Mapping[str, Any], num_samples: int,
              asha: bool, tune_dir: Path) -> Round:
    """One Tune experiment (restored from ``tune_dir/name`` when an interrupted one is there)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from pipelines.flows.sweep_compute import add_cpu_seconds, trial_clock

    t = cfg.tune
    clock = trial_clock()
    n, _ = concurrency(cfg)
    setup = dataclasses.replace(setup, round=name)
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), TRIAL_DRIVER_RESOURCES)
    path = tune_dir / name
    if tune.Tuner.can_restore(str(path)):
        say(f"sweep: restoring round {name} from {path}")
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
        # (a restored round's callbacks are the ones saved with it: its trials fall back to Tune's time_total_s)
    else:
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=cfg.train.epochs,
                                  grace_period=min(t.grace_period, cfg.train.epochs),
                                  reduction_factor=t.reduction_factor,
                                  # a trial that reaches the last epoch ends by itself: stopping it there
                                  # would kill it before train.run logs its best model
                                  stop_last_trials=False) if asha else None
        say(f"sweep: round {name}: {num_samples} trials, {n} at once, "
            f"{'ASHA' if asha else 'no early stopping'}, {cfg.train.epochs} epochs max")
        tuner = tune.Tuner(
            trainable, param_space=search_space.tune_domains(space),
            tune_config=tune.TuneConfig(metric=t.metric, mode=t.mode, num_samples=num_samples,
                                        search_alg=BasicVariantGenerator(random_state=t.seed, max_concurrent=n),
                                        scheduler=scheduler, reuse_actors=False,
                                        trial_dirname_creator=lambda trial: trial.trial_id),
            run_config=tune.RunConfig(
                name=name, storage_path=str(tune_dir), verbose=0,
                failure_config=tune.FailureConfig(max_failures=cfg.cluster.max_failures),
                callbacks=[clock, _tune_callback(setup.uri, setup.experiment_id, setup.parent_run_id, t.metric,
                                                 t.mode, cfg.train.epochs)]))
    grid = tuner.fit()
    rows = _rows(grid, setup, t.metric, t.mode, list(space))
    add_cpu_seconds(rows, clock.seconds(), cfg.cluster.num_workers * cfg.cluster.cpus_per_worker)
    return Round(name, rows)


def _rows(grid, setup: TrialSetup, metric: str, mode: str, keys: list[str]) -> list[dict[str, Any]]:
    runs = {r.data.tags.get(names.TRIAL_ID_TAG): r for r in
            tracking.trial_runs(setup.uri, setup.experiment_id, setup.parent_run_id)}
    rows = []
    for result in grid:
        last = result.metrics or {}
        trial_id = last.get("trial_id") or Path(result.path).name
        history = result.metrics_dataframe
        values = [] if history is None or metric not in history else [
            float(v) for v in history[metric] if v is not None and math.isfinite(float(v))]
        run = runs.get(trial_id)
        if run is not None:  # the run's record is the fuller one when Tune missed a trial's last report
            logged = [v for _, v in tracking.metric_histories(setup.uri, run.info.run_id, (metric,))[metric]
                      if math.isfinite(v)]
            values = logged if len(logged) > len(values) else values
        best = (max(values) if mode == "max" else min(values)) if values else None
        status = "failed" if result.error else (run.data.tags.get(names.TRIAL_STATUS_TAG, "completed")
                                                if run else "unknown")
        rows.append({"trial_id": trial_id, "round": setup.round, "run_id": run.info.run_id if run else None,
                     **{k: result.config.get(k) for k in keys}, "status": status,
                     "epochs": max(_epochs(history, last),
                                   int(run.data.metrics.get(names.TRIAL_EPOCHS, 0)) if run else 0),
                     "time_total_s": last.get("time_total_s"),
                     f"best {metric}": best,
                     f"last {metric}": values[-1] if values else None})
    return rows


def _epochs(history, last: Mapping[str, Any]) -> int:
    """Epochs a trial trained: the number of the last epoch it reported, from 1 (a stopped trial's final
    report has none)."""
    if history is not None and names.EPOCH in history and history[names.EPOCH].notna().any():
        return int(history[names.EPOCH].max())
    return int(last.get(names.EPOCH, 0))


# --------------------------------------------------------------------------- the flow


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines.records import PREPARED_FILE
    from pipelines.stages import evaluate

    out: dict[str, Any] = {}
    workdir = workdir_for(cfg, parent.run_id)
    prepared, prepared_path = None, ""
    if cfg.tune.base == "classify":
        prepared = prepare(cfg, parent, workdir, out)
        if prepared is not None:
            prepared_path = str(workdir / PREPARED_FILE)
    if "sweep" not in cfg.stages:
        return out
    _, threads = concurrency(cfg)
    setup = TrialSetup(cfg.to_dict(), prepared_path, parent.uri, parent.experiment_id, parent.run_id,
                       str(workdir), "coarse", {names.GIT_SHA: parent.tags.get(names.GIT_SHA, ""),
                                                names.PIPELINE_TAG: cfg.pipeline}, threads,
                       *(_shared_feed(cfg, prepared) if cfg.tune.base == "classify" else (None, None)))
    with stage("sweep", parent, cfg), CpuMeter() as cpu:
        rounds, bench = _search(cfg, setup, workdir / "tune")
        rows = [r for rnd in rounds for r in rnd.rows]
        tracking.log_metrics({names.SWEEP_CPU_UTILIZATION: cpu.utilization()})
    out["rows"], out["cpu_utilization"] = rows, cpu.utilization()
    best = _summarise(cfg, rows, {names.SWEEP_CPU_UTILIZATION: cpu.utilization(), **bench})
    out["best"] = best
    if best is None or "evaluate" not in cfg.stages or cfg.tune.base != "classify":
        return out
    winner = search_space.apply(cfg, {k: best[k] for k in cfg.tune.space})
    with stage("evaluate", parent, cfg):
        trained = _trained_of(best["run_id"], parent.uri, workdir / "best_trial")
        evaluation = out["evaluation"] = evaluate.run(winner, prepared, trained)
    tracking.log_metrics(test_metrics(evaluation))
    # The winner's config registers (its registry section is the sweep's; stages are the sweep's).
    register(winner, parent, evaluation, prepared.num_classes, out, parent.tags.get(names.DATASET_VERSION, ""))
    return out


def _shared_feed(cfg: Config, prepared) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """What every trial trains from, made once: (materialised Ray Datasets, None), or (None, the decoded
    splits in the object store) for a split within ``data.feed``'s budget."""
    from pipelines.stages.preprocess import image_dataset
    from pipelines.stages.train import in_memory_splits

    manifest = prepared.manifest()
    in_memory = in_memory_splits(cfg, manifest, prepared)
    if in_memory:
        return None, in_memory
    return {split: image_dataset(manifest, split, prepared.rows[split]).materialize()
            for split in ("train", "val")}, None


def _search(cfg: Config, setup: TrialSetup, tune_dir: Path) -> tuple[list[Round], dict[str, float]]:
    """The rounds of the sweep, and with ``tune.compare_asha`` the ASHA bench figures."""
    t = cfg.tune
    rounds, bench = [], {}
    if t.compare_asha:  # the same seed samples the same configs: only early stopping differs
        rounds.append(run_round(cfg, setup, "no_asha", t.space, t.num_samples, False, tune_dir))
    rounds.append(run_round(cfg, setup, "coarse", t.space, t.num_samples, t.asha, tune_dir))
    if t.refine_samples:
        top = _ranked(rounds[-1].rows, t.metric, t.mode)[:t.refine_top]
        fine = search_space.refine(t.space, top)
        say(f"sweep: refining around the best {len(top)} trials: {json.dumps(fine)}")
        tracking.log_json(fine, "sweep/refined_space.json")
        rounds.append(run_round(cfg, setup, "fine", fine, t.refine_samples, t.asha, tune_dir))
    if t.compare_asha:
        fifo, asha = rounds[0], rounds[1]
        # compute, not epochs: a cut epoch and a wider model's epoch cost what they cost
        ratio = asha.cpu_seconds / max(fifo.cpu_seconds, 1e-9)
        b_fifo, b_asha = (_best_value(r.rows, t.metric, t.mode) for r in (fifo, asha))
        gap = (b_fifo - b_asha) if t.mode == "max" else (b_asha - b_fifo)
        same = sorted(json.dumps({k: r[k] for k in t.space}, sort_keys=True, default=str) for r in fifo.rows) == \
            sorted(json.dumps({k: r[k] for k in t.space}, sort_keys=True, default=str) for r in asha.rows)
        bench = {names.ASHA_COMPUTE_RATIO: ratio, names.ASHA_ACCURACY_GAP: gap,
                         names.ASHA_TRIAL_EPOCHS: asha.trial_epochs, names.NO_ASHA_TRIAL_EPOCHS: fifo.trial_epochs,
                         names.ASHA_SAME_CONFIGS: float(same), names.ASHA_CPU_SECONDS: asha.cpu_seconds,
                         names.NO_ASHA_CPU_SECONDS: fifo.cpu_seconds}
        say(f"sweep: ASHA used {asha.cpu_seconds:,.0f} trial CPU-seconds ({asha.trial_epochs} trial-epochs) vs "
            f"{fifo.cpu_seconds:,.0f} ({fifo.trial_epochs}) without (ratio {ratio:.2f}); best {t.metric} {b_asha:.4f} vs {b_fifo:.4f} (gap {gap:+.4f}); "
            f"same sampled configs: {same}")
    return rounds, bench


def _ranked(rows: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    key = f"best {metric}"
    scored = [r for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    return sorted(scored, key=lambda r: r[key], reverse=(mode == "max"))


def _best_value(rows: list[dict[str, Any]], metric: str, mode: str) -> float:
    ranked = _ranked(rows, metric, mode)
    return ranked[0][f"best {metric}"] if ranked else _worst(mode)


def _summarise(cfg: Config, rows: list[dict[str, Any]], extra: dict[str, float]) -> dict | None:
    """On the parent run: the trials table and plot, the best config and its train command."""
    from components.plots import parallel_coordinates_figure

    t = cfg.tune
    log_axes = [k for k, spec in t.space.items() if "loguniform" in spec]
    tracking.log_rows(rows, names.TRIALS_TABLE)
    tracking.log_figure(parallel_coordinates_figure(rows, list(t.space), f"best {t.metric}", log_axes,
                                                    f"{len(rows)} trials of {cfg.pipeline}"),
                        "plots/parallel_coordinates.png")
    ranked = _ranked(rows, t.metric, t.mode)
    metrics = {names.SWEEP_TRIALS: len(rows), names.SWEEP_TRIAL_EPOCHS: sum(r["epochs"] for r in rows),
               **extra}
    for status in ("completed", "early_stopped", "stopped_loss", "failed"):
        metrics[names.sweep_trials_with_status(status)] = sum(r["status"] == status for r in rows)
    if not ranked:
        tracking.log_metrics(metrics)
        say("sweep: no trial reported a finite metric; nothing to evaluate")
        return None
    best = ranked[0]
    metrics[names.SWEEP_BEST_METRIC] = best[f"best {t.metric}"]
    tracking.log_metrics(metrics)
    winner = search_space.apply(cfg, {k: best[k] for k in t.space})
    tokens = search_space.train_overrides(winner)
    command = search_space.command(tokens)
    tracking.log_lines(tokens, names.BEST_OVERRIDES_ARTIFACT)
    tracking.log_lines([command], "best_command.txt")
    tracking.set_tags({names.BEST_TRIAL_TAG: f"{best['trial_id']} ({best['run_id']})"})
    say(f"sweep: {len(rows)} trials, best {t.metric} {best[f'best {t.metric}']:.4f} (trial {best['trial_id']}: "
        + ", ".join(f"{k}={best[k]}" for k in t.space) + ")")
    say(f"sweep: train the best config with:\n  {command}")
    return best


def _trained_of(run_id: str, uri: str, into: Path):
    """The best trial's model package (its ``best_model/`` artifact) and curves, as ``train`` returns them."""
    from pipelines.records import Trained

    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    local = tracking.download_artifacts(uri, run_id, "best_model", into)
    local = next((p.parent for p in sorted(local.rglob(PACKAGE_MARKER))), local)  # best_model/best/...
    history = tracking.metric_histories(uri, run_id, (names.TRAIN_LOSS, names.TRAIN_ACCURACY,
                                                      names.VAL_LOSS, names.VAL_ACCURACY, names.LR))
    val = history.get(names.VAL_ACCURACY) or [(0, 0.0)]
    return Trained(best_checkpoint=str(local), best_epoch=max(val, key=lambda p: p[1])[0], history=history)
