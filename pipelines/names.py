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
COMPRESS_SPEEDUP = "compress/speedup"  # fp32 eager latency / this variant's, at batch 64
COMPRESS_LATENCY_MS_B1 = "compress/latency_ms_b1"  # compress/latency_ms is at batch 64; this at batch 1
COMPRESS_SPEEDUP_B1 = "compress/speedup_b1"
COMPRESS_ACCURACY_DELTA = "compress/accuracy_delta"  # variant minus source, test accuracy (points / 100)
COMPRESS_SPARSITY = "compress/sparsity"
COMPRESS_ONNX_MAX_DIFF = "compress/onnx_max_abs_diff"  # onnxruntime vs torch logits on test images
COMPRESS_METHOD_TAG = "visionray.compress.method"
COMPRESS_REPORT_ARTIFACT = "compress/report.md"

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
