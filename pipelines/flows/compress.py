"""Pipeline ``compress`` (§15): take a registered model, make every compressed variant, measure, register.

    visionray run compress                                        # the champion of <dataset>-classifier
    visionray run compress compress.source=models:/fashion-mnist-classifier/3 compress.methods=[deep,int8_static]

Stages: ``ingest`` and ``preprocess`` (the same data and test split as training), ``compress`` (one
nested run per method under the stage's run, tagged ``visionray.stage=compress`` and
``visionray.compress.method=<method>``), ``report`` (a table and Pareto plots on the parent run). Each
variant is a model package (components.compression.package) evaluated on the test split from raw
images, timed at batch 1 and 64 with the same thread count, each model alone in a fresh process
(``pipelines/flows/compress_timing.py``: the fp32 source eager at the start and at the end, a drift
between the two flagged, and compiled once), and registered as a new version of the same registered
model tagged ``compression=<method>``; no alias moves. ``compress/speedup`` is against eager fp32,
``compress/speedup_vs_compiled`` against the same fp32 weights under ``torch.compile``. A method that
fails leaves the others' results and versions standing, and the run then fails (exit 1) naming it.
Fine-tunes (pruning masks, centroids, low-rank factors) run on Ray Train through
``pipelines.stages.train.run`` with hooks.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from components.compression import binary, kmeans, lowrank, package, prune
from components.compression.latency import fallback_of
from components.packaging import ModelSpec, load_package
from pipelines.config import Config, ConfigError
from pipelines.flows.compress_timing import DRIFT_TOLERANCE, Clock
from pipelines.records import Evaluation, Prepared
from pipelines.services import names, registry, tracking
from pipelines.services.progress import say
from pipelines.stages import evaluate


@dataclass
class Variant:
    """One row of the report."""

    method: str
    model_dir: str | None
    accuracy: float
    loss: float
    size_bytes: int
    latency_b1: float
    latency_b64: float
    extra: dict[str, float] = field(default_factory=dict)
    version: int | None = None
    run_id: str | None = None
    #: the slower path its runtime fell back to (int8 without torch.compile), None when it ran as meant
    fallback: str | None = None

    def latency(self, batch: int) -> float:
        return self.latency_b1 if batch == 1 else self.latency_b64

    def speedup(self, base: "Variant", batch: int) -> float:
        """``base``'s latency (fp32 eager, or compiled, timed alone) over this variant's, both timed alone."""
        return base.latency(batch) / self.latency(batch)


@dataclass
class Context:
    cfg: Config  # model.* set to the source's architecture, train.* to the fine-tune recipe
    prepared: Prepared
    parent: tracking.PipelineRun
    source_dir: Path
    source: Any  # the fp32 ImageClassifier
    spec: ModelSpec
    workdir: Path
    clock: Clock
    cache: dict[str, Any] = field(default_factory=dict)

    def tunes(self, method: str) -> bool:
        """Whether ``method``'s weights are fine-tuned on Ray Train (compress.finetune, finetune_epochs > 0)."""
        c = self.cfg.compress
        return c.finetune_epochs > 0 and method in c.finetune

    def fresh(self):
        model, _ = load_package(self.source_dir)
        return model

    def train_batches(self, rows: int):
        from components.data.shards import read_split
        from components.engine import BatchPrep

        split = read_split(self.prepared.manifest(), "train")
        n = min(rows, len(split.labels))
        return [x for x, _ in map(BatchPrep(), evaluate.numpy_batches(split.images[:n], split.labels[:n], 128))]

    def shuffled_batches(self, steps: int, batch: int = 128, seed: int = 0):
        """``steps`` (images, labels) batches drawn without replacement (reshuffled each pass) from the train split."""
        from components.data.shards import read_split
        from components.engine import BatchPrep

        split = read_split(self.prepared.manifest(), "train")
        n, rng, order = self.prepared.rows["train"], np.random.default_rng(seed), np.empty(0, np.int64)
        prep = BatchPrep()
        for _ in range(steps):
            if len(order) < batch:
                order = np.concatenate([order, rng.permutation(n)])
            take, order = np.sort(order[:batch]), order[batch:]
            yield prep({"image": split.images[take], "label": split.labels[take]})


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines.flows.kit import prepare, stage, workdir_for

    out: dict[str, Any] = {}
    workdir = workdir_for(cfg, parent.run_id)
    prepared = prepare(cfg, parent, workdir, out)
    if prepared is None or "compress" not in cfg.stages:
        return out
    with stage("compress", parent, cfg) as stage_run_id:
        variants = out["variants"] = run(cfg, prepared, parent, stage_run_id, workdir, out)
    if "report" in cfg.stages:
        with stage("report", parent, cfg):
            report(variants)
        report(variants, echo=False)  # the parent run's copy: the one page that compares every method
    if out.get("failed"):  # after every other method is measured, registered and reported
        raise MethodsFailed(out["failed"])
    return out


