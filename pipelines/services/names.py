"""Every MLflow name users and dashboards rely on (../shared/CONTRACT.md), defined once.

Nothing else in visionray retypes these strings.
"""

from __future__ import annotations

# Per-epoch metrics (step = the epoch, numbered from 1 as the terminal says "epoch 1/6").
TRAIN_LOSS = "train/loss"
TRAIN_ACCURACY = "train/accuracy"
VAL_LOSS = "val/loss"
VAL_ACCURACY = "val/accuracy"
LR = "lr"
IMAGES_PER_S = "perf/images_per_s"
CHARS_PER_S = "perf/chars_per_s"  # language models: characters predicted per second, all workers
PEAK_MEMORY_GIB = "perf/peak_memory_gib"  # on every pipeline's parent run: all its processes together
PIPELINE_SECONDS = "perf/pipeline_seconds"
STARTUP_SECONDS = "perf/startup_s"  # every training run: from the process's start to the first training step
STARTUP_PHASE_PREFIX = "perf/startup/"


def startup_phase(phase: str) -> str:
    """One start-up phase's seconds: ``perf/startup/<phase>_s`` (pipelines.services.startup)."""
    return f"{STARTUP_PHASE_PREFIX}{phase}_s"


TEST_IMAGES_PER_S = "perf/test_images_per_s"  # kNN's batch prediction on the test split
# Final evaluation.
TEST_LOSS = "test/loss"
TEST_ACCURACY = "test/accuracy"


def per_class_accuracy(split: str, cls: str) -> str:
    """One class's accuracy on a split: ``test/accuracy_<class>`` (``cls`` already safe for MLflow)."""
    return f"{split}/accuracy_{cls}"


# Segmentation (segment): the task's metrics are miou and pixel_accuracy under each split's prefix.
def per_class_iou(split: str, cls: str) -> str:
    """One class's IoU on a split: ``test/iou_<class>`` (``cls`` already safe for MLflow)."""
    return f"{split}/iou_{cls}"


SEGMENT_PREVIEW_DIR = "previews"  # prediction over ground truth: previews/epoch_NNN.png, previews/test.png
SEGMENT_TEST_PREVIEW = "previews/test.png"


# Data quality.
QUARANTINED = "data/quarantined"
SKIPPED = "data/skipped"  # entries of the source not read (other formats, hidden, symlinks leaving it), listed
INGEST_SECONDS = "data/ingest_seconds"
DATA_CACHED_TAG = "visionray.data_cached"  # true | false: this dataset version's shards were already written


def data_rows(split: str) -> str:
    """Rows ingested into a split: ``data/rows_<split>``."""
    return f"data/rows_{split}"


# Benchmarks: bench/<name>.
BENCH_PREFIX = "bench/"

# Tags.
STAGE_TAG = "visionray.stage"
GIT_SHA = "git_sha"
COMMAND = "command"
DATASET_VERSION = "dataset_version"
RUN_ID = "run_id"
TEST_ACCURACY_TAG = "test_accuracy"
# Every registered version: the key of the metric its champion gate compares (test/accuracy,
# rl/eval_return_mean, ...) and its value. Versions registered before carry only the task's own tag.
PRIMARY_METRIC_TAG = "primary_metric"
PRIMARY_VALUE_TAG = "primary_value"
COMPRESSION = "compression"
PIPELINE_TAG = "visionray.pipeline"
ERROR_TAG = "visionray.error"
RESUMED_BY_TAG = "visionray.resumed_by"  # the command that resumed the run (resume=...)
DECISION_TAG = "visionray.registry_decision"
#: MLflow's run description (markdown, shown on the run page and as the runs table's Description).
RUN_NOTE_TAG = "mlflow.note.content"

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

# Zoo, kNN, linear classifiers, transfer.
MODEL_PARAMS = "model/params"  # trainable parameters (train stage, and each zoo member)
MODEL_MACS = "model/macs_per_image"  # multiply-accumulates of conv and linear layers, one image
MODEL_FLOPS = "model/flops_per_image"  # 2 x MACs
INIT_ACT_MEAN = "init/act_mean"  # per probed layer at initialisation, step = layer index (1-based)
INIT_ACT_STD = "init/act_std"
INIT_COLLAPSE = "init/act_std_last_over_first"  # -> 0: activations collapse; >> 1: they explode
INIT_PLOT = "plots/init_activations.png"
ZOO_MODEL_TAG = "visionray.model"  # a zoo member's conf/model name (or baseline name) on its child run
ZOO_SECONDS = "zoo/train_seconds"  # a zoo member's training wall time
ZOO_TABLE = "zoo/comparison.json"  # mlflow.log_table artifact on the zoo's parent run
ZOO_CSV = "zoo/comparison.csv"
ZOO_PLOT = "plots/zoo_accuracy_vs_params.png"
ZOO_BEST_TEST_ACCURACY = "zoo/best_test_accuracy"
ZOO_BEST_TAG = "visionray.zoo.best"  # the member with the best test accuracy


