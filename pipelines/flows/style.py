"""Pipeline ``style`` (§12): neural style transfer, texture synthesis and DeepDream on Gram-matrix features.

    visionray run style                                              # chelsea in brick, brick's texture, a dream
    visionray run style style.content=astronaut style.style=gravel style.modes=[transfer]
    visionray run style style.content=~/me.jpg style.style=~/van-gogh.jpg style.size=384
    visionray run style style.features=models:/fashion-mnist-classifier@champion style.modes=[dream]

One stage, ``style``; each mode (``style.modes``) is a Ray task and a run nested under the stage's run,
tagged ``visionray.stage=style`` and ``visionray.style.mode=<mode>``, with ``style/style_loss``,
``style/content_loss``, ``style/tv_loss`` and ``style/total_loss`` at every step, the image every
``style.log_every`` steps (MLflow's step-wise images, key ``style/image``) and the result as
``style/result.png``; the stage's run holds every result (``style/<mode>.png``). Features come from a shallow
multi-scale network of random filters (components.style.features; no pretrained weights exist offline) or
from a registered classifier's layers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipelines.config import Config, ConfigError
from pipelines.flows import kit
from pipelines.services import names, tracking
from pipelines.services.progress import duration, say


def check(cfg: Config) -> None:
    """Before anything starts: the images named exist, the feature model (when one is named) is registered."""
    from components.style import images

    s = cfg.style
    for key, value in (("style.content", s.content), ("style.style", s.style)):
        if key == "style.content" and not set(s.modes) & {"transfer", "dream"}:
            continue
        if key == "style.style" and not set(s.modes) & {"transfer", "texture"}:
            continue
        if not images.exists(value):
            raise ConfigError(f"{key}={value} is neither one of scikit-image's images "
                              f"({', '.join(images.BUNDLED)}) nor an existing file.")
        try:
            images.read(value)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
    if s.features != "random":
        from pipelines.services import registry

        store = tracking.resolve_uri(cfg.tracking.uri)
        tracking.check_store(store)
        name = s.features[len("models:/"):].split("@")[0].split("/")[0]
        if registry.model_aliases(store, name) is None:
            raise ConfigError(f"style.features={s.features}: no registered model {name!r} in {store}.")


def _feature_net(cfg: Config, workdir: Path):
    s = cfg.style
    if s.features == "random":
        from components.style.features import RandomFeatures

        return RandomFeatures(s.filters, tuple(s.scales), s.kernel, seed=cfg.seed), list(s.scales).index(s.content_scale)
    from components.packaging import load_package
    from components.style.features import ModelFeatures
    from pipelines.services import registry

    name = s.features[len("models:/"):].split("@")[0].split("/")[0]
    model, _ = load_package(registry.fetch_package(s.features, workdir / "features", name))
    if getattr(model, "net", None) is None:
        raise ConfigError(f"style.features={s.features} is not a plain classifier (compressed or an ensemble?).")
    return ModelFeatures(model), 1


def _mode(mode: str, net, content_index: int, content, style, options: dict[str, Any]):
    """One Ray task: one mode's optimisation (all threads it was given)."""
    import torch

    from components.style import synthesis

    torch.set_num_threads(options.pop("threads"))
    started = time.perf_counter()
    if mode == "transfer":
        result = synthesis.transfer(net, content, style, content_index=content_index, **options)
    elif mode == "texture":
        options.pop("content_weight")
        result = synthesis.texture(net, style, **options)
    else:
        result = synthesis.dream(net, content, **options)
    extra = {}
    if mode == "transfer":  # how far the style image itself is from the content: the yardstick of "bounded"
        with torch.no_grad():
            extra["style_image_content_loss"] = float(synthesis.content_loss(
                net(style.unsqueeze(0))[content_index], net(content.unsqueeze(0))[content_index]))
    return result, time.perf_counter() - started, extra


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    import ray

    from components.style import images

    s = cfg.style
    out: dict[str, Any] = {}
    workdir = kit.workdir_for(cfg, parent.run_id)
    with kit.stage("style", parent, cfg) as stage_run_id:
        net, content_index = _feature_net(cfg, workdir)
        content, style = images.load(s.content, s.size), images.load(s.style, s.size)
        cpus = max(1, int(ray.available_resources().get("CPU", 1)))
        threads = max(1, cpus // len(s.modes))
        common = dict(steps=s.steps, optimizer=s.optimizer, lr=s.lr, style_weight=s.style_weight, tv_weight=s.tv_weight,
                      log_every=s.log_every, content_weight=s.content_weight, threads=threads)
        options = {"transfer": dict(common), "texture": {**common, "seed": cfg.seed},
                   "dream": dict(layer=s.dream_layer, steps=s.dream_steps, lr=s.dream_lr,
                                 log_every=max(1, min(s.log_every, s.dream_steps // 4)), seed=cfg.seed, threads=threads)}
        say(f"style: {', '.join(s.modes)} at {s.size} px, content {s.content}, style {s.style}, "
            f"{'random multi-scale' if s.features == 'random' else s.features} features, {s.optimizer} "
            f"{s.steps} steps; {len(s.modes)} Ray task(s) x {threads} thread(s)")
        task = ray.remote(num_cpus=threads)(_mode)
        refs = {mode: task.remote(mode, net, content_index, content, style, options[mode]) for mode in s.modes}
        results = {mode: ray.get(ref) for mode, ref in refs.items()}
        summary = {}
        for mode, (result, seconds, extra) in results.items():
            with tracking.method_run(f"style-{mode}", parent, stage_run_id,
                                     {names.STAGE_TAG: "style", names.STYLE_MODE_TAG: mode}):
                summary[mode] = log_mode(mode, result, seconds, extra)
            tracking.log_image(images.to_uint8(result.image), names.style_result(mode))
        tracking.log_json(summary, "style/summary.json")
        out["summary"] = summary
    return out


KEYS = {"style": names.STYLE_LOSS, "content": names.STYLE_CONTENT_LOSS, "tv": names.STYLE_TV_LOSS,
        "total": names.STYLE_TOTAL_LOSS, "dream": names.STYLE_DREAM_OBJECTIVE}


def log_mode(mode: str, result, seconds: float, extra: dict[str, float]) -> dict[str, float]:
    """One mode's per-step losses, its snapshots and result, on its nested run; its headline numbers."""
    from components.style import images

    tracking.log_series([{KEYS[k]: v for k, v in losses.items()} for losses in result.history])
    for step, image in result.snapshots:
        tracking.log_image(images.to_uint8(image), key=names.STYLE_IMAGE_KEY, step=step)
    tracking.log_image(images.to_uint8(result.image), names.STYLE_RESULT)
    first, last = result.history[0], result.history[-1]
    summary = {"seconds": seconds, "steps": len(result.history)}
    if "style" in first:
        summary["style_loss_first"], summary["style_loss_last"] = first["style"], last["style"]
        summary["style_loss_reduction"] = first["style"] / max(last["style"], 1e-12)
    if "content" in last:
        summary["content_loss_last"] = last["content"]
        summary["content_loss_ratio"] = last["content"] / max(extra["style_image_content_loss"], 1e-12)
    if "dream" in first:
        summary["dream_gain"] = last["dream"] / max(first["dream"], 1e-12)
    metrics = {names.STYLE_SECONDS: seconds}
    if "style_loss_reduction" in summary:
        metrics[names.STYLE_LOSS_REDUCTION] = summary["style_loss_reduction"]
    if "content_loss_ratio" in summary:
        metrics[names.STYLE_CONTENT_LOSS_RATIO] = summary["content_loss_ratio"]
    tracking.log_metrics(metrics)
    parts = [f"{mode}: {len(result.history)} steps in {duration(seconds)}"]
    if "style_loss_reduction" in summary:
        parts.append(f"style loss {summary['style_loss_first']:.4g} → {summary['style_loss_last']:.4g} "
                     f"({summary['style_loss_reduction']:.1f}x lower)")
    if "content_loss_ratio" in summary:
        parts.append(f"content loss {summary['content_loss_last']:.4f} ({summary['content_loss_ratio']:.2f} of the "
                     f"style image's own)")
    if "dream_gain" in summary:
        parts.append(f"layer activation {summary['dream_gain']:.1f}x stronger")
    say("style: " + ", ".join(parts))
    return summary