class MethodsFailed(RuntimeError):
    """Requested methods that failed: the run fails (exit 1) once the others are registered."""

    def __init__(self, failed: dict[str, str]):
        self.failed = dict(failed)
        super().__init__(f"compress: {len(failed)} of the requested methods failed: "
                         + "; ".join(f"{m} ({why})" for m, why in failed.items())
                         + ". The other variants are registered; see the method runs marked FAILED.")


def run(cfg: Config, prepared: Prepared, parent: tracking.PipelineRun, stage_run_id: str,
        workdir: Path, out: dict[str, Any] | None = None) -> list[Variant]:
    threads = cfg.compress.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    source_uri = cfg.compress.source or f"models:/{cfg.registered_model_name}@{names.CHAMPION}"
    try:
        source_dir = registry.fetch_package(source_uri, workdir / "source", cfg.registered_model_name)
    except ConfigError as e:  # its sentence names retrain's key; this pipeline's key is compress.source
        raise ConfigError(f"compress.source={source_uri} cannot be loaded: "
                          f"{str(e).split(' cannot be downloaded ', 1)[-1]}") from None
    source, spec = load_package(source_dir)
    if getattr(source, "net", None) is None:
        raise ConfigError(f"compress.source={source_uri} is not a plain fp32 classifier (already compressed?).")
    images, _ = evaluate.test_split(prepared)
    clock = Clock(threads, cfg.compress.latency_repeats, images)
    ctx = Context(_finetune_config(cfg, spec), prepared, parent, source_dir, source, spec, workdir / "variants", clock)
    tracking.set_tags({names.COMPRESS_SOURCE_TAG: source_uri})
    say(f"compress: {spec.name} from {source_uri}, {len(cfg.compress.methods)} method(s), timing with "
        f"{threads} thread(s), each model alone in its own process")
    baseline = measure(ctx, "fp32", str(source_dir))  # eager, alone, before any other runtime ran anywhere
    compiled = measure(ctx, "fp32_compiled", str(source_dir), mode="compiled", scored=baseline)
    _log_baseline(baseline, compiled)
    variants, failed = [baseline, compiled], {}
    for method in cfg.compress.methods:
        try:
            with tracking.method_run(f"compress-{method}", parent, stage_run_id,
                                     {names.STAGE_TAG: "compress", names.COMPRESS_METHOD_TAG: method}) as run_id:
                variants.append(run_method(ctx, method, baseline, compiled, run_id))
        except Exception as e:  # noqa: BLE001 - one method failing leaves the others' results standing
            failed[method] = f"{type(e).__name__}: {str(e)[:300]}"
            say(f"compress: {method} failed ({failed[method]}); its run is marked FAILED")
    _check_drift(ctx, str(source_dir))
    if failed:
        tracking.set_tags({names.COMPRESS_FAILED_TAG: ",".join(failed)})
        parent.set_tags({names.COMPRESS_FAILED_TAG: ",".join(failed)})
        if out is not None:
            out["failed"] = failed
    return variants


def _log_baseline(baseline: Variant, compiled: Variant) -> None:
    tracking.log_metrics({names.COMPRESS_SIZE_BYTES: baseline.size_bytes, names.COMPRESS_LATENCY_MS: baseline.latency_b64,
                          names.COMPRESS_LATENCY_MS_B1: baseline.latency_b1, names.TEST_ACCURACY: baseline.accuracy,
                          names.COMPRESS_COMPILED_LATENCY_MS: compiled.latency_b64,
                          names.COMPRESS_COMPILED_LATENCY_MS_B1: compiled.latency_b1})
    say(f"compress: fp32 source: test accuracy {baseline.accuracy:.4f}, {baseline.size_bytes:,} bytes; timed alone "
        f"{baseline.latency_b1:.2f} ms at batch 1, {baseline.latency_b64:.2f} ms at batch 64 (eager), "
        f"{compiled.latency_b1:.2f} / {compiled.latency_b64:.2f} ms compiled")


