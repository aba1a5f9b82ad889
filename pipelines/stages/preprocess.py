"""Stage ``preprocess``: Ray Data over the Parquet shards; fits normalisation on train only.

The normaliser (§6.1: per-channel mean/std, or the mean image) is fitted by a distributed
``map_batches`` of partial moments (in this process for a split of up to ``IN_PROCESS_BYTES``), saved as ``normalizer.npz`` and built into the model, so the
same numbers apply at training, evaluation and serving. Train-time augmentation (§7.2) runs per
batch inside Ray Data's iterator (:func:`train_batches`), seeded by (seed, epoch, row id).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from components.augment import Augment, generator_for
from components.data.shards import (
    Manifest,
    decode_images,
    decode_targets,
    target_columns,
)
from components.models import accumulate_moments, finalize_moments
from pipelines.config import Config, DataConfig
from pipelines.records import Prepared
from pipelines.services import tracking
from pipelines.services.progress import say

NORMALIZER_FILE = "normalizer.npz"


def augment_from(cfg: DataConfig) -> Augment:
    a = cfg.augment
    return Augment(crop_padding=a.crop_padding, flip=a.flip, brightness=a.brightness,
                   contrast=a.contrast, cutout=a.cutout)


def decode_batch(table: Any, shape: tuple[int, int, int], targets: dict[str, Any] | None = None
                 ) -> dict[str, np.ndarray]:
    """A Ray Data batch (pyarrow) of Parquet rows → uint8 NHWC images, labels and row ids, and the dense
    targets the manifest lists (``mask`` N×H×W, ``boxes`` N×K×4, ``box_labels`` N×K)."""
    return {"image": decode_images(table.column("image"), shape),
            "label": table.column("label").to_numpy(),
            "idx": table.column("idx").to_numpy(),
            **(decode_targets(table, shape, targets) if targets else {})}


def split_rows(cfg: DataConfig, manifest: Manifest, split: str) -> int:
    rows = manifest.splits[split]["rows"]
    limit = cfg.max_train_rows if split == "train" else cfg.max_eval_rows
    return min(rows, limit) if limit else rows


def image_dataset(manifest: Manifest, split: str, limit: int = 0):
    """A streaming Ray Dataset of one split: decoded uint8 images, labels, row ids (and masks, boxes)."""
    import ray.data

    ds = ray.data.read_parquet([str(p) for p in manifest.files(split)],
                               columns=["image", "label", "idx", *target_columns(manifest.targets)])
    if limit and limit < manifest.splits[split]["rows"]:
        ds = ds.limit(limit)  # shards are written class-shuffled, so a prefix is a fair sample
    return ds.map_batches(partial(decode_batch, shape=manifest.shape, targets=manifest.targets), batch_format="pyarrow",
                          batch_size=4096, zero_copy_batch=True)


def _moments(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    m = accumulate_moments(batch["image"])
    return {"count": np.array([m["count"]]), "sum": m["sum"][None], "sumsq": m["sumsq"][None]}


#: A split whose pixels take up to this many bytes is read here, in this process, rather than by a Ray Data
#: job: Ray Data's planning and task start cost seconds, reading Fashion-MNIST's 47 MB of pixels a fraction
#: of one. Larger splits keep Ray Data's parallel reads.
IN_PROCESS_BYTES = 256 * 2**20


def fits_in_process(rows: int, shape: tuple[int, ...], budget: int = IN_PROCESS_BYTES) -> bool:
    """Whether ``rows`` images of ``shape`` (uint8 pixels) fit ``budget`` bytes."""
    return rows * int(np.prod(shape)) <= budget


def leading_rows(manifest: Manifest, split: str, rows: int, batch_size: int = 8192):
    """The first ``rows`` rows of a split, in shard order, read in this process: decoded batches (images,
    labels, row ids, the dense targets), the rows :func:`image_dataset` with that limit yields."""
    import pyarrow.parquet as pq

    columns = ["image", "label", "idx", *target_columns(manifest.targets)]
    left = rows
    for path in manifest.files(split):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            if left <= 0:
                return
            table = batch if batch.num_rows <= left else batch.slice(0, left)
            left -= table.num_rows
            yield decode_batch(table, manifest.shape, manifest.targets)


def read_rows(manifest: Manifest, split: str, rows: int) -> dict[str, np.ndarray]:
    """:func:`leading_rows` as one batch: the first ``rows`` rows of a split, each column one array."""
    parts = list(leading_rows(manifest, split, rows))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def fit_normalizer(manifest: Manifest, mode: str, limit: int = 0,
                   in_process_bytes: int = IN_PROCESS_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std from the train split only (§2.2: val and test never leak into preprocessing). Exact integer
    sums: the same numbers whether read here (a small split) or by a Ray Data job."""
    rows = manifest.splits["train"]["rows"]
    rows = min(rows, limit) if limit else rows
    if fits_in_process(rows, manifest.shape, in_process_bytes):
        partials = [accumulate_moments(b["image"]) for b in leading_rows(manifest, "train", rows)]
    else:
        parts = image_dataset(manifest, "train", limit).map_batches(_moments, batch_format="numpy",
                                                                    batch_size=8192).take_all()
        partials = [{"count": int(p["count"]), "sum": p["sum"], "sumsq": p["sumsq"]} for p in parts]
    mean, std = finalize_moments(partials, mode)  # type: ignore[arg-type]
    return np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)


def run(cfg: Config, manifest: Manifest, workdir: Path) -> Prepared:
    workdir.mkdir(parents=True, exist_ok=True)
    mode = cfg.data.normalization
    mean, std = fit_normalizer(manifest, mode, cfg.data.max_train_rows)
    norm_path = workdir / NORMALIZER_FILE
    np.savez(norm_path, mean=mean, std=std)
    tracking.log_artifact(norm_path, "preprocess")
    if mode == "per_channel":
        tracking.log_params({f"normalizer.mean.{i}": round(float(m), 5) for i, m in enumerate(mean.ravel())}
                            | {f"normalizer.std.{i}": round(float(s), 5) for i, s in enumerate(std.ravel())})
    prepared = Prepared(
        manifest_path=str(Path(manifest.root) / "manifest.json"), normalizer_path=str(norm_path),
        normalization=mode, num_classes=len(manifest.classes), shape=tuple(manifest.shape),
        rows={s: split_rows(cfg.data, manifest, s) for s in ("train", "val", "test")})
    prepared.save(workdir)
    _log_augmentation_grid(cfg, manifest)
    say(f"preprocess: {mode} normaliser fitted on {prepared.rows['train']:,} train images "
        f"(mean {float(mean.mean()):.3f}, std {float(std.mean()):.3f})")
    return prepared


def _log_augmentation_grid(cfg: Config, manifest: Manifest, n: int = 8, repeats: int = 4) -> None:
    import torch

    from components.plots import image_grid_figure

    augment = augment_from(cfg.data)
    sample = next(leading_rows(manifest, "train", n))
    x = torch.from_numpy(np.array(sample["image"], order="C")).permute(0, 3, 1, 2).float() / 255
    rows, titles = [sample["image"]], ["original"]
    for r in range(repeats if augment.enabled else 0):
        out = augment(x, generator_for(cfg.seed, r, 0, 0))
        rows.append(out.permute(0, 2, 3, 1).numpy())
        titles.append(f"augmented #{r + 1}")
    fig = image_grid_figure(rows, titles, class_names=list(manifest.classes), labels=list(sample["label"]),
                            title=f"train-time augmentation: {augment}")
    tracking.log_figure(fig, "plots/augmentation_grid.png")
