"""The generate pipeline's evaluate stage: the best epoch's model on the test split, in bits per dimension.

    evaluation = run(cfg, prepared, trained)     # inside the pipeline's "evaluate" stage run

Logged on the stage's run (and the headline on the pipeline's): ``test/bits_per_dim`` (PixelCNN: exact;
VAE: the negative ELBO, one posterior sample per image) and its terms; a VAE's importance-weighted bound
``test/bits_per_dim_iw`` with ``generate.iw_samples`` samples on the first ``generate.iw_rows`` test
images, beside the ELBO on those same images; the baselines on the very same test images
(``test/baseline_categorical_bits_per_dim``, ``test/baseline_xz_bits_per_dim``); ``test/levels`` (256, or
2 when binarised). Figures: the final 8×8 grid drawn through the served form (which must give the same
images for the same seeds), a VAE's latent interpolations, the training curves.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipelines.config import Config
from pipelines.records import Evaluation, Prepared, Trained
from pipelines.services import names, tracking
from pipelines.services.progress import say


def _levels(images: np.ndarray, levels: int) -> np.ndarray:
    """uint8 pixels as the model sees them: unchanged (256 levels) or binarised (pixel > 127)."""
    return images if levels == 256 else (images > 127).astype(np.uint8)


def baselines(train_images: np.ndarray, test_images: np.ndarray, levels: int) -> dict[str, float]:
    """The two honest baselines on the test images the model is scored on (keys without ``test/``)."""
    from components.likelihood import categorical_baseline_bits, xz_bits

    train, test = _levels(train_images, levels), _levels(test_images, levels)
    return {names.BASELINE_CATEGORICAL_BITS: categorical_baseline_bits(train, test, levels),
            names.BASELINE_XZ_BITS: xz_bits(test)}


def iw_bound(net, images: np.ndarray, k: int, batch: int = 50) -> dict[str, float]:
    """A VAE's importance-weighted bound and its ELBO on ``images`` (uint8 N×H×W(×C)), in bits/dim."""
    import torch

    from components.likelihood import bits_per_dim

    iw, elbo = [], []
    for start in range(0, len(images), batch):
        x = _to_tensor(images[start:start + batch])
        bound, mean = net.iw_bound(x, k=k)
        iw.append(bound)
        elbo.append(mean)
    return {names.BITS_PER_DIM_IW: float(bits_per_dim(torch.cat(iw), net.dims).mean()),
            names.BITS_PER_DIM_ELBO_IW_ROWS: float(bits_per_dim(torch.cat(elbo), net.dims).mean())}


def _to_tensor(images: np.ndarray):
    import torch

    x = torch.from_numpy(np.array(images, dtype=np.uint8))  # a writable copy (shards are read-only)
    x = x.unsqueeze(-1) if x.ndim == 3 else x
    return x.permute(0, 3, 1, 2).float().div(255)


