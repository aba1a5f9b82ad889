"""One config path: ``conf/`` → :func:`load_config` → one frozen, validated :class:`Config`.

A pipeline file ``conf/pipeline/NAME.yaml`` names a file per config group in ``defaults``
(``data: fashion_mnist`` reads ``conf/data/fashion_mnist.yaml``) and may override any key below
that. The command line then selects groups (``model=resnet20``) and sets dotted keys
(``train.epochs=3``)::

    from pipelines.config import load_config
    cfg = load_config("quickstart", ["model=resnet20", "train.epochs=3"])
    cfg.train.epochs  # 3

Every field below carries its help text; ``visionray show`` prints the resolved values. A bad key
or value raises :class:`ConfigError` with one sentence naming the key and what is allowed.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
#: Config groups: a bare ``GROUP=NAME`` override selects ``conf/GROUP/NAME.yaml``.
GROUPS = ("data", "model", "train", "cluster")

DatasetName = Literal["fashion_mnist", "cifar10", "image_folder", "digits"]
ModelName = Literal["softmax", "convnet", "resnet",
                    # issue 3 (zoo): the CS231n families, components.models.BUILDERS
                    "mlp", "alexnet", "vgg", "googlenet", "wide_resnet", "densenet",
                    # issue 3 (toolkit): hand-made features + linear (kNN has its own pipeline)
                    "hoglinear"]
OptimizerName = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
ScheduleName = Literal["constant", "step", "cosine"]
Precision = Literal["fp32", "bf16", "fp16"]


class ConfigError(ValueError):
    """A config key or value the user got wrong; the message is one sentence naming the key."""


def _doc(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if default is dataclasses.MISSING and "default_factory" not in kw:
        return field(metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text}, **kw)


@dataclass(frozen=True)
class AugmentConfig:
    crop_padding: int = _doc("random crop after zero padding by this many pixels (0: off)", 0)
    flip: bool = _doc("random horizontal flip", False)
    brightness: float = _doc("brightness jitter: factor drawn from [1-b, 1+b] (0: off)", 0.0)
    contrast: float = _doc("contrast jitter: factor drawn from [1-c, 1+c] (0: off)", 0.0)
    cutout: int = _doc("side of one square cut out of each image (0: off)", 0)

    def __post_init__(self) -> None:
        _check(self.crop_padding >= 0, "data.augment.crop_padding", "must be >= 0")
        _check(self.cutout >= 0, "data.augment.cutout", "must be >= 0")
        _check(0 <= self.brightness < 1, "data.augment.brightness", "must be in [0, 1)")
        _check(0 <= self.contrast < 1, "data.augment.contrast", "must be in [0, 1)")


@dataclass(frozen=True)
class DataConfig:
    name: DatasetName = _doc("data source", "fashion_mnist")
    path: str | None = _doc("source directory, file or URL (None: the source's default location)", None)
    cache_dir: str = _doc("where ingested Parquet shards go, relative to the working directory", "data")
    image_size: int = _doc("image_folder only: images are resized to this square size", 32)
    channels: int = _doc("image_folder only: 1 (grey) or 3 (RGB)", 3)
    split_seed: int = _doc("seed of the stratified train/val/test split (part of the dataset version)", 0)
    val_fraction: float = _doc("fraction of train held out for model selection", 0.1)
    test_fraction: float = _doc("fraction held out for the final test, when the source has no test split", 0.1)
    normalization: Literal["per_channel", "mean_image"] = _doc(
        "per_channel: VGG-style channel mean/std; mean_image: AlexNet-style mean image (§6.1)", "per_channel")
    max_train_rows: int = _doc("use at most this many training rows (0: all); for smoke runs", 0)
    max_eval_rows: int = _doc("use at most this many val and test rows (0: all); for smoke runs", 0)
    allow_download: bool = _doc("download the source when it is not found locally", False)
    augment: AugmentConfig = _doc("train-time augmentation (§7.2)", default_factory=AugmentConfig)
    classes: tuple[str, ...] = _doc(
        "keep only these classes (indices or names), relabelled 0..k-1 in this order; a subset is a "
        "dataset version of its own (transfer: pre-train on [0,1,2,3,4], transfer to [5,6,7,8,9])", ())

    def __post_init__(self) -> None:
        _check(0 < self.val_fraction < 1, "data.val_fraction", "must be in (0, 1)")
        _check(0 < self.test_fraction < 1, "data.test_fraction", "must be in (0, 1)")
        _check(self.val_fraction + self.test_fraction < 1, "data.test_fraction",
               "plus data.val_fraction must stay below 1")
        _check(self.channels in (1, 3), "data.channels", "must be 1 or 3")
        _check(self.image_size >= 8, "data.image_size", "must be >= 8")
        _check(self.max_train_rows >= 0 and self.max_eval_rows >= 0, "data.max_train_rows",
               "and data.max_eval_rows must be >= 0")
        _check(len(set(self.classes)) == len(self.classes) and len(self.classes) != 1, "data.classes",
               "must name at least two distinct classes (or none: all)")


@dataclass(frozen=True)
class ModelConfig:
    name: ModelName = _doc("architecture family", "convnet")
    width: int = _doc("base channel width; wide_resnet: widen factor k (0: the architecture's default)", 0)
    depth: int = _doc("resnet: 6n+2 (basic) or 9n+2 (bottleneck); wide_resnet and densenet: 6n+4", 20)
    dropout: float = _doc("dropout before the classifier head (§7.2); mlp: after every hidden layer", 0.0)
    batchnorm: bool = _doc("batch normalisation after each convolution / hidden layer (§6.1)", True)
    # -- issue 3 (zoo) keys: each applies to the families named in its help, others ignore it
    hidden: tuple[int, ...] = _doc("mlp only: hidden layer sizes, e.g. [256,256]", (256, 256))
    activation: Literal["relu", "sigmoid", "tanh", "leaky_relu", "prelu", "elu", "maxout"] = _doc(
        "mlp only: hidden-layer non-linearity (§4.1; maxout takes the max of 2 affine pieces)", "relu")
    init: Literal["small", "xavier", "he"] = _doc(
        "mlp only: weight init (§6.1): small N(0, 0.01), Xavier 1/sqrt(fan_in), He sqrt(2/fan_in)", "he")
    block: Literal["basic", "bottleneck"] = _doc("resnet only: basic (2 convs) or bottleneck (1x1-3x3-1x1) blocks",
                                                "basic")
    groups: int = _doc("resnet bottleneck only: groups of the 3x3 conv; > 1 makes it a ResNeXt", 1)
    growth: int = _doc("densenet only: growth rate k (new feature maps per layer)", 12)
    init_diagnostic: bool = _doc("train stage: log per-layer activation mean/std at initialisation on a real "
                                 "batch, with histograms (§6.1: is the init collapsing?)", True)

    def __post_init__(self) -> None:
        _check(self.width >= 0, "model.width", "must be >= 0")
        _check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        per = 6 if self.block == "basic" else 9
        _check(self.name != "resnet" or (self.depth - 2) % per == 0 and self.depth >= per + 2,
               "model.depth", f"must be {per}n+2 for a CIFAR-style ResNet with {self.block} blocks "
               + ("(20, 32, 44, 56, ...)" if per == 6 else "(11, 29, 56, ...)"))
        _check(self.name not in ("wide_resnet", "densenet") or (self.depth - 4) % 6 == 0 and self.depth >= 10,
               "model.depth", f"must be 6n+4 for {self.name} (10, 16, 22, 28, 40, ...)")
        _check(len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden), "model.hidden",
               "must list at least one positive layer size")
        _check(self.groups >= 1 and (self.groups == 1 or self.block == "bottleneck"), "model.groups",
               "must be >= 1, and > 1 only with model.block=bottleneck")
        _check(self.growth >= 1, "model.growth", "must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _doc("passes over the training split", 10)
    batch_size: int = _doc("global batch size, split evenly across workers", 256)
    lr: float = _doc("peak learning rate", 0.05)
    optimizer: OptimizerName = _doc("update rule (§7.1)", "nesterov")
    momentum: float = _doc("momentum for momentum/nesterov/rmsprop", 0.9)
    weight_decay: float = _doc("L2 weight decay on weights (not biases or BatchNorm)", 5e-4)
    schedule: ScheduleName = _doc("learning-rate schedule after warm-up", "cosine")
    warmup_epochs: float = _doc("linear warm-up length in epochs", 0.5)
    step_epochs: int = _doc("step schedule: decay every this many epochs", 10)
    gamma: float = _doc("step schedule: decay factor", 0.1)
    loss: Literal["softmax", "svm"] = _doc("softmax cross-entropy or multiclass SVM hinge (§3.1)", "softmax")
    label_smoothing: float = _doc("softmax only: label smoothing", 0.0)
    precision: Precision = _doc("fp32; bf16 autocast (CPU or GPU); fp16 autocast + grad scaler (GPU)", "fp32")
    channels_last: bool = _doc("NHWC memory format: 2-5x faster convolutions on CPU (oneDNN)", True)
    max_steps_per_epoch: int = _doc("stop each epoch after this many steps (0: whole split); smoke runs", 0)
    # -- issue 3 (zoo/toolkit) keys go here
    explode_factor: float = _doc(
        "stop when the training loss exceeds this many times its first value (§6.2; 0: off)", 3.0)
    freeze: Literal["none", "backbone"] = _doc(
        "transfer: 'backbone' trains only the re-initialised head (feature extraction)", "none")
    overfit_rows: int = _doc(
        "§6.2 sanity check: train on only this many train rows, without regularisation (no weight decay, "
        "dropout, augmentation or label smoothing); the loss must approach zero (0: off)", 0)
    # -- issue 4 (sweeps/ensembles) keys go here
    ema_decay: float = _doc("keep an exponential moving average of the weights with this decay (0: off; §7.1)", 0.0)
    snapshots: int = _doc("snapshot ensemble: cyclic cosine schedule with this many cycles, a snapshot "
                          "saved at the end of each (0: off)", 0)
    # -- issue 5 (compression) keys go here

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(self.warmup_epochs >= 0, "train.warmup_epochs", "must be >= 0")
        _check(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        _check(self.max_steps_per_epoch >= 0, "train.max_steps_per_epoch", "must be >= 0")
        _check(self.explode_factor == 0 or self.explode_factor > 1, "train.explode_factor", "must be 0 (off) or > 1")
        _check(0 <= self.ema_decay < 1, "train.ema_decay", "must be in [0, 1)")
        _check(self.snapshots >= 0, "train.snapshots", "must be >= 0")
        _check(self.overfit_rows >= 0, "train.overfit_rows", "must be >= 0")
        _check(self.loss == "softmax" or not self.label_smoothing, "train.label_smoothing",
               "applies only to train.loss=softmax; set train.label_smoothing=0 with train.loss=svm")
        _check(self.snapshots == 0 or self.epochs % self.snapshots == 0, "train.snapshots",
               f"must divide train.epochs={self.epochs} (one learning-rate cycle = epochs / snapshots)")
        _check(self.snapshots <= 1 or self.schedule == "cosine", "train.snapshots",
               "above 1 needs train.schedule=cosine (the cycles are cosine restarts)")


@dataclass(frozen=True)
class ClusterConfig:
    address: str | None = _doc("Ray address (None: $RAY_ADDRESS, else an embedded local Ray)", None)
    num_workers: int = _doc("data-parallel training workers", 2)
    use_gpu: bool = _doc("one GPU per worker (NCCL); false trains on CPUs (gloo)", False)
    cpus_per_worker: float = _doc(
        "CPUs reserved per worker; fractions leave room for Ray Data on small machines", 0.5)
    torch_threads: int = _doc("intra-op threads per worker (0: CPUs of the machine / workers)", 0)
    num_cpus: int = _doc("CPUs of the embedded local Ray (0: all of this machine)", 0)
    storage_path: str = _doc("checkpoints and Ray Train state; shared storage on a multi-node cluster",
                             "checkpoints")
    max_failures: int = _doc("worker failures survived by restarting from the last checkpoint", 2)

    def __post_init__(self) -> None:
        _check(self.num_workers >= 1, "cluster.num_workers", "must be >= 1")
        _check(self.cpus_per_worker > 0, "cluster.cpus_per_worker", "must be > 0")
        _check(self.torch_threads >= 0 and self.num_cpus >= 0, "cluster.torch_threads",
               "and cluster.num_cpus must be >= 0")


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = _doc(
        "MLflow tracking URI (None: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)", None)
    system_metrics: bool = _doc("log CPU/memory/GPU usage of the driver as MLflow system metrics", True)


@dataclass(frozen=True)
class RegistryConfig:
    name: str | None = _doc("registered model name (None: <dataset>-classifier)", None)
    enabled: bool = _doc("register the evaluated model and run the champion gate", True)


@dataclass(frozen=True)
class RetrainConfig:
    min_improvement: float = _doc(
        "retrain only: promote the challenger when its test accuracy minus the champion's (both on the "
        "new test split) is at least this", 0.0)
    warm_start: bool = _doc("retrain only: start from the champion's weights (same architecture)", True)
    init_from: str | None = _doc(
        "retrain only: warm-start from this model instead of the champion: models:/NAME/VERSION (the "
        "configured registry), or runs:/RUN_ID/model, another URI or a local package directory, which "
        "warn that they come from outside the registry", None)
    lock_ttl_s: float = _doc(
        "retrain only: a retrain lock whose holder has not renewed it for this long is broken (the holder "
        "renews it every third of this)", 600.0)

    def __post_init__(self) -> None:
        _check(-1 <= self.min_improvement <= 1, "retrain.min_improvement", "must be in [-1, 1]")
        _check(self.lock_ttl_s >= 5, "retrain.lock_ttl_s", "must be >= 5 (seconds)")


@dataclass(frozen=True)
class BenchConfig:
    steps: int = _doc("timed training steps per contender", 60)
    warmup_steps: int = _doc("untimed steps before timing (JIT, allocator, oneDNN caches)", 10)
    batch_size: int = _doc("global batch size of the training comparison", 256)
    preprocess_rows: int = _doc("rows pushed through each preprocessing contender", 20000)


# --------------------------------------------------------------------------- per-pipeline sections
# Each section belongs to one pipeline family; keep additions inside your own section.


@dataclass(frozen=True)
class KnnConfig:  # issue 3: pipeline knn
    k_choices: tuple[str, ...] = _doc("values of k tried by cross-validation", ("1", "3", "5", "7", "10", "20"))
    distance: Literal["l1", "l2"] = _doc("L1 (Manhattan) or L2 (Euclidean) distance (§2.2)", "l2")
    folds: int = _doc("k-fold cross-validation folds on the train split", 5)
    cv_rows: int = _doc("train rows used by the cross-validation (0: all); the model keeps all of them", 10000)
    batch_size: int = _doc("test images per Ray Data batch (each batch is one vectorised distance matrix)", 1024)
    bench_rows: int = _doc("queries timed against scikit-learn's brute-force kNN, bench/knn_vs_sklearn (0: off)",
                           2000)

    def __post_init__(self) -> None:
        _check(self.folds >= 2, "knn.folds", "must be >= 2")
        _check(bool(self.k_choices) and all(k.isdigit() and int(k) >= 1 for k in self.k_choices),
               "knn.k_choices", "must be a list of whole numbers >= 1")
        _check(self.cv_rows >= 0 and self.bench_rows >= 0, "knn.cv_rows", "and knn.bench_rows must be >= 0")
        _check(self.batch_size >= 1, "knn.batch_size", "must be >= 1")


@dataclass(frozen=True)
class ZooConfig:  # issue 3: pipeline zoo
    models: tuple[str, ...] = _doc(
        "members trained on the same data and budget: conf/model names, or 'module:function' non-neural "
        "baselines called as baseline(cfg, prepared, manifest) -> dict (pipelines.flows.zoo)",
        ("softmax", "mlp", "convnet", "alexnet", "vgg", "googlenet", "resnet20", "resnet_bottleneck",
         "wide_resnet", "densenet"))
    keep_going: bool = _doc("a member that fails is recorded in the table and the others still run", True)

    def __post_init__(self) -> None:
        _check(len(self.models) >= 1, "zoo.models", "must list at least one model")
        for m in self.models:  # a baseline ("module:function") is imported when the zoo starts
            _check(":" in m or (CONF_DIR / "model" / f"{m}.yaml").is_file(), "zoo.models",
                   f"names '{m}', which is neither a conf/model file ({', '.join(available('model'))}) "
                   f"nor a module:function baseline")


@dataclass(frozen=True)
class TransferConfig:  # issue 3: pipeline transfer
    source: str | None = _doc("pre-trained model: models:/NAME@alias, models:/NAME/VERSION or a run id", None)
    lr_factor: float = _doc("fine-tuning (train.freeze=none) runs at train.lr times this (§7.3: a lower rate)",
                            0.1)
    scratch: bool = _doc("also train the same architecture from scratch on the same data and budget, and "
                         "log the comparison", True)

    def __post_init__(self) -> None:
        _check(0 < self.lr_factor <= 1, "transfer.lr_factor", "must be in (0, 1]")


#: Distributions a sweep samples from (tune.space): name -> how many arguments it takes (None: a list).
SPACE_DISTRIBUTIONS = {"loguniform": 2, "uniform": 2, "randint": 2, "choice": None}


@dataclass(frozen=True)
class TuneConfig:  # issue 4: pipeline sweep
    num_samples: int = _doc("random-search trials", 8)
    space: Mapping[str, Any] = _doc(
        "search space: dotted config key (or a config group: model, data, train) -> one distribution, "
        "{loguniform: [lo, hi]}, {uniform: [lo, hi]}, {randint: [lo, hi_exclusive]} or {choice: [a, b, ...]}",
        default_factory=dict)
    metric: str = _doc("the reported metric trials are ranked by (rl: rl/episode_return_mean)", "val/accuracy")
    mode: Literal["max", "min"] = _doc("whether a higher or a lower metric is better", "max")
    asha: bool = _doc("ASHA early stopping: halt trials that trail at each rung (§6.2)", True)
    grace_period: int = _doc("ASHA: epochs every trial runs before it can be stopped", 1)
    reduction_factor: float = _doc("ASHA: keep the top 1/this of trials at each rung", 3.0)
    max_concurrent: int = _doc("trials at once (0: as many as the cluster's CPUs/GPUs hold with one CPU "
                               "left to Ray Data)", 0)
    refine_samples: int = _doc("coarse-to-fine (§6.2): a second round of this many trials in the space "
                               "shrunk around the best trials (0: off)", 0)
    refine_top: int = _doc("coarse-to-fine: the number of best first-round trials the space shrinks around", 3)
    seed: int = _doc("seeds the random search: the same seed samples the same configs", 0)
    base: Literal["classify", "rl"] = _doc("what a trial trains: an image classifier (Ray Train) or an RL "
                                           "agent (pipelines.flows.rl.train_agent)", "classify")
    compare_asha: bool = _doc("bench: also run the same search without early stopping (same seed) and log "
                              "bench/asha_compute_ratio (trial-epochs with ASHA / without)", False)

    def __post_init__(self) -> None:
        _check(self.num_samples >= 1, "tune.num_samples", "must be >= 1")
        _check(self.grace_period >= 1, "tune.grace_period", "must be >= 1")
        _check(self.reduction_factor > 1, "tune.reduction_factor", "must be > 1")
        _check(self.max_concurrent >= 0, "tune.max_concurrent", "must be >= 0 (0: sized to the cluster)")
        _check(self.refine_samples >= 0, "tune.refine_samples", "must be >= 0")
        _check(self.refine_top >= 1, "tune.refine_top", "must be >= 1")
        for key, spec in self.space.items():
            _check_distribution(str(key), spec)


def _check_distribution(key: str, spec: Any) -> None:
    where = f"tune.space.{key}"
    kinds = ", ".join(SPACE_DISTRIBUTIONS)
    _check(isinstance(spec, Mapping) and len(spec) == 1, where, f"must be one distribution, e.g. "
           f"{{loguniform: [0.001, 0.1]}}; one of: {kinds}")
    (kind, args), = spec.items()
    _check(kind in SPACE_DISTRIBUTIONS, where, f"names '{kind}'; choose one of: {kinds}")
    _check(isinstance(args, (list, tuple)) and len(args) >= 1, where, f"{kind} takes a list of values")
    if key in GROUPS:  # a group: choose among its files
        _check(kind == "choice", where, "is a config group: use {choice: [names...]}")
        for name in args:
            _check(str(name) in available(key), where, f"names '{name}', which is not a {key} config; "
                   f"choose from: {', '.join(available(key))}")
        return
    _assign({}, key, "0")  # walks the schema: the error names the first part of the key that is wrong
    if SPACE_DISTRIBUTIONS[kind] is None:
        return
    _check(len(args) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args),
           where, f"{kind} takes two numbers [lo, hi]")
    _check(args[0] < args[1], where, f"{kind} needs lo < hi")
    _check(kind != "loguniform" or args[0] > 0, where, "loguniform needs lo > 0")
    _check(kind != "randint" or all(float(a).is_integer() for a in args), where, "randint takes whole numbers")


ENSEMBLE_SOURCES = ("sweep", "snapshots", "ema", "seeds", "models")


@dataclass(frozen=True)
class EnsembleConfig:  # issue 4: pipeline ensemble
    members: tuple[str, ...] = _doc(
        "where the members come from: sweep (the top_k trials of ensemble.sweep_run), snapshots (one "
        "run here with train.snapshots cosine cycles, a snapshot per cycle), ema (that run's EMA of the "
        "weights, train.ema_decay), seeds (ensemble.seeds more runs of the same recipe from other "
        "initialisations and shuffles, seed+1, seed+2, ...), models (one run of each architecture in "
        "ensemble.models, same recipe, its own seed)", ("snapshots", "ema"))
    sweep_run: str | None = _doc("sweep parent run id, or 'last' (the latest finished sweep run)", None)
    top_k: int = _doc("members taken from the best trials of a sweep (by train/best_val_accuracy)", 3)
    seeds: int = _doc("members of source seeds: independent runs, each in its own child run", 2)
    models: tuple[str, ...] = _doc("members of source models: conf/model/<name>.yaml architectures, one run each "
                                   "(in its own child run) on the same data and recipe", ())
    bn_rows: int = _doc("recompute the EMA model's BatchNorm statistics on this many training images "
                        "(0: keep the running average of the statistics)", 10000)
    select: Literal["all", "greedy"] = _doc(
        "all: average every member; greedy: keep the members chosen on the val split by forward selection "
        "(Caruana et al. 2004: add the member that most lowers the average's val NLL, stop when none does)",
        "greedy")

    def __post_init__(self) -> None:
        bad = [m for m in self.members if m not in ENSEMBLE_SOURCES]
        _check(not bad and len(self.members) > 0, "ensemble.members",
               f"must list some of: {', '.join(ENSEMBLE_SOURCES)}" + (f" (not {bad[0]})" if bad else ""))
        _check(len(set(self.members)) == len(self.members), "ensemble.members", "must not repeat a source")
        _check(self.top_k >= 1, "ensemble.top_k", "must be >= 1")
        _check(self.seeds >= 1, "ensemble.seeds", "must be >= 1")
        _check(self.bn_rows >= 0, "ensemble.bn_rows", "must be >= 0")
        _check("models" not in self.members or len(self.models) > 0, "ensemble.models",
               "must name some architectures (conf/model/<name>.yaml) when ensemble.members has models")
        _check("sweep" not in self.members or bool(self.sweep_run), "ensemble.sweep_run",
               "must name a sweep run (its MLflow run id, or 'last') when ensemble.members has sweep")


CompressMethod = Literal["prune", "kmeans", "deep", "int8_static", "int8_dynamic", "onnx", "lowrank", "ternary",
                         "binary", "bf16", "int8_qat"]


@dataclass(frozen=True)
class CompressConfig:  # issue 5: pipeline compress
    source: str | None = _doc("model to compress (None: models:/<registry name>@champion)", None)
    methods: tuple[str, ...] = _doc(
        "variants to make, each evaluated, timed and registered (bf16 is only timed): prune, kmeans, deep "
        "(prune → share → Huffman), int8_static, int8_dynamic, onnx, lowrank, ternary, binary, bf16; "
        "int8_qat (quantisation-aware fine-tune, then int8) on request",
        ("prune", "kmeans", "deep", "int8_static", "int8_dynamic", "onnx", "lowrank", "ternary", "binary", "bf16"))
    sparsity: float = _doc("prune/deep: fraction of conv and linear weights set to zero", 0.8)
    prune_scope: Literal["global", "layer"] = _doc(
        "prune/deep: one magnitude threshold over all layers, or the same fraction in each layer", "global")
    clusters: int = _doc("kmeans/deep: centroids per layer (indices take log2 of this many bits)", 32)
    energy: float = _doc("lowrank: keep this fraction of each layer's squared singular values", 0.9)
    finetune_epochs: int = _doc("epochs of each fine-tune on Ray Train (prune, centroids, low rank; 0: none)", 3)
    finetune_lr: float = _doc("peak learning rate of the fine-tunes (cosine decay)", 0.01)
    calibration_rows: int = _doc("int8_static: training images that calibrate activation ranges", 1024)
    qat_steps: int = _doc("int8_qat: fine-tuning steps with fake quantisation (batch 128, in-process, lr finetune_lr)", 300)
    latency_repeats: int = _doc("timed predict calls per batch size (median reported)", 20)
    threads: int = _doc("torch and onnxruntime threads while timing every variant (0: all cores)", 0)

    def __post_init__(self) -> None:
        allowed = typing.get_args(CompressMethod)
        bad = [m for m in self.methods if m not in allowed]
        _check(not bad, "compress.methods", f"has unknown {bad[:1]}; choose from {', '.join(allowed)}")
        _check(0 <= self.sparsity < 1, "compress.sparsity", "must be in [0, 1)")
        _check(2 <= self.clusters <= 256, "compress.clusters", "must be in [2, 256]")
        _check(0 < self.energy <= 1, "compress.energy", "must be in (0, 1]")
        _check(self.finetune_epochs >= 0 and self.calibration_rows >= 1, "compress.finetune_epochs",
               "must be >= 0 (and compress.calibration_rows >= 1)")
        _check(self.qat_steps >= 1, "compress.qat_steps", "must be >= 1")
        _check(self.latency_repeats >= 1 and self.threads >= 0, "compress.latency_repeats",
               "must be >= 1 (and compress.threads >= 0)")


RLAlgo = Literal["ppo", "dqn", "reinforce"]


@dataclass(frozen=True)
class PPOOptions:  # issue 6: rl.ppo.* (tuned on CartPole-v1)
    lr: float = _doc("Adam learning rate", 1e-3)
    train_batch_size: int = _doc("env steps sampled per iteration (one PPO update)", 512)
    minibatch_size: int = _doc("SGD minibatch size", 128)
    num_epochs: int = _doc("passes over each sampled batch", 10)
    clip: float = _doc("clip range of the probability ratio", 0.2)
    lambda_: float = _doc("GAE lambda (0.8: less variance, CartPole's short credit horizon allows it)", 0.8)
    vf_coeff: float = _doc("weight of the value loss", 0.5)
    entropy_coeff: float = _doc("weight of the entropy bonus", 0.0)
    hidden: int = _doc("units per hidden layer (policy and value towers)", 64)
    layers: int = _doc("hidden layers per tower", 2)

    def __post_init__(self) -> None:
        _check(self.lr > 0, "rl.ppo.lr", "must be > 0")
        _check(self.minibatch_size <= self.train_batch_size, "rl.ppo.minibatch_size",
               "must be <= rl.ppo.train_batch_size")


@dataclass(frozen=True)
class DQNOptions:  # issue 6: rl.dqn.* (CartPole-v1; close to rl-baselines3-zoo's tuned DQN)
    lr: float = _doc("Adam learning rate", 2.3e-3)
    batch_size: int = _doc("transitions per gradient step, sampled from the replay buffer", 64)
    target_update_freq: int = _doc("env steps between target-network syncs", 256)
    double_q: bool = _doc("double Q-learning: the online net picks the next action, the target net scores it", True)
    dueling: bool = _doc("dueling heads: Q = V + A - mean(A)", True)
    prioritized: bool = _doc("prioritised experience replay (alpha 0.6, beta 0.4) instead of uniform", True)
    buffer_capacity: int = _doc("replay buffer size in transitions", 50000)
    n_step: int = _doc("n-step returns", 3)
    epsilon_start: float = _doc("epsilon-greedy exploration at step 0", 1.0)
    epsilon_end: float = _doc("epsilon after the schedule", 0.04)
    epsilon_steps: int = _doc("env steps of the linear epsilon decay", 8000)
    learning_starts: int = _doc("env steps collected before the first update", 1000)
    training_intensity: float = _doc(
        "replayed / sampled transitions ratio (0: RLlib's native train_batch_size / rollout fragment)", 32.0)
    hidden: int = _doc("units per hidden layer", 256)
    layers: int = _doc("hidden layers of the encoder", 2)

    def __post_init__(self) -> None:
        _check(self.lr > 0, "rl.dqn.lr", "must be > 0")
        _check(self.n_step >= 1, "rl.dqn.n_step", "must be >= 1")
        _check(0 <= self.epsilon_end <= self.epsilon_start <= 1, "rl.dqn.epsilon_start",
               "and rl.dqn.epsilon_end must satisfy 0 <= end <= start <= 1")
        _check(self.training_intensity >= 0, "rl.dqn.training_intensity", "must be >= 0")


@dataclass(frozen=True)
class ReinforceOptions:  # issue 6: rl.reinforce.* (tuned on CartPole-v1)
    lr: float = _doc("Adam learning rate (policy and baseline)", 2e-3)
    episodes_per_batch: int = _doc("complete episodes per update (one gradient step, §14)", 8)
    vf_coeff: float = _doc("weight of the baseline's squared error", 0.5)
    entropy_coeff: float = _doc("weight of the entropy bonus", 0.0)
    normalize_advantages: bool = _doc("standardise G_t - b(s_t) within each batch", True)
    hidden: int = _doc("units per hidden layer (policy and baseline towers)", 64)
    layers: int = _doc("hidden layers per tower", 2)

    def __post_init__(self) -> None:
        _check(self.lr > 0, "rl.reinforce.lr", "must be > 0")
        _check(self.episodes_per_batch >= 1, "rl.reinforce.episodes_per_batch", "must be >= 1")


@dataclass(frozen=True)
class RLConfig:  # issue 6: pipeline rl
    algo: RLAlgo = _doc("RLlib algorithm: ppo, dqn or reinforce (REINFORCE with a learned baseline)", "ppo")
    env: str = _doc("Gymnasium environment id (CartPole-v1, Acrobot-v1, LunarLander-v3, ALE/Pong-v5, ...)",
                    "CartPole-v1")
    max_env_steps: int = _doc("stop training after this many env steps (0: no limit)", 200000)
    max_iterations: int = _doc("stop training after this many iterations (0: no limit)", 0)
    stop_return: float | None = _doc(
        "stop when the training return mean (last 100 episodes) reaches this (None: the env's "
        "reward_threshold, e.g. 475 on CartPole-v1; no threshold: train to the budget)", None)
    num_env_runners: int = _doc("remote env-runner actors (0: sample in the driver's process)", 0)
    num_envs_per_env_runner: int = _doc(
        "vectorised envs per env runner (0: the algorithm's default: ppo 8, reinforce 4, dqn 1)", 0)
    gamma: float = _doc("discount factor", 0.99)
    torch_threads: int = _doc(
        "torch threads of the process that samples and learns (0: 1 for vector observations, whose tiny MLP "
        "updates only lose time to thread hand-offs (3.6x slower DQN at 2 threads here); torch's default "
        "for image observations)", 0)
    encoder: Literal["auto", "mlp", "cnn"] = _doc(
        "auto: the CNN of components.rl.encoders for image observations, else an MLP", "auto")
    cnn_width: int = _doc("cnn encoder: channels of its first block", 16)
    frame_stack: int = _doc("Atari: stacked 84x84 grey frames per observation", 4)
    eval_episodes: int = _doc("greedy evaluation episodes (Gymnasium, after training)", 100)
    eval_max_steps: int = _doc("cap on the steps of one evaluation episode (0: the env's own limit)", 0)
    gif: bool = _doc("render one greedy episode of the final policy to a GIF artifact", True)
    gif_max_frames: int = _doc("frames of that GIF at most", 500)
    checkpoint_every: int = _doc(
        "save a checkpoint every this many iterations, keeping the newest; `resume=` continues from it "
        "(0: only the final one)", 10)
    greedy_check_episodes: int = _doc(
        "once the training return mean reaches greedy_check_from x the stop return, play this many greedy "
        "episodes with the current weights after each iteration; training stops when their mean reaches the "
        "stop return, and the best-checked weights are kept (0: stop on the training mean alone)", 20)
    greedy_check_from: float = _doc("fraction of the stop return the training mean must reach before checks start",
                                    0.9)
    ppo: PPOOptions = _doc("PPO options", default_factory=PPOOptions)
    dqn: DQNOptions = _doc("DQN options (§14: target net, double Q, dueling, PER, n-step, epsilon)",
                           default_factory=DQNOptions)
    reinforce: ReinforceOptions = _doc("REINFORCE-with-baseline options", default_factory=ReinforceOptions)

    def __post_init__(self) -> None:
        _check(bool(self.env.strip()), "rl.env", "must name a Gymnasium environment")
        _check(self.max_env_steps >= 0 and self.max_iterations >= 0, "rl.max_env_steps",
               "and rl.max_iterations must be >= 0")
        _check(self.greedy_check_episodes >= 0, "rl.greedy_check_episodes", "must be >= 0")
        _check(self.torch_threads >= 0, "rl.torch_threads", "must be >= 0")
        _check(0 < self.greedy_check_from <= 1.5, "rl.greedy_check_from", "must be in (0, 1.5]")
        _check(self.max_env_steps > 0 or self.max_iterations > 0 or self.stop_return is not None,
               "rl.max_env_steps", "must be > 0 unless rl.max_iterations or rl.stop_return bounds training")
        _check(self.num_env_runners >= 0, "rl.num_env_runners", "must be >= 0")
        _check(self.num_envs_per_env_runner >= 0, "rl.num_envs_per_env_runner", "must be >= 0")
        _check(0 < self.gamma <= 1, "rl.gamma", "must be in (0, 1]")
        _check(self.eval_episodes >= 1, "rl.eval_episodes", "must be >= 1")
        _check(self.frame_stack >= 1 and self.cnn_width >= 1, "rl.frame_stack", "and rl.cnn_width must be >= 1")


@dataclass(frozen=True)
class Config:
    pipeline: str = _doc("pipeline name (conf/pipeline/<name>.yaml)")
    description: str = _doc("one line shown by `visionray list`", "")
    kind: Literal["classify", "bench", "retrain", "knn", "zoo", "transfer", "sweep", "ensemble", "compress", "rl"] = _doc(
        "which flow runs the stages (pipelines.flows.KINDS)", "classify")
    stages: tuple[str, ...] = _doc("stages in order", ("ingest", "preprocess", "train", "evaluate", "register"))
    seed: int = _doc("seeds model init, shuffling and augmentation", 0)
    resume: str | None = _doc(
        "continue an interrupted run from its last checkpoint: its MLflow run id, or 'last'", None)
    data: DataConfig = _doc("dataset", default_factory=DataConfig)
    model: ModelConfig = _doc("architecture", default_factory=ModelConfig)
    train: TrainConfig = _doc("optimisation", default_factory=TrainConfig)
    cluster: ClusterConfig = _doc("Ray resources", default_factory=ClusterConfig)
    tracking: TrackingConfig = _doc("MLflow", default_factory=TrackingConfig)
    registry: RegistryConfig = _doc("MLflow model registry", default_factory=RegistryConfig)
    bench: BenchConfig = _doc("bench pipeline only", default_factory=BenchConfig)
    retrain: RetrainConfig = _doc("retrain pipeline only: the champion/challenger gate and its lock",
                                  default_factory=RetrainConfig)
    knn: KnnConfig = _doc("knn pipeline only", default_factory=KnnConfig)
    zoo: ZooConfig = _doc("zoo pipeline only", default_factory=ZooConfig)
    transfer: TransferConfig = _doc("transfer pipeline only", default_factory=TransferConfig)
    tune: TuneConfig = _doc("sweep pipeline only: Ray Tune random search", default_factory=TuneConfig)
    ensemble: EnsembleConfig = _doc("ensemble pipeline only", default_factory=EnsembleConfig)
    compress: CompressConfig = _doc("compress pipeline only", default_factory=CompressConfig)
    rl: RLConfig = _doc("rl pipeline only: RLlib agents", default_factory=RLConfig)

    @property
    def registered_model_name(self) -> str:
        return self.registry.name or f"{self.data.name.replace('_', '-')}-classifier"

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


def _check(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {what}.")


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` → ``{"train.lr": 0.1}``; the form MLflow params take."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --------------------------------------------------------------------------- loading


def available(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values.")
    return data


def _group_file(group: str, name: str, key: str) -> dict[str, Any]:
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{key}={name} is not a known {group} config; choose one of: "
                          f"{', '.join(available(group))}.")
    return _read_yaml(path)


def model_config(name: str, key: str) -> ModelConfig:
    """``conf/model/<name>.yaml`` as a validated ModelConfig; a ConfigError names ``key`` (the setting
    that asked for it: zoo.models, ensemble.models)."""
    return build(ModelConfig, _group_file("model", name, key), "model.")


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split ``key=value`` tokens into group selections and dotted key assignments."""
    groups: dict[str, str] = {}
    keys: dict[str, str] = {}
    for token in overrides:
        key, sep, value = token.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{token}' must look like key=value (for example train.epochs=3).")
        (groups if key in GROUPS else keys)[key] = value.strip()
    return groups, keys


