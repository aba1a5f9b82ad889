"""Pipeline ``explain`` (§12): what a registered classifier learned, on the very version that serves.

    visionray run explain                                              # models:/fashion-mnist-classifier@champion
    visionray run explain explain.model=models:/fashion-mnist-classifier/3 explain.umap=false
    visionray run explain data=digits explain.model=models:/digits-classifier@champion

Stages: ``ingest`` (the test split of ``data``, which must be the model's kind of image) and ``explain``,
whose run is tagged ``explains=NAME/version``. Four Ray tasks run side by side (components.explain.parts):
attribution (vanilla gradients, SmoothGrad, integrated gradients, occlusion: maps side by side, deletion and
insertion AUC per method, the pointing game when the data has object masks; one table, ranked), adversarial
(FGSM and PGD per ε, ``explain/adv_accuracy`` at step 1000·ε, example grids, fooling images), class-model
visualisation (one image per class) and features (t-SNE and UMAP of the penultimate layer, kNN accuracy and
trustworthiness, nearest neighbours in feature and pixel space). The driver logs what they return.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import Config, ConfigError
from pipelines.flows import kit
from pipelines.services import names, tracking
from pipelines.services.progress import duration, say

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def model_uri(cfg: Config) -> str:
    return cfg.explain.model or f"models:/{cfg.registered_model_name}@{names.CHAMPION}"


def resolve(cfg: Config) -> tuple[str, int]:
    """(name, version) that ``explain.model`` names in the configured registry; ConfigError when it names none."""
    from pipelines.services import registry

    uri, store = model_uri(cfg), tracking.resolve_uri(cfg.tracking.uri)
    found = _URI.match(uri)
    if not found:
        raise ConfigError(f"explain.model={uri} must be models:/NAME@alias or models:/NAME/VERSION.")
    name = found["name"]
    aliases = registry.model_aliases(store, name)
    if aliases is None:
        raise ConfigError(f"explain.model={uri}: no registered model {name!r} in {store}; train one first "
                          f"(visionray run quickstart) or name another.")
    if found["alias"]:
        if found["alias"] not in aliases:
            raise ConfigError(f"explain.model={uri}: {name} has no alias {found['alias']!r} "
                              f"(it has: {', '.join(sorted(aliases)) or 'none'}).")
        return name, int(aliases[found["alias"]])
    if int(found["version"]) not in registry.model_versions(store, name):
        raise ConfigError(f"explain.model={uri}: {name} has no version {found['version']}.")
    return name, int(found["version"])


def check(cfg: Config) -> None:
    """Before anything starts: the model must exist (a missing one exits 2, named)."""
    tracking.check_store(tracking.resolve_uri(cfg.tracking.uri))
    resolve(cfg)


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    out: dict[str, Any] = {}
    workdir = kit.workdir_for(cfg, parent.run_id)
    kit.prepare(cfg, parent, workdir, out)
    if "explain" not in cfg.stages:
        return out
    name, version = resolve(cfg)
    parent.set_tags({names.EXPLAINS_TAG: f"{name}/{version}"})
    with kit.stage("explain", parent, cfg):
        tracking.set_tags({names.EXPLAINS_TAG: f"{name}/{version}"})
        out["result"] = run(cfg, name, version, out["manifest"], workdir)
    return out


def _load(cfg: Config, name: str, version: int, manifest, workdir: Path):
    from components.packaging import load_package
    from pipelines.services import registry

    model, spec = load_package(registry.fetch_package(f"models:/{name}/{version}", workdir / "model", name))
    h, _, c = manifest.shape
    if getattr(model, "net", None) is None or (spec.in_channels, spec.image_size) != (c, h):
        raise ConfigError(f"explain.model=models:/{name}/{version} is not a plain classifier of {h}x{h}x{c} images "
                          f"(data={cfg.data.name}); explain a classifier of this data or set data= to its data.")
    return model.eval(), spec


def _part(which: str, model, images: np.ndarray, labels: np.ndarray, masks, options: dict[str, Any]):
    """One Ray task: a part of components.explain.parts on the shared arrays (one thread: the parts run side by side)."""
    import torch

    from components.explain import parts

    torch.set_num_threads(1)
    torch.manual_seed(options.pop("seed", 0))
    x = torch.tensor(images)  # a copy: Ray hands arrays over read-only
    x = x.permute(0, 3, 1, 2).float().div(255)
    y = torch.tensor(np.asarray(labels), dtype=torch.int64)
    started = time.perf_counter()
    if which == "attributions":
        result = parts.attributions(model, x, y, masks=None if masks is None else torch.tensor(masks), **options)
    elif which == "class_models":
        result = parts.class_models(model, **options)
    else:
        result = getattr(parts, which)(model, x, y, **options)
    result["wall_seconds"] = time.perf_counter() - started
    return result


def run(cfg: Config, name: str, version: int, manifest, workdir: Path) -> dict[str, Any]:
    import ray

    from components.data.shards import read_split
    from pipelines.flows import explain_log

    e = cfg.explain
    model, spec = _load(cfg, name, version, manifest, workdir)
    test = read_split(manifest, "test")
    images, labels = test.images, test.labels
    # the pointing game's object: the pixels of the true class (mask ids are class + 1, 0 background)
    masks = None if test.masks is None else test.masks == (labels[:, None, None] + 1)
    order = np.random.default_rng(cfg.seed).permutation(len(labels))  # the same random test images for every part
    classes = list(spec.classes)
    fool = list(e.fool_classes) or list(range(spec.num_classes))
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    take = {"attributions": order[:e.images], "adversarial": order[:e.adv_images],
            "class_models": order[:0], "features": order[:e.tsne_points]}
    options = {
        "attributions": dict(methods=e.methods, grid=e.grid, patch=e.patch, stride=e.stride,
                             samples=e.smoothgrad_samples, sigma=e.smoothgrad_sigma, steps=e.ig_steps,
                             curve_steps=e.curve_steps, tolerance=e.pointing_tolerance, seed=cfg.seed),
        "adversarial": dict(eps=e.eps, pgd_steps=e.pgd_steps, examples=e.grid, fool_classes=fool,
                            confidence=e.fool_confidence, seed=cfg.seed),
        "class_models": dict(classes=spec.num_classes, shape=shape, steps=e.class_steps, lr=e.class_lr, l2=e.class_l2,
                             blur_every=e.class_blur_every, jitter=e.class_jitter, seed=cfg.seed),
        "features": dict(tsne_points=e.tsne_points, umap_on=e.umap, pca_dims=e.pca_dims, k=e.knn_k,
                         queries=e.queries, seed=cfg.seed),
    }
    say(f"explain: {spec.name} models:/{name}/{version} on {manifest.name} test images: attribution ({e.images}), "
        f"attacks ({min(e.adv_images, len(labels))}), class models ({spec.num_classes}), features "
        f"({min(e.tsne_points, len(labels))}); four Ray tasks")
    task = ray.remote(num_cpus=1)(_part)
    model_ref = ray.put(model)
    started = time.perf_counter()
    refs = {which: task.remote(which, model_ref, images[idx], labels[idx],
                               None if masks is None or which != "attributions" else masks[idx], options[which])
            for which, idx in take.items()}
    results: dict[str, Any] = {}
    pending = {ref: which for which, ref in refs.items()}
    while pending:  # log each part as soon as it is back
        done, _ = ray.wait(list(pending), num_returns=1)
        which = pending.pop(done[0])
        results[which] = ray.get(done[0])
        say(f"explain: {which} done in {duration(results[which]['wall_seconds'])}")
        explain_log.LOGGERS[which](results[which], classes)
    summary = explain_log.summary(results, name, version)
    tracking.log_json(summary, names.EXPLAIN_SUMMARY)
    say(f"explain: done in {duration(time.perf_counter() - started)}; " + explain_log.headline(summary))
    return summary
