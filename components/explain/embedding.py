"""What the last layer sees (§12): penultimate features, 2-D maps of them and how much those maps keep.

    feats = penultimate(model, images)                    # N×D: the input of the classifier head
    low = pca(feats, 50); xy = tsne(low, seed=0)          # openTSNE after PCA to 50 dims (van der Maaten)
    knn_accuracy(xy, labels), knn_accuracy(feats, labels) # leave-one-out 5-NN: 2-D beside full-dimensional
    trustworthiness_of(feats, xy)                         # Venna & Kaski: are 2-D neighbours real ones?
    neighbours(feats[queries], feats, k=6)                # nearest neighbours in feature space

Plain PyTorch, NumPy and scikit-learn / openTSNE / umap-learn: no Ray, no MLflow.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from components.transfer import head_name


@torch.no_grad()
def penultimate(model: nn.Module, images: Tensor, batch: int = 512) -> np.ndarray:
    """The features the classifier head reads (its input, flattened), for float images in [0, 1]."""
    net = getattr(model, "net", model)
    head = dict(net.named_modules())[head_name(net)]
    caught: list[Tensor] = []
    handle = head.register_forward_hook(lambda _m, inputs, _out: caught.append(inputs[0].flatten(1)))
    try:
        for start in range(0, len(images), batch):
            model(images[start:start + batch])
    finally:
        handle.remove()
    return torch.cat(caught).float().numpy()


def pca(features: np.ndarray, dims: int = 50, seed: int = 0) -> np.ndarray:
    """The first ``dims`` principal components (fewer when the features have fewer dimensions)."""
    from sklearn.decomposition import PCA

    dims = min(dims, features.shape[1], features.shape[0])
    return PCA(n_components=dims, random_state=seed).fit_transform(features).astype(np.float32)


def tsne(points: np.ndarray, seed: int = 0, perplexity: float = 30.0, threads: int = 2) -> np.ndarray:
    """openTSNE's FFT-accelerated t-SNE (PCA initialisation), N×2."""
    from openTSNE import TSNE

    perplexity = min(perplexity, max(2.0, (len(points) - 1) / 3))
    return np.asarray(TSNE(perplexity=perplexity, random_state=seed, n_jobs=threads, initialization="pca",
                           verbose=False).fit(points), dtype=np.float32)


def umap(points: np.ndarray, seed: int = 0, neighbours: int = 15) -> np.ndarray:
    """UMAP (McInnes et al.), N×2."""
    from umap import UMAP

    neighbours = min(neighbours, len(points) - 1)
    return np.asarray(UMAP(n_neighbors=neighbours, random_state=seed, n_jobs=1).fit_transform(points), dtype=np.float32)


def knn_accuracy(points: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy (majority of the k nearest others, ties to the nearest's class)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(points) - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    votes = labels[idx[:, 1:]]  # drop each point itself
    classes = int(labels.max()) + 1
    counts = np.zeros((len(points), classes))
    np.add.at(counts, (np.arange(len(points))[:, None], votes), 1.0)
    counts[np.arange(len(points)), votes[:, 0]] += 0.5  # ties: the nearest neighbour's class
    return float((counts.argmax(1) == labels).mean())


def trustworthiness_of(high: np.ndarray, low: np.ndarray, k: int = 5, max_points: int = 2000,
                       seed: int = 0) -> float:
    """scikit-learn's trustworthiness on at most ``max_points`` points (it holds an N×N distance matrix)."""
    from sklearn.manifold import trustworthiness

    take = np.arange(len(high))
    if len(high) > max_points:
        take = np.sort(np.random.default_rng(seed).choice(len(high), max_points, replace=False))
    return float(trustworthiness(high[take], low[take], n_neighbors=min(k, len(take) // 2 - 1)))


def neighbours(queries: np.ndarray, pool: np.ndarray, k: int = 6) -> np.ndarray:
    """Indices into ``pool`` of each query's ``k`` nearest (Euclidean) points, nearest first, the query
    itself included when it is in ``pool``."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=min(k, len(pool))).fit(pool).kneighbors(queries)[1]