def load_config(pipeline: str, overrides: Sequence[str] = ()) -> Config:
    """Compose ``conf/pipeline/<pipeline>.yaml`` with its group files and the overrides."""
    path = CONF_DIR / "pipeline" / f"{pipeline}.yaml"
    if not path.is_file():
        raise ConfigError(f"pipeline '{pipeline}' does not exist; choose one of: "
                          f"{', '.join(available('pipeline'))}.")
    spec = _read_yaml(path)
    group_sel, dotted = parse_overrides(overrides)
    if "pipeline" in dotted:  # it names the experiment (visionray/<pipeline>): never a silent rename
        raise ConfigError(f"pipeline={dotted['pipeline']} is not an override; the pipeline is the PIPELINE "
                          f"argument (one of: {', '.join(available('pipeline'))}).")
    defaults = dict(spec.pop("defaults", {}) or {})
    unknown = set(defaults) - set(GROUPS)
    if unknown:
        raise ConfigError(f"{path} defaults names unknown group '{sorted(unknown)[0]}'; groups are: "
                          f"{', '.join(GROUPS)}.")
    defaults.update(group_sel)
    tree: dict[str, Any] = {"pipeline": pipeline}
    for group, name in defaults.items():
        tree[group] = _group_file(group, name, group)
    tree = _merge(tree, spec)
    for key, raw in dotted.items():
        tree = _assign(tree, key, raw)
    return build(Config, tree, "")