def zoo_member_metric(model: str, metric: str) -> str:
    """A zoo member's result on the zoo's parent run: ``zoo/<model>/<metric>`` (test_accuracy, train_seconds)."""
    return f"zoo/{model}/{metric}"


TRAIN_VAL_GAP = "train/val_accuracy_gap"  # per epoch: train/accuracy - val/accuracy (§6.2 babysitting)
KNN_CV_ACCURACY = "knn/cv_accuracy"  # step = k: mean validation accuracy over the folds
KNN_BEST_K = "knn/best_k"
KNN_CV_ACCURACY_STD = "knn/cv_accuracy_std"  # step = k: its spread over the folds
KNN_VAL_ACCURACY = "knn/val_accuracy"  # step = k: the val split against the whole train set
KNN_FIT_SECONDS = "knn/fit_seconds"
KNN_VS_SKLEARN = "bench/knn_vs_sklearn"  # our kNN's throughput / scikit-learn brute force, same data and k
KNN_IMAGES_PER_S = "bench/knn_images_per_s"
SKLEARN_KNN_IMAGES_PER_S = "bench/sklearn_knn_images_per_s"
KNN_SKLEARN_AGREEMENT = "bench/knn_sklearn_agreement"  # the share of queries both predict alike
KNN_VS_SKLEARN_SPREAD = "bench/knn_vs_sklearn_spread"  # largest minus smallest ratio of the alternating rounds
KNN_FALLBACK_TAG = "visionray.knn.fallback"  # the L2 search runs in float64 (no int8 GEMM): why
INITIAL_LOSS = "linear/initial_loss"  # the loss at iteration 0 (before any update), on one train batch
EXPECTED_INITIAL_LOSS = "linear/expected_initial_loss"  # ln C (softmax) or C - 1 (SVM, margin 1)
INITIAL_LOSS_TAG = "visionray.initial_loss_check"  # ok | off: the first-iteration sanity check (§6.2)
OVERFIT_FINAL_LOSS = "overfit/final_loss"
OVERFIT_FINAL_ACCURACY = "overfit/final_accuracy"
PRECISION_TAG = "visionray.precision"  # what train.precision ran as on the workers (auto: bf16 or fp32)
OVERFIT_TAG = "visionray.overfit"  # passed | failed: train.overfit_rows reached near-zero loss
TRANSFER_ACCURACY = "transfer/test_accuracy"
SCRATCH_ACCURACY = "transfer/scratch_test_accuracy"
TRANSFER_GAIN = "transfer/gain"  # transfer minus scratch test accuracy, same data and budget
TRANSFER_SOURCE_TAG = "visionray.transfer.source"  # transfer.source as given
TRANSFER_HEAD_TAG = "visionray.transfer.head"  # the re-initialised head's module name
TRANSFER_MODE_TAG = "visionray.transfer.mode"  # fine-tune | feature-extraction

# Sweeps and ensembles.
TRIAL = "trial"  # visionray.stage of a Tune trial's run, nested under its sweep's parent run
TRIAL_ID_TAG = "visionray.trial.id"  # Tune's trial id: a restored sweep finds its trials' runs by it
TRIAL_STATUS_TAG = "visionray.trial.status"  # completed | early_stopped | stopped_loss | failed
TRIAL_ROUND_TAG = "visionray.trial.round"  # coarse | fine | no_asha (bench)
TRIAL_PARAM_PREFIX = "trial."  # a trial's sampled values as params: trial.<dotted key>
TRIAL_EPOCHS = "trial/epochs"  # epochs a trial trained before it finished or was stopped
TRIAL_STOPPED_LOSS = "trial/stopped_loss"  # reported to Tune (1.0) by a trial stopped on an exploding loss
SWEEP_BEST_METRIC = "sweep/best_metric"
SWEEP_TRIAL_EPOCHS = "sweep/trial_epochs"
SWEEP_TRIALS = "sweep/trials"
SWEEP_CPU_UTILIZATION = "sweep/cpu_utilization"  # the sweep's process tree CPU s / (wall s x cores)


