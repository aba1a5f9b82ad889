"""The generate pipeline's FID side: the feature model, the per-epoch val FID, and the test evaluation of a
generator without a likelihood (``model=dcgan|cdcgan|ddpm``).

    visionray run quickstart                       # registers fashion-mnist-classifier: the judge
    visionray run generate model=dcgan             # generate.fid_model=models:/fashion-mnist-classifier@champion
    visionray run generate model=cdcgan data=digits generate.fid_model=models:/digits-classifier@champion

Before anything trains, ``generate.fid_model`` is fetched from the registry and checked against the data
(its image size and channels); a missing model stops the run with one sentence naming the key. Training
measures the val FID after every epoch (components.fid_hook), which picks the best epoch. Evaluation, on
the test split (``generate.fid_samples`` generated images against as many test images), logs:

* ``test/fid``, ``test/kid`` and the run's own scale: ``test/fid_real_train`` (train images: the floor),
  ``test/fid_blurred`` (the same test images blurred by ``generate.blur_sigma`` px), ``test/fid_noise``
  (uniform noise), KID likewise, and ``test/fid_over_blurred`` (target ≤ 3);
* a conditional model: the classifier's accuracy on ``generate.class_samples`` images generated of each
  class, ``test/class_accuracy`` and ``test/accuracy_<class>``;
* the nearest-neighbour check: the first 8 grid samples above their 3 nearest training images
  (``samples/nearest_train.png``) and ``test/nn_copy_ratio`` (≈ 1 or more: no copying).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import Config, ConfigError
from pipelines.records import Prepared
from pipelines.services import names, registry, tracking
from pipelines.services.progress import say

FID_MODEL_DIR = "fid_model"
VAL_IMAGES = "fid_val.npy"
#: The models judged by FID (their class's ``primary``; named here so the pre-flight check imports no torch).
JUDGED_MODELS = ("dcgan", "cdcgan", "ddpm")


def check_registered(cfg: Config) -> None:
    """Pre-flight, before any run or Ray starts: ``generate.fid_model`` names a registered model (and that
    alias or version) in the configured store; a ConfigError naming the key otherwise."""
    if cfg.model.name not in JUDGED_MODELS:
        return
    uri = cfg.generate.fid_model
    store = tracking.resolve_uri(cfg.tracking.uri)
    name, _, version = uri.removeprefix("models:/").partition("/")
    name, _, alias = name.partition("@")
    aliases = registry.model_aliases(store, name)
    missing = aliases is None or (alias and alias not in aliases) or \
        (version and (not version.isdigit() or int(version) not in registry.model_versions(store, name)))
    if missing:
        raise ConfigError(f"generate.fid_model={uri} is not registered in {store}; register a classifier of "
                          f"{cfg.data.name} first (visionray run quickstart data={cfg.data.name}) or point "
                          f"generate.fid_model at one.")


def feature_model(cfg: Config, workdir: Path) -> Path:
    """The judge's package (``generate.fid_model``), fetched once into ``workdir`` before anything else runs;
    a ConfigError naming the key when it is not registered."""
    uri = cfg.generate.fid_model
    hint = (f"; register a classifier of {cfg.data.name} first (visionray run quickstart data={cfg.data.name}) "
            f"or point generate.fid_model at one.")
    return registry.fetch_registered(uri, workdir / FID_MODEL_DIR, "generate.fid_model", hint)


def check_feature_model(cfg: Config, prepared: Prepared, package: Path) -> None:
    """The judge must be an image classifier of images like the data's (a ConfigError naming the key)."""
    from components.packaging import ModelSpec, load_package

    uri = cfg.generate.fid_model
    _, spec = load_package(package)
    if not isinstance(spec, ModelSpec) or spec.task != "classification":
        raise ConfigError(f"generate.fid_model={uri} is a {getattr(spec, 'task', '?')} model, not an image classifier.")
    h, _, c = prepared.shape
    if (spec.image_size, spec.in_channels) != (int(h), int(c)):
        raise ConfigError(f"generate.fid_model={uri} takes {spec.image_size}×{spec.image_size}×{spec.in_channels} "
                          f"images; {cfg.data.name} has {h}×{h}×{c}: register a classifier of this data.")
    say(f"generate: FID in the features of {uri} ({spec.name}, {len(spec.classes)} classes)")