def _assign(tree: dict[str, Any], key: str, raw: str) -> dict[str, Any]:
    parts = key.split(".")
    # Walk the schema so the error names the first part that does not exist.
    cls: Any = Config
    for i, part in enumerate(parts):
        names = {f.name: f for f in dataclasses.fields(cls)}
        if part not in names:
            where = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"unknown key '{key}': {where} takes {', '.join(names)}.")
        ftype = _hints(cls)[part]
        if i < len(parts) - 1:
            if not (isinstance(ftype, type) and dataclasses.is_dataclass(ftype)):
                raise ConfigError(f"unknown key '{key}': {'.'.join(parts[:i + 1])} is a value, not a section.")
            cls = ftype
    nested: Any = {}
    node = nested
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = _RawString(raw)
    return _merge(tree, nested)


class _RawString(str):
    """A command-line value: still text, converted by the field's type in :func:`build`."""


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    """Validate ``data`` against dataclass ``cls``; unknown keys and bad values raise ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}.")
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = prefix.rstrip(".") or "the top level"
            raise ConfigError(f"unknown key '{prefix}{key}': {where} takes {', '.join(sorted(names))}.")
    kwargs = {k: _coerce(_hints(cls)[k], v, f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field without a value
        raise ConfigError(f"{prefix or 'config'}: {e}.") from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, _RawString):
            raise ConfigError(f"{key} is a section; set one of its keys, e.g. {key}.<key>=VALUE.")
        return build(tp, value or {}, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, _RawString) and value.lower() in ("null", "none", "~", "")):
            return None
        return _coerce(args[0], value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}={value} is not allowed; choose one of: {', '.join(map(str, choices))}.")
        return str(value)
    if origin in (collections.abc.Mapping, dict):  # issue 4: tune.space
        if isinstance(value, _RawString):
            try:
                value = yaml.safe_load(value) or {}
            except yaml.YAMLError:
                raise ConfigError(f"{key}={value} must be a YAML mapping, e.g. {{train.lr: {{loguniform: [0.001, 0.1]}}}}.") from None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}.")
        return {str(k): v for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, _RawString):
            value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}.")
        if typing.get_args(tp)[0] is int:  # tuple[int, ...] (model.hidden)
            return tuple(_coerce(int, v, key) for v in value)
        return tuple(str(v) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key}={value} is not allowed; use true or false.")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value} must be a whole number.")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value} must be a whole number.") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value} must be a number.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value} must be a number.") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be text, got {value!r}.")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp!r}.")  # a bug in the schema, not user input


def dump(cfg: Config) -> str:
    """The resolved config as YAML, in schema order (what `visionray show` prints)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


def describe_pipelines() -> list[tuple[str, str]]:
    return [(name, str(_read_yaml(CONF_DIR / "pipeline" / f"{name}.yaml").get("description", "")))
            for name in available("pipeline")]
