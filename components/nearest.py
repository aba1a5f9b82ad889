"""Is a generator copying its training set? Each sample beside its nearest training images.

    neighbours, dist = nearest_training_images(samples, train_images, k=3)   # pixel L2
    fig = nearest_figure(samples, train_images[neighbours], dist)
    copy_ratio(dist[:, 0], nearest_training_images(test_images[:64], train_images, k=1)[1][:, 0])

A sample that is a training image (distance ≈ 0) is memorised, not generated. The distances only mean
something against a reference: held-out test images are new images of the same distribution, so their
distance to the nearest training image is what an honest new image scores. A ratio (samples' median
over test images') well below 1 says the samples sit closer to training images than new images do.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _flat(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def nearest_training_images(samples: np.ndarray, train: np.ndarray, k: int = 3,
                            chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Indices (N×k) of each sample's ``k`` nearest training images in pixel L2 (images in [0, 1]), and
    those distances (N×k), nearest first. ``train`` is read in chunks (the full set need not be float)."""
    if len(train) == 0:
        raise ValueError("no training images to compare the samples with")
    k = min(k, len(train))
    q = _flat(samples)
    q_sq = (q ** 2).sum(1, keepdims=True)
    best_d = np.full((len(q), k), np.inf, dtype=np.float64)
    best_i = np.zeros((len(q), k), dtype=np.int64)
    for start in range(0, len(train), chunk):
        t = _flat(train[start:start + chunk])
        d = np.maximum(q_sq + (t ** 2).sum(1)[None] - 2 * q @ t.T, 0.0)  # squared distances
        d_all = np.concatenate([best_d, d], axis=1)
        i_all = np.concatenate([best_i, np.arange(start, start + len(t))[None].repeat(len(q), 0)], axis=1)
        order = np.argsort(d_all, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(d_all, order, 1), np.take_along_axis(i_all, order, 1)
    return best_i, np.sqrt(best_d)


def copy_ratio(sample_distances: Sequence[float], test_distances: Sequence[float]) -> float:
    """Median nearest-training distance of the samples over that of held-out test images (≈ 1 or above:
    the samples are as new as new images; near 0: copies)."""
    ref = float(np.median(test_distances))
    return float(np.median(sample_distances)) / ref if ref > 0 else float("nan")


def nearest_figure(samples: np.ndarray, neighbours: np.ndarray, distances: np.ndarray, title: str = ""):
    """Row 0 the samples, row j their j-th nearest training image (the distance above each column)."""
    from components.plots import image_grid_figure

    k = neighbours.shape[1]
    rows = [np.asarray(samples)] + [np.asarray(neighbours[:, j]) for j in range(k)]
    return image_grid_figure(rows, row_titles=["sample"] + [f"nearest {j + 1}" for j in range(k)],
                             labels=[f"{d:.2f}" for d in distances[:, 0]], title=title)