def sweep_trials_with_status(status: str) -> str:
    """How many trials ended with a ``visionray.trial.status``: ``sweep/trials_<status>``."""
    return f"sweep/trials_{status}"


BEST_OVERRIDES_ARTIFACT = "best_overrides.txt"
BEST_TRIAL_TAG = "visionray.sweep.best_trial"
TRIALS_TABLE = "sweep/trials.json"
ASHA_COMPUTE_RATIO = "bench/asha_compute_ratio"  # trial CPU-seconds (wall x CPUs held) with ASHA / without
ASHA_CPU_SECONDS = "bench/asha_cpu_seconds"
NO_ASHA_CPU_SECONDS = "bench/no_asha_cpu_seconds"
ASHA_ACCURACY_GAP = "bench/asha_best_metric_gap"
ASHA_TRIAL_EPOCHS = "bench/asha_trial_epochs"
NO_ASHA_TRIAL_EPOCHS = "bench/no_asha_trial_epochs"
ASHA_SAME_CONFIGS = "bench/asha_same_configs"  # 1.0: both rounds sampled the same configs
TRIAL_STAGE = TRIAL  # the ensemble's spelling
BEST_VAL_ACCURACY = "train/best_val_accuracy"  # a train stage's (or trial's) best epoch on val
BEST_MODEL_ARTIFACT = "best_model"  # the best epoch's model package on a train stage's or trial's run
SWEEP_PIPELINE = "sweep"
ENSEMBLE_MEMBERS = "ensemble/members"  # how many members
ENSEMBLE_CANDIDATES = "ensemble/candidates"  # models built before any was left out
# logged each epoch by components.ensembles.SnapshotHook (components import nothing from pipelines)
ENSEMBLE_SNAPSHOTS_TAKEN = "ensemble/snapshots_taken"
ENSEMBLE_BEST_MEMBER_TEST_ACCURACY = "ensemble/best_member_test_accuracy"  # the member best on val
ENSEMBLE_MAX_MEMBER_TEST_ACCURACY = "ensemble/max_member_test_accuracy"  # the member best on test (oracle)
ENSEMBLE_GAIN = "ensemble/gain"  # test accuracy: ensemble minus the best single member (chosen on val)
# its standard error, paired over the test images (components.metrics.paired_gain_stderr); same for ema_gain
ENSEMBLE_GAIN_STDERR = "ensemble/gain_stderr"
ENSEMBLE_EMA_GAIN_STDERR = "ensemble/ema_gain_stderr"
ENSEMBLE_EMA_TEST_ACCURACY = "ensemble/ema_test_accuracy"
ENSEMBLE_RAW_TEST_ACCURACY = "ensemble/raw_test_accuracy"  # the final weights of the run the EMA comes from
ENSEMBLE_EMA_GAIN = "ensemble/ema_gain"  # test accuracy: EMA weights minus raw final weights
ENSEMBLE_TABLE_ARTIFACT = "ensemble/members.json"  # members, ensemble and best single model side by side
ENSEMBLE_MEMBER_TAG = "visionray.ensemble.members"


def ensemble_member_metric(member: str, metric: str) -> str:
    """``ensemble/member/<member>/<metric>``, e.g. ``ensemble/member/snapshot-2/test_accuracy``."""
    return f"ensemble/member/{member}/{metric}"

