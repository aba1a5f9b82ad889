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

# Compression (issue 5): compress/<name>, tag ``compression`` above.
COMPRESS_SIZE_BYTES = "compress/size_bytes"
COMPRESS_SIZE_RATIO = "compress/size_ratio"
COMPRESS_LATENCY_MS = "compress/latency_ms"
COMPRESS_SPEEDUP = "compress/speedup"

# RL (issue 6).
RL_EPISODE_RETURN_MEAN = "rl/episode_return_mean"
RL_ENV_STEPS = "rl/env_steps"
RL_EVAL_RETURN_MEAN = "rl/eval_return_mean"
RL_EVAL_RETURN_STD = "rl/eval_return_std"
RL_EVAL_RETURN_MIN = "rl/eval_return_min"
RL_EVAL_SECONDS = "rl/eval_seconds"
RL_EPISODE_LEN_MEAN = "rl/episode_len_mean"
RL_ENV_STEPS_PER_S = "rl/env_steps_per_s"
RL_TRAIN_SECONDS = "rl/train_seconds"
# Version tags of a registered policy (beside git_sha and run_id); eval_return_mean plays test_accuracy's part.
RL_EVAL_RETURN_TAG = "eval_return_mean"
RL_ENV_TAG = "env"
RL_ALGO_TAG = "algo"
RL_ENV_STEPS_TAG = "env_steps"


def rl_learner_metric(key: str) -> str:
    """An RLlib learner result (policy_loss, vf_loss, qf_loss, ...) as a metric: rl/<key>."""
    return f"rl/{key}"

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