def _check_drift(ctx: Context, source_dir: str) -> None:
    """fp32 eager timed alone again after every method: a change means the machine's load moved under the run."""
    clock = ctx.clock
    clock.baseline(source_dir)
    first, last, drift = clock.eager[0]["ms"][64], clock.eager[-1]["ms"][64], clock.drift()
    tracking.log_metrics({names.COMPRESS_BASELINE_DRIFT: drift, names.COMPRESS_BASELINE_END_MS: last})
    if clock.drifted():
        note = (f"the fp32 baseline moved {100 * drift:.0f} % between the start and the end of the run "
                f"({first:.2f} -> {last:.2f} ms at batch 64; tolerance {100 * DRIFT_TOLERANCE:.0f} %): the "
                f"machine's load changed, so the speed-ups of this run are not comparable")
        tracking.set_tags({names.COMPRESS_DRIFT_TAG: note})
        ctx.parent.set_tags({names.COMPRESS_DRIFT_TAG: note})
        say(f"compress: warning: {note}")
    else:
        say(f"compress: fp32 baseline at the end {last:.2f} ms at batch 64 ({100 * drift:.1f} % from the start)")


def _finetune_config(cfg: Config, spec: ModelSpec) -> Config:
    """The fine-tunes' config: the source's architecture, a short cosine schedule at a low rate."""
    model = dataclasses.replace(cfg.model, name=spec.name, width=spec.width or 0, depth=spec.depth or cfg.model.depth,
                                dropout=spec.dropout, batchnorm=spec.batchnorm)
    data = dataclasses.replace(cfg.data, normalization=spec.normalization)
    train = dataclasses.replace(cfg.train, epochs=max(1, cfg.compress.finetune_epochs), lr=cfg.compress.finetune_lr,
                                warmup_epochs=0.0, schedule="cosine", snapshots=0, ema_decay=0.0)
    return dataclasses.replace(cfg, model=model, data=data, train=train)


def run_method(ctx: Context, method: str, baseline: Variant, compiled: Variant, run_id: str) -> Variant:
    directory = ctx.workdir / method
    shutil.rmtree(directory, ignore_errors=True)
    extra = METHODS[method](ctx, directory, run_id) or {}
    register = method != "bf16"
    variant = measure(ctx, method, str(directory) if register else str(ctx.source_dir),
                      mode="bf16" if method == "bf16" else "eager")
    variant.extra.update(extra)
    variant.run_id = run_id
    if method == "bf16":
        variant.size_bytes = baseline.size_bytes  # same weights; autocast changes only the arithmetic
    metrics = {names.COMPRESS_SIZE_BYTES: variant.size_bytes,
               names.COMPRESS_SIZE_RATIO: baseline.size_bytes / variant.size_bytes,
               names.COMPRESS_LATENCY_MS: variant.latency_b64, names.COMPRESS_LATENCY_MS_B1: variant.latency_b1,
               names.COMPRESS_SPEEDUP: variant.speedup(baseline, 64),
               names.COMPRESS_SPEEDUP_B1: variant.speedup(baseline, 1),
               names.COMPRESS_SPEEDUP_VS_COMPILED: variant.speedup(compiled, 64),
               names.COMPRESS_SPEEDUP_VS_COMPILED_B1: variant.speedup(compiled, 1),
               names.COMPRESS_ACCURACY_DELTA: variant.accuracy - baseline.accuracy,
               names.TEST_ACCURACY: variant.accuracy, names.TEST_LOSS: variant.loss, **variant.extra}
    tracking.log_metrics(metrics)
    if variant.fallback:  # never silent: the figures above are the slower path's
        tracking.set_tags({names.COMPRESS_FALLBACK_TAG: variant.fallback})
        say(f"compress: warning: {method} ran on a fallback path: {variant.fallback}")
    if register and ctx.cfg.registry.enabled:
        # run_id: the method run, which holds the variant's metrics (the version's source run)
        tags = {names.COMPRESSION: method, names.DATASET_VERSION: ctx.prepared.manifest().version,
                names.GIT_SHA: ctx.parent.tags.get(names.GIT_SHA, ""), names.RUN_ID: run_id}
        evaluation = Evaluation.of_classifier(str(directory), variant.loss, variant.accuracy, _example(ctx))
        variant.version = registry.register_version(ctx.cfg, evaluation, ctx.spec.num_classes, tags,
                                                    REQUIREMENTS.get(method, ()))
    say(f"compress: {method}: test accuracy {variant.accuracy:.4f} ({100 * metrics[names.COMPRESS_ACCURACY_DELTA]:+.2f} pt), "
        f"{variant.size_bytes:,} bytes ({metrics[names.COMPRESS_SIZE_RATIO]:.1f}x smaller), "
        f"{metrics[names.COMPRESS_SPEEDUP]:.2f}x at batch 64 ({metrics[names.COMPRESS_SPEEDUP_VS_COMPILED]:.2f}x vs "
        f"compiled fp32), {metrics[names.COMPRESS_SPEEDUP_B1]:.2f}x at batch 1"
        + (f", registered as v{variant.version}" if variant.version else ""))
    return variant