# Compression: compress/<name>, tag ``compression`` above.
COMPRESS_SIZE_BYTES = "compress/size_bytes"
COMPRESS_SIZE_RATIO = "compress/size_ratio"
COMPRESS_LATENCY_MS = "compress/latency_ms"
COMPRESS_SPEEDUP = "compress/speedup"  # fp32 eager latency / this variant's, at batch 64
COMPRESS_LATENCY_MS_B1 = "compress/latency_ms_b1"  # compress/latency_ms is at batch 64; this at batch 1
COMPRESS_SPEEDUP_B1 = "compress/speedup_b1"
# Every model is timed alone in its own process (pipelines/flows/compress_timing.py). Against the same fp32
# weights under torch.compile (inductor, frozen weights), timed alone, at batch 64 and 1:
COMPRESS_SPEEDUP_VS_COMPILED = "compress/speedup_vs_compiled"
COMPRESS_SPEEDUP_VS_COMPILED_B1 = "compress/speedup_vs_compiled_b1"
COMPRESS_COMPILED_LATENCY_MS = "compress/compiled_latency_ms"  # the compiled fp32 source, batch 64 (stage run)
COMPRESS_COMPILED_LATENCY_MS_B1 = "compress/compiled_latency_ms_b1"
COMPRESS_BASELINE_END_MS = "compress/baseline_end_latency_ms"  # fp32 eager timed again after every method
COMPRESS_BASELINE_DRIFT = "compress/baseline_drift"  # |end - start| / start of the fp32 baseline at batch 64
COMPRESS_DRIFT_TAG = "visionray.compress.baseline_drift"  # set when the drift passes the tolerance: why
COMPRESS_FALLBACK_TAG = "visionray.compress.fallback"  # a variant's runtime fell back to a slower path
COMPRESS_ACCURACY_DELTA = "compress/accuracy_delta"  # variant minus source, test accuracy (points / 100)
COMPRESS_SPARSITY = "compress/sparsity"
COMPRESS_ONNX_MAX_DIFF = "compress/onnx_max_abs_diff"  # onnxruntime vs torch logits on test images
COMPRESS_METHOD_TAG = "visionray.compress.method"
COMPRESS_SOURCE_TAG = "visionray.compress.source"  # compress.source as given
COMPRESS_FAILED_TAG = "visionray.compress.failed"  # the methods that failed, comma-separated
COMPRESS_CLUSTERS = "compress/clusters"  # k-means centroids per layer (kmeans, deep)
COMPRESS_QAT_LOSS = "compress/qat_loss"  # step = QAT step: the mean loss of 10 steps
COMPRESS_QAT_STEPS = "compress/qat_steps"
COMPRESS_QAT_FINAL_LOSS = "compress/qat_final_loss"
COMPRESS_WEIGHTS_KEPT = "compress/weights_kept"  # low-rank: weights after / before factorising
COMPRESS_LAYERS_FACTORISED = "compress/layers_factorised"
COMPRESS_REPORT_ARTIFACT = "compress/report.md"

# RL.
RL_EPISODE_RETURN_MEAN = "rl/episode_return_mean"
RL_ENV_STEPS = "rl/env_steps"
RL_EVAL_RETURN_MEAN = "rl/eval_return_mean"
RL_EVAL_RETURN_STD = "rl/eval_return_std"
RL_EVAL_RETURN_MIN = "rl/eval_return_min"
RL_EVAL_SECONDS = "rl/eval_seconds"
RL_EPISODE_LEN_MEAN = "rl/episode_len_mean"
RL_ENV_STEPS_PER_S = "rl/env_steps_per_s"
RL_TRAIN_SECONDS = "rl/train_seconds"
RL_GREEDY_CHECK_RETURN_MEAN = "rl/greedy_check_return_mean"  # short greedy checks during training
# Version tags of a registered policy (beside git_sha and run_id); eval_return_mean plays test_accuracy's part.
RL_EVAL_RETURN_TAG = "eval_return_mean"
RL_ENV_TAG = "env"
RL_ALGO_TAG = "algo"
RL_ENV_STEPS_TAG = "env_steps"


def rl_learner_metric(key: str) -> str:
    """An RLlib learner result (policy_loss, vf_loss, qf_loss, ...) as a metric: rl/<key>."""
    return f"rl/{key}"

# Generative models (generate): the task's metric keys (test/bits_per_dim, ...) plus these.
BITS_PER_DIM = "bits_per_dim"
BITS_PER_DIM_IW = "bits_per_dim_iw"  # vae: the importance-weighted bound (k = generate.iw_samples) ...
BITS_PER_DIM_ELBO_IW_ROWS = "bits_per_dim_elbo_iw_rows"  # ... and the ELBO on the same test images
BASELINE_CATEGORICAL_BITS = "baseline_categorical_bits_per_dim"  # independent per-pixel histogram of train
BASELINE_XZ_BITS = "baseline_xz_bits_per_dim"  # `xz -9` of the raw test bytes
PIXEL_LEVELS = "levels"  # test/levels: 256, or 2 for binarised images (their bits/dim do not compare)
SAMPLE_GRID = "samples/grid"  # an MLflow image with step = the epoch (8x8 samples from fixed seeds)
FINAL_SAMPLE_GRID = "samples/final_grid.png"  # the registered model's grid, from the served form
INTERPOLATION_GRID = "samples/interpolations.png"  # vae: a row per pair of test images
GENERATE_SECONDS = "perf/generate_seconds"  # the served form: wall seconds to draw the final 64 samples

