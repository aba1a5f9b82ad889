"""Pipeline ``knn``: k-nearest neighbours (CS231n §2.1-2.2), k by cross-validation, registered like any model.

    visionray run knn                                   # Fashion-MNIST, L2, k from 5-fold CV
    visionray run knn knn.distance=l1 knn.k_choices=[1,3,5] knn.cv_rows=5000
    visionray run knn data=digits knn.bench_rows=0      # a tiny smoke run

Stages: ingest → preprocess → knn (cross-validate k on the train split, fit on all of it, time it
against scikit-learn) → evaluate (the test split predicted over Ray Data batches, one vectorised
distance matrix per batch) → register (a package like any net: raw uint8 images in, classes out).

Logged: ``knn/cv_accuracy`` (step = k, mean over folds) with ``plots/knn_cv.png``, ``knn/val_accuracy``
(step = k, the val split against the whole train set), ``knn/best_k``, ``bench/knn_vs_sklearn`` (our
throughput over scikit-learn's brute-force ``KNeighborsClassifier``: same data, k and threads),
``test/accuracy``, ``test/loss``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.data.shards import Manifest, read_split
from components.models import ImageClassifier, Normalize
from components.models.knn import (
    KNearestNeighbors,
    cross_validate,
    nearest_labels,
    vote,
)
from components.packaging import ModelSpec, load_package, save_package
from pipelines.config import Config
from pipelines.flows import kit
from pipelines.records import Evaluation, Prepared
from pipelines.services import names, tracking
from pipelines.services.progress import duration, say
from pipelines.services.runtime import worker_threads
from pipelines.stages.preprocess import image_dataset

MODEL_DIR = "knn_model"


@dataclass(frozen=True)
class Fitted:
    package: str  # the fitted kNN's model package directory
    k: int
    cv: dict[int, list[float]]


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:

    out: dict[str, Any] = {}
    workdir = kit.workdir_for(cfg, parent.run_id)
    prepared = kit.prepare(cfg, parent, workdir, out)
    manifest = out["manifest"]
    if "knn" in cfg.stages:
        with kit.stage("knn", parent, cfg):
            fitted = out["fitted"] = fit(cfg, prepared, workdir)
            bench = out["bench"] = benchmark(cfg, prepared, fitted) if cfg.knn.bench_rows else {}
        tracking.log_metrics({names.KNN_BEST_K: fitted.k, **bench})
        _tag_fallback(cfg, parent, manifest)
    if "evaluate" in cfg.stages:
        with kit.stage("evaluate", parent, cfg):
            evaluation = out["evaluation"] = evaluate(cfg, prepared, fitted)
        tracking.log_metrics(kit.test_metrics(evaluation))
        kit.register(cfg, parent, evaluation, prepared.num_classes, out, manifest.version)
    return out


def _tag_fallback(cfg: Config, parent: tracking.PipelineRun, manifest) -> None:
    """The L2 search's slower float64 path, when this machine has no int8 GEMM: on the run, never silent."""
    from components.models.knn import int8_gemm_fallback

    h, w, c = manifest.shape
    fallback = int8_gemm_fallback(h * w * c) if cfg.knn.distance == "l2" else None
    if fallback:
        parent.set_tags({names.KNN_FALLBACK_TAG: fallback})
        say(f"knn: warning: {fallback}")


# --------------------------------------------------------------------------- stage knn


def _split(prepared: Prepared, split: str) -> tuple[np.ndarray, np.ndarray]:
    raw = read_split(prepared.manifest(), split)
    n = prepared.rows[split]
    return raw.images[:n], raw.labels[:n]