def measure(ctx: Context, method: str, model_dir: str, mode: str = "eager", scored: Variant | None = None) -> Variant:
    """Test accuracy (raw images in, as served; ``scored``: taken from that variant, same weights), bytes on
    disk, and latency at batch 1 and 64 timed alone in a fresh process (``mode``: eager, compiled, bf16)."""
    from components import engine
    from components.losses import build_criterion

    fallback = None
    if scored is None:
        model, _ = load_package(model_dir)
        images, labels = evaluate.test_split(ctx.prepared)
        stats, _, _ = engine.evaluate(model, build_criterion(ctx.cfg.train.loss),
                                      map(engine.BatchPrep(), evaluate.numpy_batches(images, labels, 512)),
                                      precision="bf16" if mode == "bf16" else "fp32")
        if mode != "bf16" and not np.array_equal(model.predict_uint8(images[:256])[0].numpy(),
                                                 _predict_float(model, images[:256])):
            raise RuntimeError(f"{method}: the serving path (raw uint8 images) disagrees with the evaluation loop")
        accuracy, loss, fallback = stats.accuracy, stats.loss, fallback_of(model)
        del model  # its runtime's threads: not around while the next model is timed (in its own process anyway)
    else:
        accuracy, loss = scored.accuracy, scored.loss
    timing = ctx.clock.baseline(model_dir, mode) if method in ("fp32", "fp32_compiled") else \
        ctx.clock.time(model_dir, mode)
    return Variant(method, model_dir, accuracy, loss, package.package_bytes(model_dir), timing["ms"][1],
                   timing["ms"][64], fallback=fallback or timing["fallback"])


def _predict_float(model, images: np.ndarray) -> np.ndarray:
    from components.engine import BatchPrep

    x, _ = BatchPrep()({"image": images, "label": np.zeros(len(images), dtype=np.int64)})
    with torch.no_grad():
        return model(x).argmax(1).numpy()


def _example(ctx: Context) -> np.ndarray:
    images, _ = evaluate.test_split(ctx.prepared)
    example = images[:2].copy()
    return example[..., 0] if example.shape[-1] == 1 else example


# --------------------------------------------------------------------------- the methods


def _finetune(ctx: Context, method: str, run_id: str, init: torch.nn.Module, hooks: list) -> Path:
    """Fine-tune ``init``'s net on Ray Train with ``hooks``; the last epoch's checkpoint directory."""
    from pipelines.stages import train

    trained = train.run(ctx.cfg, ctx.prepared, ctx.parent.uri, run_id, f"{ctx.cfg.pipeline}-{ctx.parent.run_id}-{method}",
                        ctx.workdir / f"{method}-train", init_state=init.net.state_dict(), hooks=hooks)
    return Path(trained.last_checkpoint or trained.best_checkpoint)