# Implicit generative models (generate model=dcgan|cdcgan|ddpm): Fashion-FID/KID against the test split
# in the registered classifier's features (test/fid, test/kid; per epoch val/fid, val/kid) and the same
# distances of the run's reference sets: test/fid_real_train (the floor), _blurred, _noise (the ceiling).
FID = "fid"
KID = "kid"
FID_OVER_BLURRED = "fid_over_blurred"  # test/: the model's FID over that of blurred test images (target <= 3)
CLASS_ACCURACY = "class_accuracy"  # cdcgan: the classifier's accuracy on images generated of each class
NN_COPY_RATIO = "nn_copy_ratio"  # samples' median distance to the nearest train image over test images'
NEAREST_PLOT = "samples/nearest_train.png"  # a grid's samples above their nearest training images


def reference_distance(metric_key: str, reference: str) -> str:
    """A calibration distance: ``fid_real_train``, ``kid_blurred``, ``fid_noise`` (under test/)."""
    return f"{metric_key}_{reference}"


# Registry aliases.
CHAMPION = "champion"
CHALLENGER = "challenger"

# Artifact file names.
CONFIG_ARTIFACT = "config.yaml"
MANIFEST_ARTIFACT = "dataset/manifest.json"
CURVES_PLOT = "plots/curves.png"  # loss, the task's metrics and the train/val gap per epoch (train and evaluate runs)
RL_RETURN_PLOT = "plots/return_curve.png"  # an RL agent's training return against env steps (its train run)
REPORT_ARTIFACT = "report.html"  # the pipeline run's one-page report, on its parent run

# The dashboard: MLflow keeps a runs page's saved views as experiment tags <prefix><key>; `visionray ui`
# writes two and links the first (MLflow's ?viewStateShareKey=<key>).
SAVED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
LATEST_RUN_VIEW = "visionray-latest-run"
ALL_RUNS_VIEW = "visionray-all-runs"


def experiment_name(pipeline: str) -> str:
    return f"visionray/{pipeline}"


def bench_metric(name: str) -> str:
    return f"{BENCH_PREFIX}{name}"


# Task metrics: components.tasks names a metric by its key ("accuracy", "miou", "bpc"); a split prefixes it.
TRAIN, VAL, TEST = "train", "val", "test"
EPOCH = "epoch"  # the epoch (1-based) a Ray Train report belongs to (a report key, not a logged metric)
BEST_EPOCH = "train/best_epoch"  # 1-based, like the steps
EPOCH_SECONDS = "perf/epoch_seconds"
FIT_SECONDS = "perf/fit_seconds"
STOPPED_TAG = "visionray.stopped"  # why training stopped early (a loss explosion), set by rank 0


def metric(split: str, key: str) -> str:
    """A task metric under its split: ``metric(VAL, "accuracy") == VAL_ACCURACY``."""
    return f"{split}/{key}"


BEST_VAL_PREFIX = "train/best_val_"


def best_val(primary: str) -> str:
    """The train stage's best epoch on val, by the task's primary metric (train/best_val_accuracy)."""
    return f"{BEST_VAL_PREFIX}{primary}"


#: The stage metrics a pipeline's parent run repeats at its end, so the runs table shows them in the
#: parent's row: every ``test/*`` (not per class), ``train/best_val_*`` and these.
HEADLINE_METRICS = (BEST_EPOCH, IMAGES_PER_S, CHARS_PER_S, RL_EVAL_RETURN_MEAN, MODEL_PARAMS)


def is_headline(key: str) -> bool:
    """Whether a stage's metric is repeated on its pipeline's parent run (see HEADLINE_METRICS)."""
    return (key in HEADLINE_METRICS or key.startswith(BEST_VAL_PREFIX)
            or (key.startswith(metric(TEST, "")) and not key.startswith(per_class_accuracy(TEST, ""))
                and not key.startswith(per_class_iou(TEST, ""))))


def train_val_gap(primary: str) -> str:
    """Per epoch: the primary metric on train minus on val (train/val_accuracy_gap, §6.2 babysitting)."""
    return f"train/val_{primary}_gap"


def throughput(unit: str) -> str:
    """The training throughput metric of a task whose examples are ``unit`` ("img" or "char")."""
    return {"img": IMAGES_PER_S, "char": CHARS_PER_S}[unit]


# Character language models (charlm).
NGRAM_BPC = "baseline/bpc"  # the n-gram baseline on the test split
NGRAM_VAL_BPC = "baseline/val_bpc"
NGRAM_K = "baseline/k"  # its add-k smoothing, chosen on val
CHARLM_VOCAB = "data/vocabulary"
CHARLM_REPLACED = "data/replaced_bytes"
CHARLM_SAMPLES_DIR = "samples"

