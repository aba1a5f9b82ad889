"""Measure an ensemble of independently trained runs, read through the sweep contract.

    PYTHONPATH=. python -m tests.pipelines.ensemblebench --seeds 1 2 3 -- train.epochs=3

Trains one ``quickstart``-recipe run per seed (stages ingest, preprocess, train: no test split
touched), logs each run's best model and ``train/best_val_accuracy`` as a trial of a hand-made sweep
run (``visionray.stage=trial`` under a parent in ``visionray/sweep``, the contract ``pipeline sweep``
writes), then runs ``visionray run ensemble ensemble.members=[sweep] ensemble.sweep_run=<that run>``:
the ensemble's test accuracy against the best single member lands on that run as ``ensemble/gain``.
Extra ``key=value`` arguments after ``--`` go to every training run and to the ensemble.
"""

from __future__ import annotations

import argparse
import sys


def wrap_as_sweep(uri: str, train_stage_runs: list[str], seeds: list[int]) -> str:
    """Copy each train stage run's best model and best val accuracy into a trial of a new sweep run."""
    import mlflow
    from mlflow import MlflowClient

    from pipelines.services import names
    from pipelines.services.tracking import ensure_experiment

    client = MlflowClient(uri)
    exp = ensure_experiment(names.experiment_name(names.SWEEP_PIPELINE), uri)
    sweep = client.create_run(exp, run_name="independent-seeds", tags={
        names.PIPELINE_TAG: names.SWEEP_PIPELINE, "visionray.note": "runs trained independently per seed, "
        "logged to the sweep contract by tests/pipelines/ensemblebench.py"}).info.run_id
    for seed, run_id in zip(seeds, train_stage_runs):
        run = client.get_run(run_id)
        trial = client.create_run(exp, run_name=f"seed-{seed}", tags={
            "mlflow.parentRunId": sweep, names.STAGE_TAG: names.TRIAL_STAGE,
            names.DATASET_VERSION: run.data.tags[names.DATASET_VERSION], "visionray.source_run": run_id}).info.run_id
        client.log_param(trial, "seed", seed)
        client.log_metric(trial, names.BEST_VAL_ACCURACY, run.data.metrics[names.BEST_VAL_ACCURACY])
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=names.BEST_MODEL_ARTIFACT,
                                                    tracking_uri=uri)
        client.log_artifacts(trial, local, names.BEST_MODEL_ARTIFACT)
        client.set_terminated(trial)
    client.set_terminated(sweep)
    return sweep


def main(argv: list[str] | None = None) -> int:
    from mlflow import MlflowClient

    from pipelines.config import load_config
    from pipelines.dispatch import run_pipeline
    from pipelines.services import names, tracking

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    import logging

    from pipelines.services.runtime import init_local

    init_local(None, logging_level=logging.WARNING)  # one Ray for all the runs (ray_session reuses it)
    stage_runs = []
    for seed in args.seeds:
        cfg = load_config("quickstart", ["stages=[ingest,preprocess,train]", f"seed={seed}", *args.overrides])
        result = run_pipeline(cfg, command=f"ensemblebench seed={seed}")
        uri = tracking.resolve_uri(cfg.tracking.uri)
        (train_run,) = MlflowClient(uri).search_runs(
            [MlflowClient(uri).get_run(result.run_id).info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{result.run_id}' and tags.`{names.STAGE_TAG}` = 'train'")
        stage_runs.append(train_run.info.run_id)
    sweep = wrap_as_sweep(uri, stage_runs, args.seeds)
    cfg = load_config("ensemble", ["ensemble.members=[sweep]", f"ensemble.sweep_run={sweep}",
                                   f"ensemble.top_k={len(args.seeds)}", "train.snapshots=0", "train.ema_decay=0",
                                   *args.overrides])
    result = run_pipeline(cfg, command=" ".join(["ensemblebench", *sys.argv[1:]]))
    metrics = MlflowClient(uri).get_run(result.run_id).data.metrics
    print({k: round(v, 4) for k, v in sorted(metrics.items()) if k.startswith(("ensemble/", "test/accuracy"))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