def _load_weights(model: torch.nn.Module, checkpoint: Path) -> torch.nn.Module:
    from components.packaging import WEIGHTS_FILE

    model.load_state_dict(torch.load(checkpoint / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval()


def _pruned(ctx: Context, run_id: str, method: str) -> torch.nn.Module:
    """The source pruned to compress.sparsity, iteratively fine-tuned with masks where ``method`` fine-tunes
    (cached: deep reuses prune's)."""
    key = f"pruned-{ctx.tunes(method)}"
    if key not in ctx.cache:
        c = ctx.cfg.compress
        model = ctx.fresh()
        if ctx.tunes(method):
            hook = (prune.MaskHook,
                    {"sparsity": c.sparsity, "scope": c.prune_scope, "epochs": c.finetune_epochs,
                     "metric": names.COMPRESS_SPARSITY})
            model = _load_weights(model, _finetune(ctx, "prune", run_id, model, [hook]))
        prune.prune_(model.net, c.sparsity, c.prune_scope)  # exact: the masked weights are zero already
        ctx.cache[key] = model
    model = ctx.fresh()
    model.load_state_dict(ctx.cache[key].state_dict())
    return model


def _shared(ctx: Context, model: torch.nn.Module, method: str, run_id: str):
    books = kmeans.share_(model.net, ctx.cfg.compress.clusters)
    if ctx.tunes(method):
        hook = (kmeans.ShareHook, {"indices": {n: b.indices for n, b in books.items()}})
        model = _load_weights(model, _finetune(ctx, method, run_id, model, [hook]))
        books = kmeans.enforce_(model.net, {n: b.indices for n, b in books.items()})
    return model, books


def m_prune(ctx, directory, run_id):
    model = _pruned(ctx, run_id, "prune")
    package.save_sparse(directory, model, ctx.spec, "prune")
    return {names.COMPRESS_SPARSITY: prune.sparsity_of(model.net)}


def m_kmeans(ctx, directory, run_id):
    model, books = _shared(ctx, ctx.fresh(), "kmeans", run_id)
    package.save_shared(directory, model, ctx.spec, books, "kmeans")
    return {names.COMPRESS_CLUSTERS: ctx.cfg.compress.clusters}


def m_deep(ctx, directory, run_id):
    model, books = _shared(ctx, _pruned(ctx, run_id, "deep"), "deep", run_id)
    package.save_deep(directory, model, ctx.spec, books, "deep")
    return {names.COMPRESS_SPARSITY: prune.sparsity_of(model.net), names.COMPRESS_CLUSTERS: ctx.cfg.compress.clusters}


def _int8(ctx, directory, dynamic: bool, method: str):
    from components.compression import quantize

    batches = ctx.train_batches(ctx.cfg.compress.calibration_rows)
    program = quantize.quantize(ctx.fresh(), batches, batches[0][:2].contiguous(), dynamic=dynamic)
    package.save_int8(directory, program, ctx.spec, batches[0][:2].contiguous(), method)


def m_int8_static(ctx, directory, run_id):
    _int8(ctx, directory, False, "int8_static")


def m_int8_dynamic(ctx, directory, run_id):
    _int8(ctx, directory, True, "int8_dynamic")


def m_int8_qat(ctx, directory, run_id):
    """Quantisation-aware fine-tune (fake int8 in the forward pass), then the same int8 package as int8_static.

    Runs in-process, not on Ray Train: the prepared program is a torch.export graph, which DDP does not wrap."""
    from components.compression import quantize
    from components.losses import build_criterion

    c = ctx.cfg.compress
    say(f"compress: int8_qat: {c.qat_steps} fake-quantised steps at batch 128, lr {c.finetune_lr}")
    batches = list(ctx.shuffled_batches(c.qat_steps, seed=ctx.cfg.seed))  # the train split is read once
    example = batches[0][0][:4]
    program, losses = quantize.quantize_qat(ctx.fresh(), batches, example, c.finetune_lr,
                                            build_criterion(ctx.cfg.train.loss))
    for step in range(0, len(losses), 10):
        tracking.log_metrics({names.COMPRESS_QAT_LOSS: float(np.mean(losses[step:step + 10]))}, step=step)
    package.save_int8(directory, program, ctx.spec, example[:2].contiguous(), "int8_qat")
    return {names.COMPRESS_QAT_STEPS: len(losses), names.COMPRESS_QAT_FINAL_LOSS: float(np.mean(losses[-10:]))}


def m_onnx(ctx, directory, run_id):
    from components.compression import onnx

    example = ctx.train_batches(64)[0][:2].contiguous()
    package.save_onnx(directory, ctx.fresh(), ctx.spec, example, "onnx")
    images, _ = evaluate.test_split(ctx.prepared)
    x = torch.from_numpy(images[:256]).float().div(255)
    x = (x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)).contiguous()
    with torch.no_grad():
        diff = float((onnx.session(directory / package.ONNX_FILE, 1)(x) - ctx.source(x)).abs().max())
    tracking.log_artifact(directory / package.ONNX_FILE, "onnx")
    if diff > 1e-3:
        raise RuntimeError(f"onnxruntime's logits differ from torch's by up to {diff:.2e} (> 1e-3)")
    return {names.COMPRESS_ONNX_MAX_DIFF: diff}


def m_lowrank(ctx, directory, run_id):
    model = ctx.fresh()
    ranks = lowrank.choose_ranks(model.net, ctx.cfg.compress.energy)
    if ctx.tunes("lowrank"):
        checkpoint = _finetune(ctx, "lowrank", run_id, model,
                               [(lowrank.LowRankHook, {"ranks": ranks})])
        model = _load_weights(_rebuilt(ctx, ranks), checkpoint)  # the trained factors
    else:
        lowrank.factorise_(model.net, ranks)
    package.save_lowrank(directory, model, ctx.spec, ranks, "lowrank")
    return {names.COMPRESS_WEIGHTS_KEPT: lowrank.count_weights(model.net) / lowrank.count_weights(ctx.source.net),
            names.COMPRESS_LAYERS_FACTORISED: len(ranks)}


def _rebuilt(ctx: Context, ranks: dict[str, int]) -> torch.nn.Module:
    model = ctx.fresh()
    lowrank.factorise_(model.net, ranks)
    return model


def _coded(ctx, directory, method: str):
    model = ctx.fresh()
    codes = (binary.ternarise_ if method == "ternary" else binary.binarise_)(model.net)
    binary.recalibrate_bn(model, ctx.train_batches(2048))
    package.save_codes(directory, model.eval(), ctx.spec, codes, method)


def m_ternary(ctx, directory, run_id):
    _coded(ctx, directory, "ternary")


def m_binary(ctx, directory, run_id):
    _coded(ctx, directory, "binary")


def m_bf16(ctx, directory, run_id):
    """Mixed precision at inference: the same fp32 package under bf16 autocast (timed, not registered)."""


METHODS: dict[str, Callable[[Context, Path, str], dict[str, float] | None]] = {
    "prune": m_prune, "kmeans": m_kmeans, "deep": m_deep, "int8_static": m_int8_static,
    "int8_dynamic": m_int8_dynamic, "onnx": m_onnx, "lowrank": m_lowrank, "ternary": m_ternary,
    "binary": m_binary, "bf16": m_bf16, "int8_qat": m_int8_qat,
}


def _requirement(dist: str) -> str:
    from importlib.metadata import version

    return f"{dist}=={version(dist)}"


class _Requirements(dict):
    """Extra pip requirements a served variant needs, resolved when asked (nothing heavy at import)."""

    def get(self, method, default=()):
        if method in ("int8_static", "int8_dynamic", "int8_qat"):
            return (_requirement("torchao"),)
        if method == "onnx":
            return (_requirement("onnxruntime"),)
        return default


REQUIREMENTS = _Requirements()


# --------------------------------------------------------------------------- report


def report(variants: list[Variant], echo: bool = True) -> None:
    from components.compression.report import pareto_figure, table

    rows = rows_of(variants)
    tracking.log_text(table(rows), names.COMPRESS_REPORT_ARTIFACT)
    tracking.log_json(rows, "compress/report.json")
    tracking.log_figure(pareto_figure(rows), "compress/pareto.png")
    if echo:
        say("compress report:\n" + table(rows))


def rows_of(variants: list[Variant]) -> list[dict[str, Any]]:
    """One row per variant; variants[0] is fp32 eager, variants[1] the same weights compiled (both timed alone)."""
    base, compiled = variants[0], variants[1]
    return [{"method": v.method, "test_accuracy": v.accuracy, "accuracy_delta_pt": 100 * (v.accuracy - base.accuracy),
             "size_bytes": v.size_bytes, "size_ratio": base.size_bytes / v.size_bytes,
             "latency_ms_b1": v.latency_b1, "latency_ms_b64": v.latency_b64,
             "speedup_b1": v.speedup(base, 1), "speedup_b64": v.speedup(base, 64),
             "speedup_vs_compiled_b64": v.speedup(compiled, 64), "version": v.version,
             **({"fallback": v.fallback} if v.fallback else {}),
             **{k.replace("compress/", ""): x for k, x in v.extra.items()}} for v in variants]