# Explain (§12): what a registered classifier learned; on the explain stage's run.
EXPLAINS_TAG = "explains"  # NAME/version of the model explained, on the explain run and its pipeline's parent
EXPLAIN_BEST_METHOD_TAG = "visionray.explain.best_method"  # lowest deletion AUC (the random baseline excluded)
EXPLAIN_CLEAN_ACCURACY = "explain/clean_accuracy"  # on the attacked test images, before any attack
EXPLAIN_ADV_ACCURACY = "explain/adv_accuracy"  # FGSM, step = 1000·ε (ε in pixels of [0, 1]; step 100 is ε = 0.1)
EXPLAIN_PGD_ACCURACY = "explain/pgd_accuracy"  # PGD, the same steps
EXPLAIN_LOSS_CLEAN = "explain/loss_clean"  # mean cross-entropy of the attacked images, before and after FGSM
EXPLAIN_LOSS_FGSM = "explain/loss_fgsm"
EXPLAIN_FOOLING_CONFIDENCE_MIN = "explain/fooling_confidence_min"  # the least confident fooling image
EXPLAIN_CLASS_MODEL_CONFIDENCE = "explain/class_model_confidence_mean"  # p(class) of its own visualisation
EXPLAIN_FEATURE_KNN = "explain/feature_knn_accuracy"  # leave-one-out kNN in the full penultimate space
EXPLAIN_PIXEL_KNN = "explain/pixel_knn_accuracy"  # the same in pixel space
EXPLAIN_EMBEDDED_POINTS = "explain/embedded_points"
EXPLAIN_NEIGHBOUR_AGREEMENT_FEATURE = "explain/neighbour_same_class_feature"  # shown neighbours of the queries
EXPLAIN_NEIGHBOUR_AGREEMENT_PIXEL = "explain/neighbour_same_class_pixel"
EXPLAIN_FAITHFULNESS_TABLE = "explain/faithfulness.json"
EXPLAIN_ATTRIBUTION_PLOT = "explain/attribution.png"
EXPLAIN_FAITHFULNESS_PLOT = "explain/faithfulness.png"
EXPLAIN_ADVERSARIAL_PLOT = "explain/adversarial_examples.png"
EXPLAIN_ADV_CURVE_PLOT = "explain/accuracy_vs_eps.png"
EXPLAIN_FOOLING_PLOT = "explain/fooling_images.png"
EXPLAIN_CLASS_MODELS_PLOT = "explain/class_models.png"
EXPLAIN_NEIGHBOURS_PLOT = "explain/neighbours.png"
EXPLAIN_SUMMARY = "explain/summary.json"


def explain_method_metric(key: str, method: str) -> str:
    """An attribution method's faithfulness: ``explain/<deletion_auc|insertion_auc|pointing_game>_<method>``."""
    return f"explain/{key}_{method}"


def explain_embedding_metric(embedding: str, key: str) -> str:
    """A 2-D map's quality: ``explain/<tsne|umap>_<knn_accuracy|trustworthiness|seconds>``."""
    return f"explain/{embedding}_{key}"


def explain_embedding_plot(embedding: str) -> str:
    return f"explain/{embedding}.png"


# Style (§12): one nested run per mode (transfer, texture, dream) under the style stage's run.
STYLE_MODE_TAG = "visionray.style.mode"
STYLE_LOSS = "style/style_loss"  # per step; Gram matrices of the features, weighted
STYLE_CONTENT_LOSS = "style/content_loss"
STYLE_TV_LOSS = "style/tv_loss"
STYLE_TOTAL_LOSS = "style/total_loss"
STYLE_DREAM_OBJECTIVE = "style/dream_objective"  # dream: the mean squared activation being amplified
STYLE_LOSS_REDUCTION = "style/style_loss_reduction"  # first step's style loss / the last's
STYLE_CONTENT_LOSS_RATIO = "style/content_loss_ratio"  # final content loss / the style image's own
STYLE_SECONDS = "style/seconds"
STYLE_IMAGE_KEY = "style/image"  # the image every style.log_every steps (MLflow's step-wise images)
STYLE_RESULT = "style/result.png"  # the final image of each mode


def style_result(mode: str) -> str:
    """The final image of a mode on the style stage's run: ``style/<mode>.png``."""
    return f"style/{mode}.png"