def train_hooks(cfg: Config, prepared: Prepared, workdir: Path, package: Path) -> list[Any]:
    """The val-FID hook, its val images written once under ``workdir`` (every local worker reads them)."""
    from components.data.shards import read_split
    from components.fid_hook import FidHook

    n = min(cfg.generate.fid_val_samples, prepared.rows["val"])
    np.save(workdir / VAL_IMAGES, read_split(prepared.manifest(), "val").images[:n])
    return [(FidHook, {"classifier": str(package), "images": str(workdir / VAL_IMAGES), "samples": n,
                       "keys": {"fid": names.metric(names.VAL, names.FID), "kid": names.metric(names.VAL, names.KID)}})]


def _generated(task: Any, model: Any, seeds: np.ndarray, label: int | None = None, batch: int = 500) -> np.ndarray:
    """Images from the served form (``task.predict``), in batches."""
    params = None if label is None else {"label": int(label)}
    parts = [task.predict(model, seeds[i:i + batch], params)["images"] for i in range(0, len(seeds), batch)]
    return np.concatenate(parts) if parts else np.zeros((0,), dtype=np.uint8)


def evaluate(cfg: Config, prepared: Prepared, model: Any, task: Any, test_images: np.ndarray,
             package: Path) -> dict[str, float]:
    """Test FID/KID with the run's calibration, a conditional model's class accuracy, the copy check;
    logs the figure and returns the metrics (without ``test/``)."""
    from components.data.shards import read_split
    from components.fidelity import (
        ClassifierFeatures,
        calibration,
        class_accuracy,
        distances,
    )
    from components.nearest import copy_ratio, nearest_figure, nearest_training_images
    from components.packaging import load_package

    g = cfg.generate
    started = time.perf_counter()
    classifier, spec = load_package(package)
    features = ClassifierFeatures(classifier, image_size=spec.image_size)
    n = min(g.fid_samples, len(test_images))
    real = test_images[:n]
    samples = _generated(task, model, np.arange(n, dtype=np.int64))
    train_images = read_split(prepared.manifest(), "train").images[:prepared.rows["train"]]
    ours = distances(features, real, {"model": samples})["model"]
    ref = calibration(features, real, train_images, n, sigma=g.blur_sigma, seed=cfg.seed)
    metrics = {names.FID: ours["fid"], names.KID: ours["kid"]}
    for reference, d in ref.items():
        for key in (names.FID, names.KID):
            metrics[names.reference_distance(key, reference)] = d[key]
    metrics[names.FID_OVER_BLURRED] = ours["fid"] / ref["blurred"]["fid"]
    say(f"evaluate: test FID {ours['fid']:.2f} (KID {ours['kid']:.4f}) on {n:,} samples; the same features "
        f"give real train {ref['real_train']['fid']:.2f}, blurred (σ {g.blur_sigma:g} px) {ref['blurred']['fid']:.2f}, "
        f"noise {ref['noise']['fid']:.2f}: {metrics[names.FID_OVER_BLURRED]:.2f}× the blurred distance")
    if getattr(task, "conditional", False):
        k = len(spec.classes)
        per = g.class_samples
        images = np.concatenate([_generated(task, model, np.arange(per, dtype=np.int64) + c * per, label=c)
                                 for c in range(k)])
        overall, per_class = class_accuracy(classifier, images, np.repeat(np.arange(k), per), k)
        metrics[names.CLASS_ACCURACY] = overall
        safe = ["".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in c) for c in spec.classes]
        tracking.log_metrics({names.per_class_accuracy(names.TEST, s): float(a)
                              for s, a in zip(safe, per_class) if np.isfinite(a)})
        say(f"evaluate: the classifier labels {overall:.1%} of the generated images as the class asked for "
            f"(worst class {spec.classes[int(np.nanargmin(per_class))]} {np.nanmin(per_class):.1%})")
    grid = samples[:8]
    idx, dist = nearest_training_images(grid, train_images, k=3)
    _, test_dist = nearest_training_images(real[:len(grid) * 8], train_images, k=1)
    _, sample_dist = nearest_training_images(samples[:len(grid) * 8], train_images, k=1)
    metrics[names.NN_COPY_RATIO] = copy_ratio(sample_dist[:, 0], test_dist[:, 0])
    tracking.log_figure(nearest_figure(grid, train_images[idx], dist, "samples (top) and their nearest training "
                                       "images (pixel L2 above each column)"), names.NEAREST_PLOT)
    say(f"evaluate: FID side done in {time.perf_counter() - started:.0f} s; nearest-neighbour copy ratio "
        f"{metrics[names.NN_COPY_RATIO]:.2f} (≈ 1 or above: as far from the training set as new images are)")
    return metrics
