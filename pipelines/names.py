"""Every MLflow name users and dashboards rely on (../shared/CONTRACT.md), defined once.

Nothing else in visionray retypes these strings.
"""

from __future__ import annotations

# Per-epoch metrics (step = epoch).
TRAIN_LOSS = "train/loss"
TRAIN_ACCURACY = "train/accuracy"
VAL_LOSS = "val/loss"
VAL_ACCURACY = "val/accuracy"
LR = "lr"
IMAGES_PER_S = "perf/images_per_s"
# Final evaluation.
TEST_LOSS = "test/loss"
TEST_ACCURACY = "test/accuracy"
# Data quality.
QUARANTINED = "data/quarantined"
# Benchmarks: bench/<name>.
BENCH_PREFIX = "bench/"

# Tags.
STAGE_TAG = "visionray.stage"
GIT_SHA = "git_sha"
COMMAND = "command"
DATASET_VERSION = "dataset_version"
RUN_ID = "run_id"
TEST_ACCURACY_TAG = "test_accuracy"
COMPRESSION = "compression"
PIPELINE_TAG = "visionray.pipeline"
ERROR_TAG = "visionray.error"
DECISION_TAG = "visionray.registry_decision"

# Retrain (the champion/challenger gate on one new test split).
RETRAIN_CHALLENGER_ACCURACY = "retrain/challenger_accuracy"
RETRAIN_CHAMPION_ACCURACY = "retrain/champion_accuracy"
RETRAIN_IMPROVEMENT = "retrain/improvement"
RETRAIN_OUTCOME_TAG = "visionray.retrain.outcome"  # no-op | locked | promoted | rejected
RETRAIN_CHALLENGER_VERSION_TAG = "visionray.retrain.challenger_version"
RETRAIN_CHAMPION_VERSION_TAG = "visionray.retrain.champion_version"
#: The retrain lock is a registered model named ``<model><LOCK_SUFFIX>`` (see registry.RegistryLock).
LOCK_SUFFIX = ".retrain-lock"
LOCK_HOLDER_TAG = "visionray.lock.holder"
LOCK_HEARTBEAT_TAG = "visionray.lock.heartbeat"

# Zoo, kNN, linear classifiers, transfer (issue 3).

# Sweeps and ensembles (issue 4).
TRIAL = "trial"  # visionray.stage of a Tune trial's run, nested under its sweep's parent run
TRIAL_ID_TAG = "visionray.trial.id"  # Tune's trial id: a restored sweep finds its trials' runs by it
TRIAL_STATUS_TAG = "visionray.trial.status"  # completed | early_stopped | stopped_loss | failed
TRIAL_ROUND_TAG = "visionray.trial.round"  # coarse | fine | no_asha (bench)
TRIAL_PARAM_PREFIX = "trial."  # a trial's sampled values as params: trial.<dotted key>
BEST_VAL_ACCURACY = "train/best_val_accuracy"  # logged by train.run; the ensemble ranks trials by it
TRIAL_EPOCHS = "trial/epochs"  # epochs a trial trained before it finished or was stopped
SWEEP_BEST_METRIC = "sweep/best_metric"
SWEEP_TRIAL_EPOCHS = "sweep/trial_epochs"
SWEEP_TRIALS = "sweep/trials"
SWEEP_CPU_UTILIZATION = "sweep/cpu_utilization"  # the sweep's process tree CPU s / (wall s x cores)
BEST_OVERRIDES_ARTIFACT = "best_overrides.txt"
BEST_TRIAL_TAG = "visionray.sweep.best_trial"
TRIALS_TABLE = "sweep/trials.json"
ASHA_COMPUTE_RATIO = "bench/asha_compute_ratio"
ASHA_ACCURACY_GAP = "bench/asha_best_metric_gap"

# Compression (issue 5): compress/<name>, tag ``compression`` above.
COMPRESS_SIZE_BYTES = "compress/size_bytes"
COMPRESS_SIZE_RATIO = "compress/size_ratio"
COMPRESS_LATENCY_MS = "compress/latency_ms"
COMPRESS_SPEEDUP = "compress/speedup"

# RL (issue 6).
RL_EPISODE_RETURN_MEAN = "rl/episode_return_mean"
RL_ENV_STEPS = "rl/env_steps"
RL_EVAL_RETURN_MEAN = "rl/eval_return_mean"

# Registry aliases.
CHAMPION = "champion"
CHALLENGER = "challenger"

# Artifact file names.
CONFIG_ARTIFACT = "config.yaml"
MANIFEST_ARTIFACT = "dataset/manifest.json"


def experiment_name(pipeline: str) -> str:
    return f"visionray/{pipeline}"


def bench_metric(name: str) -> str:
    return f"{BENCH_PREFIX}{name}"
