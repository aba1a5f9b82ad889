"""Per-pipeline config sections: each belongs to one pipeline family (``bench.*``, ``retrain.*``,
``knn.*``, ``zoo.*``, ``transfer.*``, ``tune.*``, ``ensemble.*``, ``compress.*``, ``charlm.*``, ``caption.*``,
``generate.*``); keep additions
inside your own section. RL's (``rl.*``) are in :mod:`.rl`.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipelines.config.base import CONF_DIR, GROUPS, _check, _doc, available


@dataclass(frozen=True)
class RetrainConfig:
    min_improvement: float = _doc(
        "retrain only: promote the challenger when its test accuracy minus the champion's (both on the "
        "new test split) is at least this", 0.0)
    warm_start: bool = _doc("retrain only: start from the champion's weights (same architecture)", True)
    init_from: str | None = _doc(
        "retrain only: warm-start from this model instead of the champion: models:/NAME/VERSION (the "
        "configured registry), or runs:/RUN_ID/ARCH (a pipeline run and its logged model, e.g. "
        "runs:/<id>/convnet), another URI or a local package directory, which warn that they come from "
        "outside the registry", None)
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
    rounds: int = _doc("times each comparison runs, the contenders in turns (A B A B ...); medians and spread "
                       "logged", 3)
    ddp: bool = _doc("also compare Ray Train with native PyTorch DDP (torch.distributed.run), both fed the same "
                     "rows in the same order: bench/train_ray_vs_ddp", True)

    def __post_init__(self) -> None:
        _check(self.rounds >= 1, "bench.rounds", "must be >= 1")



@dataclass(frozen=True)
class KnnConfig:
    k_choices: tuple[str, ...] = _doc("values of k tried by cross-validation", ("1", "3", "5", "7", "10", "20"))
    distance: Literal["l1", "l2"] = _doc("L1 (Manhattan) or L2 (Euclidean) distance (§2.2)", "l2")
    folds: int = _doc("k-fold cross-validation folds on the train split", 5)
    cv_rows: int = _doc("train rows used by the cross-validation (0: all); the model keeps all of them", 10000)
    batch_size: int = _doc("test images per Ray Data batch (each batch is one vectorised distance matrix)", 1024)
    bench_rows: int = _doc("queries timed against scikit-learn's brute-force kNN, bench/knn_vs_sklearn (0: off)",
                           2000)
    bench_rounds: int = _doc("passes over the queries each, ours and scikit-learn's in turns (median ratio logged)", 3)

    def __post_init__(self) -> None:
        _check(self.folds >= 2, "knn.folds", "must be >= 2")
        _check(bool(self.k_choices) and all(k.isdigit() and int(k) >= 1 for k in self.k_choices),
               "knn.k_choices", "must be a list of whole numbers >= 1")
        _check(self.cv_rows >= 0 and self.bench_rows >= 0, "knn.cv_rows", "and knn.bench_rows must be >= 0")
        _check(self.bench_rounds >= 1, "knn.bench_rounds", "must be >= 1")
        _check(self.batch_size >= 1, "knn.batch_size", "must be >= 1")


@dataclass(frozen=True)
class ZooConfig:
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
class TransferConfig:
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
class TuneConfig:
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
                              "bench/asha_compute_ratio (trial CPU-seconds, wall x CPUs reserved, with ASHA / "
                              "without); needs tune.asha=true", False)

    def __post_init__(self) -> None:
        _check(self.num_samples >= 1, "tune.num_samples", "must be >= 1")
        _check(0 <= self.seed < 2**32, "tune.seed", "must be in [0, 2**32) (NumPy's seed range)")
        _check(self.grace_period >= 1, "tune.grace_period", "must be >= 1")
        _check(self.reduction_factor > 1, "tune.reduction_factor", "must be > 1")
        _check(self.max_concurrent >= 0, "tune.max_concurrent", "must be >= 0 (0: sized to the cluster)")
        _check(self.refine_samples >= 0, "tune.refine_samples", "must be >= 0")
        _check(self.refine_top >= 1, "tune.refine_top", "must be >= 1")
        _check(self.asha or not self.compare_asha, "tune.compare_asha",
               "compares a search with ASHA against one without; it needs tune.asha=true")
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
    if SPACE_DISTRIBUTIONS[kind] is None:
        return
    _check(len(args) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args),
           where, f"{kind} takes two numbers [lo, hi]")
    _check(args[0] < args[1], where, f"{kind} needs lo < hi")
    _check(kind != "loguniform" or args[0] > 0, where, "loguniform needs lo > 0")
    _check(kind != "randint" or all(float(a).is_integer() for a in args), where, "randint takes whole numbers")


ENSEMBLE_SOURCES = ("sweep", "snapshots", "ema", "seeds", "models")


@dataclass(frozen=True)
class EnsembleConfig:
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


#: the compress methods with a fine-tune on Ray Train (int8_qat fine-tunes in the driver, always)
FINETUNED = ("prune", "kmeans", "deep", "lowrank")


@dataclass(frozen=True)
class CompressConfig:
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
    finetune: tuple[str, ...] = _doc(
        "methods whose weights are fine-tuned on Ray Train (any of prune, kmeans, deep, lowrank); the others "
        "are compressed once after training", FINETUNED)
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
        bad = [m for m in self.finetune if m not in FINETUNED]
        _check(not bad, "compress.finetune", f"has {bad[:1]}, which has no fine-tune; choose from {', '.join(FINETUNED)}")
        _check(self.qat_steps >= 1, "compress.qat_steps", "must be >= 1")
        _check(self.latency_repeats >= 1 and self.threads >= 0, "compress.latency_repeats",
               "must be >= 1 (and compress.threads >= 0)")


@dataclass(frozen=True)
class CharLMConfig:
    arch: Literal["rnn", "gru", "lstm", "transformer"] = _doc(
        "charlm: the network (§10: vanilla tanh RNN, GRU, LSTM; a small transformer to compare)", "lstm")
    embed: int = _doc("charlm: character embedding size", 64)
    hidden: int = _doc("charlm: hidden size of each recurrent layer (the transformer's width)", 512)
    layers: int = _doc("charlm: stacked layers", 2)
    dropout: float = _doc("charlm: dropout between layers and before the output", 0.2)
    tie_weights: bool = _doc("charlm: share the embedding with the output layer (needs embed == hidden)", False)
    heads: int = _doc("charlm: attention heads (transformer)", 4)
    context: int = _doc("charlm: the transformer's longest input (>= train.bptt)", 128)
    sample_chars: int = _doc("charlm: characters sampled after every epoch at each temperature (0: none)", 300)
    temperatures: tuple[float, ...] = _doc("charlm: sampling temperatures of the per-epoch samples", (0.5, 1.0))
    ngram_order: int = _doc("charlm: order of the add-k n-gram baseline measured beside the net (0: none)", 5)

    def __post_init__(self) -> None:
        _check(min(self.embed, self.hidden, self.layers, self.heads, self.context) >= 1, "charlm.embed",
               "embed, hidden, layers, heads and context must all be >= 1")
        _check(0 <= self.dropout < 1, "charlm.dropout", "must be in [0, 1)")
        _check(not self.tie_weights or self.embed == self.hidden or self.arch == "transformer",
               "charlm.tie_weights", f"needs charlm.embed == charlm.hidden ({self.embed} != {self.hidden})")
        _check(self.arch != "transformer" or self.hidden % self.heads == 0, "charlm.heads",
               f"must divide charlm.hidden={self.hidden}")
        _check(all(t >= 0 for t in self.temperatures), "charlm.temperatures", "must be >= 0 (0: greedy)")
        _check(self.ngram_order >= 0 and self.sample_chars >= 0, "charlm.ngram_order",
               "and charlm.sample_chars must be >= 0")


@dataclass(frozen=True)
class CaptionConfig:
    train_images: int = _doc("caption: fashion_grid images generated for train (val and test get a tenth each)", 20000)
    attention: bool = _doc("caption: soft attention over the CNN's feature map at every word (else none)", True)
    width: int = _doc("caption: channels of the CNN encoder's first stage (doubling twice)", 32)
    embed: int = _doc("caption: word embedding size", 64)
    hidden: int = _doc("caption: LSTM decoder size", 256)
    max_len: int = _doc("caption: longest caption in words, <start> and <end> included", 32)
    beam_size: int = _doc("caption: beam width of the final test decoding (1: greedy)", 3)

    def __post_init__(self) -> None:
        _check(self.train_images >= 10, "caption.train_images", "must be >= 10")
        _check(min(self.width, self.embed, self.hidden, self.beam_size) >= 1, "caption.width",
               "width, embed, hidden and beam_size must be >= 1")
        _check(self.max_len >= 4, "caption.max_len", "must be >= 4")


@dataclass(frozen=True)
class GenerateConfig:
    binarize: bool = _doc("generate: train and score on binarised images (pixel > 127, two levels); their "
                          "bits/dim do not compare with 256-level figures", False)
    latent: int = _doc("generate, vae: size of the latent code", 16)
    beta: float = _doc("generate, vae: weight of the KL term in the training loss (1: the ELBO); the bound "
                       "reported is always the ELBO's", 1.0)
    iw_samples: int = _doc("generate, vae: importance samples of the test bound (Burda et al.; 1: the ELBO)", 100)
    iw_rows: int = _doc("generate, vae: test images the importance-weighted bound is computed on (0: all)", 1000)
    sample_every: int = _doc("generate: log the 8x8 sample grid after every this many epochs (0: only the "
                             "final model's, at evaluation)", 1)
    interpolations: int = _doc("generate, vae: pairs of test images whose latent interpolation is logged", 8)
    # dcgan, cdcgan, ddpm: judged by Fashion-FID (pipelines.flows.generate_fid)
    fid_model: str = _doc("generate, dcgan/cdcgan/ddpm: the registered classifier whose features FID and KID are "
                          "measured in (models:/NAME@alias or models:/NAME/VERSION)",
                          "models:/fashion-mnist-classifier@champion")
    fid_samples: int = _doc("generate, dcgan/cdcgan/ddpm: generated images scored against as many test images "
                            "(and the calibration's sets)", 5000)
    fid_val_samples: int = _doc("generate, dcgan/cdcgan/ddpm: generated images against as many val images after "
                                "each epoch (val/fid picks the best epoch)", 1000)
    blur_sigma: float = _doc("generate, dcgan/cdcgan/ddpm: the Gaussian blur (px) of the blurred test images "
                             "FID is calibrated with", 1.0)
    class_samples: int = _doc("generate, cdcgan: images generated of each class for the classifier's accuracy", 100)
    gan_latent: int = _doc("generate, dcgan/cdcgan: size of z", 64)
    gan_loss: str = _doc("generate, dcgan/cdcgan: the generator's loss, nonsaturating (-log D(G(z))) or minimax "
                         "(log(1 - D(G(z))))", "nonsaturating")
    gan_lr: float = _doc("generate, dcgan/cdcgan: both nets' learning rate (train.lr is the other models')", 0.0002)
    beta1: float = _doc("generate, dcgan/cdcgan: Adam's beta1 for both nets (the DCGAN paper's 0.5)", 0.5)
    d_lr_ratio: float = _doc("generate, dcgan/cdcgan: the discriminator's learning rate over the generator's", 1.0)
    d_steps: int = _doc("generate, dcgan/cdcgan: discriminator updates per generator update", 1)
    label_smoothing: float = _doc("generate, dcgan/cdcgan: one-sided label smoothing (D's target for real "
                                  "images is 1 minus this)", 0.0)
    instance_noise: float = _doc("generate, dcgan/cdcgan: std of Gaussian noise added to both of D's inputs "
                                 "(images in [-1, 1])", 0.0)
    class_weight: float = _doc("generate, cdcgan: weight of the auxiliary classifier's cross-entropy in D's and "
                               "G's losses (AC-GAN: G is rewarded when D reads its images as the class asked "
                               "for); 0 leaves the projection alone", 1.0)
    ddim_steps: int = _doc("generate, ddpm: DDIM sampling steps (of the 1,000 of the noise schedule)", 50)

    def __post_init__(self) -> None:
        _check(self.latent >= 1, "generate.latent", "must be >= 1")
        _check(self.beta >= 0, "generate.beta", "must be >= 0")
        _check(self.iw_samples >= 1, "generate.iw_samples", "must be >= 1")
        _check(min(self.iw_rows, self.sample_every, self.interpolations) >= 0, "generate.iw_rows",
               "generate.sample_every and generate.interpolations must be >= 0")
        _check(self.fid_model.startswith("models:/"), "generate.fid_model",
               "must name a registered model: models:/NAME@alias or models:/NAME/VERSION")
        _check(min(self.fid_samples, self.fid_val_samples, self.class_samples) >= 2, "generate.fid_samples",
               "generate.fid_val_samples and generate.class_samples must be >= 2")
        _check(self.blur_sigma > 0, "generate.blur_sigma", "must be > 0")
        _check(self.gan_latent >= 1, "generate.gan_latent", "must be >= 1")
        _check(self.gan_loss in ("nonsaturating", "minimax"), "generate.gan_loss", "must be nonsaturating or minimax")
        _check(self.gan_lr > 0 and self.d_lr_ratio > 0, "generate.gan_lr", "and generate.d_lr_ratio must be > 0")
        _check(0 <= self.beta1 < 1, "generate.beta1", "must be in [0, 1)")
        _check(self.d_steps >= 1, "generate.d_steps", "must be >= 1")
        _check(self.class_weight >= 0, "generate.class_weight", "must be >= 0")
        _check(0 <= self.label_smoothing < 0.5, "generate.label_smoothing", "must be in [0, 0.5)")
        _check(self.instance_noise >= 0, "generate.instance_noise", "must be >= 0")
        _check(1 <= self.ddim_steps <= 1000, "generate.ddim_steps", "must be in [1, 1000]")