def run(cfg: Config, prepared: Prepared, trained: Trained, fid_model: Path | None = None) -> Evaluation:
    """The evaluate stage; ``fid_model`` (the judge's package) for a model judged by FID
    (pipelines.flows.generate_fid: dcgan, cdcgan, ddpm)."""
    import torch

    from components import engine
    from components.data.shards import read_split
    from components.packaging import load_package
    from components.tasks import build_task
    from components.tasks.generation import GRID_SEEDS, sample_grid
    from pipelines.stages.evaluate import numpy_batches, test_split

    g = cfg.generate
    model, spec = load_package(trained.best_checkpoint)
    task = build_task(spec.task, num_classes=spec.num_classes, classes=spec.classes, model=spec.name)
    levels = spec.levels or 256
    images, labels = test_split(prepared)
    torch.manual_seed(cfg.seed)  # a VAE's ELBO draws one posterior sample per image
    meter, _, _ = engine.evaluate(model, task, map(task.batch_prep(), numpy_batches(images, labels, 256)))
    metrics = meter.compute()
    if fid_model is not None:
        from pipelines.flows import generate_fid

        metrics.update(generate_fid.evaluate(cfg, prepared, model, task, images, fid_model))
    if hasattr(model, "iw_bound") and g.iw_samples > 1:
        rows = images[:g.iw_rows] if g.iw_rows else images
        started = time.perf_counter()
        metrics.update(iw_bound(model, rows, g.iw_samples))
        say(f"evaluate: importance-weighted bound (k={g.iw_samples}) {metrics[names.BITS_PER_DIM_IW]:.4f} bits/dim "
            f"vs ELBO {metrics[names.BITS_PER_DIM_ELBO_IW_ROWS]:.4f} on the same {len(rows):,} test images "
            f"({time.perf_counter() - started:.0f} s)")
    base = {}
    if fid_model is None:  # bits/dim baselines say something only beside a likelihood
        train_images = read_split(prepared.manifest(), "train").images[:prepared.rows["train"]]
        base = baselines(train_images, images, levels)
    tracking.log_metrics({names.metric(names.TEST, k): v for k, v in {**metrics, **base}.items()})
    tracking.log_metrics({names.metric(names.TEST, names.PIXEL_LEVELS): float(levels)})

    # The served form draws the final grid; the same seeds must give the same images.
    seeds = np.asarray(GRID_SEEDS, dtype=np.int64)
    started = time.perf_counter()
    grid = task.predict(model, seeds)["images"]
    seconds = time.perf_counter() - started
    again = task.predict(model, seeds[:8])["images"]
    if not np.array_equal(again, grid[:8]):
        raise RuntimeError("the served generator gave different images for the same seeds")
    tracking.log_metrics({names.GENERATE_SECONDS: seconds})
    as_nchw = grid[:, None] if grid.ndim == 3 else grid.transpose(0, 3, 1, 2)
    tracking.log_image(sample_grid(as_nchw), artifact_file=names.FINAL_SAMPLE_GRID)
    if hasattr(model, "interpolate") and g.interpolations and len(images) >= 2 * g.interpolations:
        k = g.interpolations
        a, b = _to_tensor(images[:k]), _to_tensor(images[k:2 * k])
        with torch.no_grad():
            path = model.interpolate(a, b, steps=8).numpy()  # k×8×C×H×W
        ends = [_to_uint8_levels(x, levels) for x in (images[:k], images[k:2 * k])]
        rows = np.concatenate([ends[0][:, None], path, ends[1][:, None]], axis=1)
        tracking.log_image(sample_grid(rows.reshape(-1, *rows.shape[2:]), side=rows.shape[1]),
                           artifact_file=names.INTERPOLATION_GRID)
    report = task.report(np.zeros(0), np.zeros(0), spec.classes, trained.history, f"{spec.name} on {cfg.data.name}")
    for path, figure in report.figures.items():
        tracking.log_figure(figure, path)
    if fid_model is None:  # (a model judged by FID said its figures above, in generate_fid)
        say(f"evaluate: test {task.primary} {metrics[task.primary]:.4f} on {len(images):,} images "
            f"({levels} levels); baselines on the same images: per-pixel categorical "
            f"{base[names.BASELINE_CATEGORICAL_BITS]:.4f}, xz -9 {base[names.BASELINE_XZ_BITS]:.4f}")
    return Evaluation(trained.best_checkpoint, {**metrics, **base, names.PIXEL_LEVELS: float(levels)},
                      seeds[:4].copy(), task=task.name, primary=task.primary, higher_is_better=task.higher_is_better)


def _to_uint8_levels(images: np.ndarray, levels: int) -> np.ndarray:
    """Test images N×H×W(×C) as the model sees them, N×C×H×W uint8 on the 0..255 scale."""
    x = _levels(images, levels).astype(np.float32) * (255.0 / (levels - 1))
    x = x[..., None] if x.ndim == 3 else x
    return x.round().astype(np.uint8).transpose(0, 3, 1, 2)