def _rows(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×C → uint8 N×(C·H·W), the layout KNearestNeighbors keeps."""
    # a copy where the shards' array is read-only (one channel: the transpose is already contiguous)
    return torch.from_numpy(np.require(images.transpose(0, 3, 1, 2), requirements=["C", "W"])).reshape(len(images), -1)


def knn_spec(manifest: Manifest) -> ModelSpec:
    h, _, c = manifest.shape
    return ModelSpec(name="knn", in_channels=c, num_classes=len(manifest.classes), image_size=h,
                     classes=tuple(manifest.classes))


def fit(cfg: Config, prepared: Prepared, workdir: Path) -> Fitted:
    """Choose k by k-fold CV on (a prefix of) the train split, then memorise the whole train split."""
    kc = cfg.knn
    torch.set_num_threads(_threads(cfg))
    started = time.perf_counter()
    images, labels = _split(prepared, "train")
    ks = sorted({int(k) for k in kc.k_choices})
    n_cv = min(kc.cv_rows or len(labels), len(labels))
    x, y = _rows(images[:n_cv]), torch.from_numpy(labels[:n_cv]).long()
    ks = [k for k in ks if k <= n_cv - n_cv // kc.folds] or [1]
    cv = cross_validate(x, y, ks, kc.folds, prepared.num_classes, kc.distance, seed=cfg.seed)
    means = {k: float(np.mean(v)) for k, v in cv.items()}
    best = max(ks, key=lambda k: (means[k], -k))  # ties: the smaller k
    for k in ks:
        tracking.log_metrics({names.KNN_CV_ACCURACY: means[k], names.KNN_CV_ACCURACY_STD: float(np.std(cv[k]))}, step=k)
    # The val split, each k, against the whole train set: what the registered model will see.
    val_images, val_labels = _split(prepared, "val")
    ref, ref_y = _rows(images), torch.from_numpy(labels).long()
    neigh = nearest_labels(_rows(val_images), ref, ref_y, min(max(ks), len(labels)), kc.distance)
    val_acc = {k: float((vote(neigh[:, :k], prepared.num_classes).argmax(1).numpy() == val_labels).mean())
               for k in ks}
    for k in ks:
        tracking.log_metrics({names.KNN_VAL_ACCURACY: val_acc[k]}, step=k)
    tracking.log_metrics({names.VAL_ACCURACY: val_acc[best], names.KNN_BEST_K: best,
                          names.KNN_FIT_SECONDS: time.perf_counter() - started})
    tracking.log_figure(cv_figure(cv, val_acc, best, kc.distance), "plots/knn_cv.png")
    tracking.log_json({"cv": {str(k): v for k, v in cv.items()}, "val": val_acc, "best_k": best}, "knn/cv.json")
    knn = KNearestNeighbors(prepared.shape[2], prepared.num_classes, prepared.shape[0], k=best,
                            distance=kc.distance).fit(images, labels)
    model = ImageClassifier(Normalize.identity(prepared.shape[2]), knn)  # kNN compares raw pixels
    package = save_package(workdir / MODEL_DIR, model, knn_spec(prepared.manifest()))
    say(f"knn: {kc.folds}-fold CV on {n_cv:,} train images chose k={best} ({kc.distance}; CV accuracy "
        f"{means[best]:.4f}, val {val_acc[best]:.4f}) in {duration(time.perf_counter() - started)}")
    return Fitted(str(package), best, cv)


def cv_figure(cv: dict[int, list[float]], val: dict[int, float], best: int, distance: str):
    """CS231n's cross-validation plot: each fold's accuracy, the mean ± std, the val split, the chosen k."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ks = sorted(cv)
    for k in ks:
        ax.scatter([k] * len(cv[k]), cv[k], s=12, color="0.6")
    ax.errorbar(ks, [np.mean(cv[k]) for k in ks], yerr=[np.std(cv[k]) for k in ks], marker="o",
                label="cross-validation mean ± std")
    ax.plot(ks, [val[k] for k in ks], marker="s", label="val split")
    ax.axvline(best, color="k", linestyle=":", label=f"chosen k = {best}")
    ax.set(xlabel="k", ylabel="accuracy", title=f"kNN ({distance}): accuracy against k")
    ax.legend()
    return fig


def _threads(cfg: Config) -> int:
    return cfg.cluster.torch_threads or cfg.cluster.num_cpus or os.cpu_count() or 1


def _timed(fn) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def benchmark(cfg: Config, prepared: Prepared, fitted: Fitted) -> dict[str, float]:
    """Prediction throughput against scikit-learn's brute force on the same train set, queries, k, threads:
    ``knn.bench_rounds`` passes over every query each, in turns (ours, theirs, ours, …); the ratio is the
    median of the rounds' ratios, ``bench/knn_vs_sklearn_spread`` the largest minus the smallest."""
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    from pipelines.flows.bench import alternate, ratio_stats

    threads = _threads(cfg)
    torch.set_num_threads(threads)
    model, _ = load_package(fitted.package)
    images, labels = _split(prepared, "train")
    queries, _ = _split(prepared, "val")  # not the test split: that is for the evaluate stage only
    queries = queries[:cfg.knn.bench_rows]
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0  # noqa: E731 - sklearn's input
    sk = KNeighborsClassifier(n_neighbors=fitted.k, algorithm="brute", p=1 if cfg.knn.distance == "l1" else 2,
                              n_jobs=threads).fit(flat(images), labels)
    sk_queries = flat(queries)
    rounds = cfg.knn.bench_rounds
    with threadpool_limits(threads):
        model.predict_uint8(queries[:8]), sk.predict(sk_queries[:8])  # warm-up: thread pools, allocator
        runs = alternate({"ours": lambda: _timed(lambda: model.predict_uint8(queries)[0].numpy()),
                          "theirs": lambda: _timed(lambda: sk.predict(sk_queries))}, rounds)  # A B A B …
    ours_s, theirs_s = (float(np.median([t for t, _ in runs[side]])) for side in ("ours", "theirs"))
    ratio, spread = ratio_stats([t for t, _ in runs["theirs"]], [t for t, _ in runs["ours"]])
    ours, theirs = runs["ours"][-1][1], runs["theirs"][-1][1]
    result = {names.KNN_VS_SKLEARN: ratio, names.KNN_VS_SKLEARN_SPREAD: spread,
              names.KNN_IMAGES_PER_S: len(queries) / ours_s, names.SKLEARN_KNN_IMAGES_PER_S: len(queries) / theirs_s,
              names.KNN_SKLEARN_AGREEMENT: float((ours == theirs).mean())}
    tracking.log_metrics(result)
    tracking.log_params({"bench.threads": threads, "bench.queries": len(queries), "bench.train_rows": len(labels)})
    say(f"knn: {result[names.KNN_IMAGES_PER_S]:.0f} images/s vs scikit-learn's "
        f"{result[names.SKLEARN_KNN_IMAGES_PER_S]:.0f} ({result[names.KNN_VS_SKLEARN]:.2f}x, {threads} threads, "
        f"{len(labels):,} train rows, k={fitted.k}, median of {rounds} alternating rounds, spread "
        f"{spread:.2f}; same predictions on "
        f"{result[names.KNN_SKLEARN_AGREEMENT]:.1%})")
    return result


# --------------------------------------------------------------------------- stage evaluate


class KnnBatchPredictor:
    """A Ray Data actor: loads the package once, predicts each batch as the served model does."""

    def __init__(self, package: str, threads: int):
        torch.set_num_threads(threads)
        self.model, _ = load_package(package)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pred, probs = self.model.predict_uint8(np.ascontiguousarray(batch["image"]))
        return {"idx": batch["idx"], "label": batch["label"], "pred": pred.numpy(), "probs": probs.numpy()}


def predict_split(cfg: Config, prepared: Prepared, package: str, split: str = "test") -> dict[str, np.ndarray]:
    """Every row of ``split`` through the kNN, over Ray Data batches on ``cluster.num_workers`` actors."""
    from ray.data import ActorPoolStrategy

    c = cfg.cluster
    rows = prepared.rows[split]
    # One block per batch: the actors share the split (a single shard would go to one actor).
    ds = image_dataset(prepared.manifest(), split, rows).repartition(max(1, -(-rows // cfg.knn.batch_size)))
    ds = ds.map_batches(
        KnnBatchPredictor, fn_constructor_kwargs={"package": package, "threads": worker_threads(c)},
        batch_size=cfg.knn.batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=c.num_workers),
        num_cpus=c.cpus_per_worker)
    parts = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("idx", "label", "pred", "probs")}
    order = np.argsort(out["idx"], kind="stable")  # Ray Data may finish batches out of order
    return {k: v[order] for k, v in out.items()}


def evaluate(cfg: Config, prepared: Prepared, fitted: Fitted) -> Evaluation:
    from components.metrics import confusion_matrix, per_class_accuracy
    from components.plots import confusion_matrix_figure, per_class_accuracy_figure

    started = time.perf_counter()
    out = predict_split(cfg, prepared, fitted.package, "test")
    seconds = time.perf_counter() - started
    accuracy = float((out["pred"] == out["label"]).mean())
    # Cross-entropy of the vote fractions (floored at e^-30, as the model's log-vote logits are).
    p_true = out["probs"][np.arange(len(out["label"])), out["label"]]
    loss = float(-np.log(np.maximum(p_true, np.exp(-30.0))).mean())
    model, spec = load_package(fitted.package)
    images, labels = _split(prepared, "test")
    served, _ = model.predict_uint8(images[:256])
    if not np.array_equal(served.numpy(), out["pred"][:256]) or not np.array_equal(labels, out["label"]):
        raise RuntimeError("the served kNN (raw uint8 images) disagrees with the Ray Data predictions.")
    cm = confusion_matrix(out["pred"], out["label"], spec.num_classes)
    classes = list(spec.classes)
    tracking.log_metrics({names.TEST_LOSS: loss, names.TEST_ACCURACY: accuracy,
                          names.TEST_IMAGES_PER_S: len(labels) / seconds})
    tracking.log_figure(confusion_matrix_figure(cm, classes), "plots/confusion_matrix.png")
    tracking.log_figure(per_class_accuracy_figure(per_class_accuracy(cm), classes), "plots/per_class_accuracy.png")
    say(f"evaluate: kNN (k={fitted.k}) test accuracy {accuracy:.4f} on {len(labels):,} images over Ray Data "
        f"({len(labels) / seconds:.0f} images/s)")
    example = images[:2].copy()
    return Evaluation.of_classifier(model_dir=fitted.package, test_loss=loss, test_accuracy=accuracy,
                                    example=example[..., 0] if example.shape[-1] == 1 else example)


# --------------------------------------------------------------------------- zoo baseline


def knn_baseline(cfg: Config, prepared: Prepared, manifest: Manifest | None = None) -> dict[str, Any]:
    """The zoo's kNN entry: k by CV as in the pipeline, the test split scored on this process.

    Call inside an active MLflow run (the zoo's); returns ``test_accuracy``, ``params`` (0: kNN
    learns none; it stores ``train_rows`` images), ``seconds``, ``k`` and ``train_rows``.
    """
    import tempfile

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="visionray-knn-") as tmp:
        fitted = fit(cfg, prepared, Path(tmp))
        model, _ = load_package(fitted.package)
        images, labels = _split(prepared, "test")
        pred = np.concatenate([model.predict_uint8(images[i:i + cfg.knn.batch_size])[0].numpy()
                               for i in range(0, len(labels), cfg.knn.batch_size)])
    return {"test_accuracy": float((pred == labels).mean()), "params": 0, "seconds": time.perf_counter() - started,
            "k": fitted.k, "train_rows": prepared.rows["train"]}
