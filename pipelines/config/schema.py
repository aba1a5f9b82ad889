"""The sections every vision pipeline shares (data, model, train, cluster, tracking, registry) and the
root :class:`Config` that holds them and each pipeline's own section (:mod:`.sections`, :mod:`.rl`).

Each field's default is the one default of that setting: ``conf/`` files override only what differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from pipelines.config.base import GROUPS, _check, _doc, walk_key
from pipelines.config.detect import DetectConfig
from pipelines.config.explain import ExplainConfig, StyleConfig
from pipelines.config.rl import RLConfig
from pipelines.config.sections import (
    BenchConfig,
    CaptionConfig,
    CharLMConfig,
    CompressConfig,
    EnsembleConfig,
    GenerateConfig,
    KnnConfig,
    RetrainConfig,
    TransferConfig,
    TuneConfig,
    ZooConfig,
)

MAX_IMAGE_SIZE = 1024
MAX_PATH = 4096  # PATH_MAX on Linux
DatasetName = Literal["fashion_mnist", "cifar10", "image_folder", "digits",
                      # text (charlm): Jane Austen's novels, any UTF-8 file or folder
                      "austen", "text",
                      # captioned images (caption): Fashion-MNIST grids, COCO-format caption files
                      "fashion_grid", "coco_captions",
                      # dense targets (segment, detect): generated scenes with masks and boxes
                      "shapes", "fashion_scenes", "mask_folder",
                      # COCO-format detection: instances_*.json + its image folder (detect)
                      "coco"]
ModelName = Literal["softmax", "convnet", "resnet",
                    # the CS231n families, components.models.BUILDERS
                    "mlp", "alexnet", "vgg", "googlenet", "wide_resnet", "densenet",
                    # hand-made features + linear (kNN has its own pipeline)
                    "hoglinear",
                    # semantic segmentation (segment): per-pixel class scores
                    "fcn", "unet", "fcn_resnet",
                    # detectors (detect): components.models.detectors and two_stage
                    "centernet", "two_stage", "localizer",
                    # generative models (the generate pipeline only), components.models.generative
                    "vae", "pixelcnn", "dcgan", "cdcgan", "ddpm"]
#: The ModelName values that only the generate pipeline trains.
GENERATIVE_MODELS = ("vae", "pixelcnn", "dcgan", "cdcgan", "ddpm")
OptimizerName = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]
ScheduleName = Literal["constant", "step", "cosine"]
Precision = Literal["fp32", "bf16", "fp16", "auto"]


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
    image_size: int = _doc("image_folder, mask_folder and coco_captions: images are resized to this square "
                           "size; shapes and fashion_scenes: the scenes' size", 32)
    channels: int = _doc("image_folder and coco_captions: 1 (grey) or 3 (RGB)", 3)
    image_root: str | None = _doc("coco_captions and coco: the folder the annotation file's file_name entries "
                                  "are relative to (None: the annotation file's own folder)", None)
    split_seed: int = _doc("seed of the stratified train/val/test split (part of the dataset version)", 0)
    val_fraction: float = _doc("fraction of train held out for model selection", 0.1)
    test_fraction: float = _doc("fraction held out for the final test, when the source has no test split", 0.1)
    normalization: Literal["per_channel", "mean_image"] = _doc(
        "per_channel: VGG-style channel mean/std; mean_image: AlexNet-style mean image (§6.1)", "per_channel")
    max_train_rows: int = _doc("use at most this many training rows (0: all); for smoke runs", 0)
    max_eval_rows: int = _doc("use at most this many val and test rows (0: all); for smoke runs", 0)
    feed: Literal["auto", "ray_data", "memory"] = _doc(
        "how training reaches its workers: ray_data (streaming Ray Datasets, split across the workers), memory "
        "(the decoded train and val splits whole through Ray's object store, each worker its share of a "
        "per-epoch shuffle), auto: memory up to 256 MiB of pixels, else ray_data", "auto")
    allow_download: bool = _doc("download the source when it is not found locally", False)
    num_images: int = _doc("shapes and fashion_scenes: scenes generated, split by data.val_fraction and "
                           "data.test_fraction", 10000)
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
        # Upper bound: 1024x1024x3 is 3 MiB per image already; 100000 asked ~30 GB per image.
        _check(8 <= self.image_size <= MAX_IMAGE_SIZE, "data.image_size", f"must be in [8, {MAX_IMAGE_SIZE}]")
        _check(self.split_seed >= 0, "data.split_seed", "must be >= 0")
        _check(self.path is None or len(self.path) <= MAX_PATH and all(len(p) <= 255 for p in self.path.split("/")),
               "data.path", f"is longer than a path can be ({MAX_PATH} characters, 255 per folder name)")
        _check(self.num_images >= 3, "data.num_images", "must be >= 3 (train, val and test need a scene each)")
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
    # -- architecture-specific keys: each applies to the families named in its help, others ignore it
    hidden: tuple[int, ...] = _doc("mlp only: hidden layer sizes, e.g. [256,256]", (256, 256))
    activation: Literal["relu", "sigmoid", "tanh", "leaky_relu", "prelu", "elu", "maxout"] = _doc(
        "mlp only: hidden-layer non-linearity (§4.1; maxout takes the max of 2 affine pieces)", "relu")
    init: Literal["small", "xavier", "he"] = _doc(
        "mlp only: weight init (§6.1): small N(0, 0.01), Xavier 1/sqrt(fan_in), He sqrt(2/fan_in)", "he")
    block: Literal["basic", "bottleneck"] = _doc("resnet only: basic (2 convs) or bottleneck (1x1-3x3-1x1) blocks",
                                                "basic")
    groups: int = _doc("resnet bottleneck only: groups of the 3x3 conv; > 1 makes it a ResNeXt", 1)
    growth: int = _doc("densenet only: growth rate k (new feature maps per layer)", 12)
    backbone_from: str | None = _doc("detect, and segment with model=fcn_resnet: start the net's ResNet backbone "
                                     "from a registered classifier of the same depth and width "
                                     "(models:/NAME@alias, models:/NAME/VERSION)", None)
    tta: Literal["none", "flip", "flip_shift"] = _doc(
        "classifiers: test-time augmentation in the model itself (eval mode: evaluation, serving, ensembles): "
        "flip averages the logits of each image and its mirror image (needs data.augment.flip); flip_shift "
        "also each moved one pixel in the four directions, ten views (needs data.augment.crop_padding >= 1 too)",
        "none")
    init_diagnostic: bool = _doc("train stage: log per-layer activation mean/std at initialisation on a real "
                                 "batch, with histograms (§6.1: is the init collapsing?)", True)

    def __post_init__(self) -> None:
        _check(self.width >= 0, "model.width", "must be >= 0")
        _check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        _check(self.name not in ("fcn", "unet") or 1 <= self.depth <= 5, "model.depth",
               f"of {self.name} counts its down-samplings and must be 1..5")
        _check(self.name != "fcn_resnet" or (self.depth - 2) % 6 == 0 and self.depth >= 8, "model.depth",
               "of fcn_resnet is its ResNet's depth and must be 6n+2 (8, 14, 20, 32, ...)")
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
    """The defaults are the fast recipe (conf/train/fast.yaml): a short one-cycle-like cosine with warm-up,
    Nesterov, and a high peak rate that BatchNorm allows at batch 256. Set once here; conf files override
    only what differs (conf/train/full.yaml, a pipeline's ``train:`` block)."""

    epochs: int = _doc("passes over the training split", 6)
    batch_size: int = _doc("global batch size, split evenly across workers", 256)
    lr: float = _doc("peak learning rate", 0.1)
    optimizer: OptimizerName = _doc("update rule (§7.1)", "nesterov")
    momentum: float = _doc("momentum for momentum/nesterov/rmsprop", 0.9)
    weight_decay: float = _doc("L2 weight decay on weights (not biases or BatchNorm)", 5e-4)
    schedule: ScheduleName = _doc("learning-rate schedule after warm-up", "cosine")
    warmup_epochs: float = _doc("linear warm-up length in epochs", 0.5)
    step_epochs: int = _doc("step schedule: decay every this many epochs", 10)
    gamma: float = _doc("step schedule: decay factor", 0.1)
    loss: Literal["softmax", "svm"] = _doc("softmax cross-entropy or multiclass SVM hinge (§3.1)", "softmax")
    label_smoothing: float = _doc("softmax only: label smoothing", 0.0)
    precision: Precision = _doc("fp32; bf16 autocast (CPU or GPU); fp16 autocast + grad scaler (GPU); auto: bf16 "
                                "where the device computes it natively (a CPU with AMX or AVX512-BF16, a GPU "
                                "with bf16), else fp32", "fp32")
    channels_last: bool = _doc("NHWC memory format: 2-5x faster convolutions on CPU (oneDNN)", True)
    max_steps_per_epoch: int = _doc("stop each epoch after this many steps (0: whole split); smoke runs", 0)
    explode_factor: float = _doc(
        "stop when the training loss exceeds this many times its first value (§6.2; 0: off)", 3.0)
    bptt: int = _doc("language models: characters per truncated-BPTT chunk (the state carries over)", 128)
    clip_norm: float = _doc("language models: clip the gradients' global norm to this (0: off)", 1.0)
    freeze: Literal["none", "backbone"] = _doc(
        "transfer: 'backbone' trains only the re-initialised head (feature extraction)", "none")
    overfit_rows: int = _doc(
        "§6.2 sanity check: train on only this many train rows, without regularisation (no weight decay, "
        "dropout, augmentation or label smoothing); the loss must approach zero (0: off)", 0)
    model_epoch: Literal["best", "last"] = _doc(
        "the epoch whose weights become the run's model: the best on val, or the last (a schedule that anneals "
        "to zero, where the last epochs differ on val by noise and the last has the whole anneal)", "best")
    # -- ensembles (§7.1)
    ema_decay: float = _doc("keep an exponential moving average of the weights with this decay (0: off; §7.1)", 0.0)
    snapshots: int = _doc("snapshot ensemble: cyclic cosine schedule with this many cycles, a snapshot "
                          "saved at the end of each (0: off)", 0)

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(0 <= self.momentum < 1, "train.momentum", "must be in [0, 1)")
        _check(0 < self.gamma <= 1, "train.gamma", "must be in (0, 1]")
        _check(self.step_epochs >= 1, "train.step_epochs", "must be >= 1")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(self.warmup_epochs >= 0, "train.warmup_epochs", "must be >= 0")
        _check(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        _check(self.max_steps_per_epoch >= 0, "train.max_steps_per_epoch", "must be >= 0")
        _check(self.bptt >= 1, "train.bptt", "must be >= 1")
        _check(self.clip_norm >= 0, "train.clip_norm", "must be >= 0 (0: off)")
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
        # -1 would mean unlimited retries in Ray Train: a crash loop, not fault tolerance
        _check(self.max_failures >= 0, "cluster.max_failures", "must be >= 0")
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
    name: str | None = _doc("registered model name (None: <dataset>-classifier, or -charlm, -captioner, "
                            "-segmenter, -detector, -<generative model>)",
                            None)
    enabled: bool = _doc("register the evaluated model and run the champion gate", True)


@dataclass(frozen=True)
class Config:
    pipeline: str = _doc("pipeline name (conf/pipeline/<name>.yaml)")
    description: str = _doc("one line shown by `visionray list`", "")
    kind: Literal["classify", "bench", "retrain", "knn", "zoo", "transfer", "sweep", "ensemble", "compress", "rl",
                  "charlm", "caption", "segment", "detect", "generate", "explain", "style"] = _doc(
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
    charlm: CharLMConfig = _doc("charlm pipeline only: character language models", default_factory=CharLMConfig)
    caption: CaptionConfig = _doc("caption pipeline only: image captioning", default_factory=CaptionConfig)
    detect: DetectConfig = _doc("detect pipeline only: object detection", default_factory=DetectConfig)
    explain: ExplainConfig = _doc("explain pipeline only: what a registered classifier learned",
                                  default_factory=ExplainConfig)
    style: StyleConfig = _doc("style pipeline only: style transfer, texture synthesis, DeepDream",
                              default_factory=StyleConfig)
    generate: GenerateConfig = _doc("generate pipeline only: generative models", default_factory=GenerateConfig)

    def __post_init__(self) -> None:
        _check(0 <= self.seed < 2**32, "seed", "must be in [0, 2**32) (NumPy's seed range)")
        _check(self.model.tta == "none" or self.data.augment.flip, "model.tta",
               f"={self.model.tta} needs data.augment.flip=true: a net that never saw mirror images is not judged "
               f"on them")
        _check(self.model.tta != "flip_shift" or self.data.augment.crop_padding >= 1, "model.tta",
               "=flip_shift needs data.augment.crop_padding >= 1: a net that never saw shifted images is not "
               "judged on them")
        for key in self.tune.space:  # a dotted key must name a config value (groups are checked by tune)
            if key not in GROUPS:
                walk_key(Config, str(key))

    @property
    def registered_model_name(self) -> str:
        """``registry.name``, else ``<dataset>-classifier`` (``-charlm``, ``-captioner``, ``-<model>`` for a
        generative model: ``fashion-mnist-vae``); an RL policy:
        ``<env id lowercased>-<algo>`` ('/' becomes '-': ALE/Pong-v5 → ale-pong-v5-ppo)."""
        if self.registry.name:
            return self.registry.name
        if self.kind == "rl" or (self.kind == "sweep" and self.tune.base == "rl"):
            return f"{self.rl.env.lower().replace('/', '-')}-{self.rl.algo}"
        what = {"charlm": "charlm", "caption": "captioner", "segment": "segmenter", "detect": "detector",
                "generate": self.model.name}.get(self.kind, "classifier")
        return f"{self.data.name.replace('_', '-')}-{what}"

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj
