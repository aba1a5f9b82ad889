"""kNN (§2.1-2.2): vectorised distances and neighbour search against plain NumPy loops; the package."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.models import ImageClassifier, Normalize
from components.models.knn import (
    KNearestNeighbors,
    cross_validate,
    nearest_labels,
    pairwise_distances,
    vote,
)
from components.packaging import ModelSpec, load_package, save_package


def _loop_distances(a: np.ndarray, b: np.ndarray, distance: str) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            diff = a[i].astype(np.float64) - b[j].astype(np.float64)
            out[i, j] = np.abs(diff).sum() if distance == "l1" else np.sqrt((diff ** 2).sum())
    return out


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_pairwise_distances_match_numpy_loops(distance):
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 12)).astype(np.float32), rng.random((7, 12)).astype(np.float32)
    got = pairwise_distances(torch.from_numpy(a), torch.from_numpy(b), distance).numpy()
    np.testing.assert_allclose(got, _loop_distances(a, b, distance), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_nearest_labels_match_numpy_loops_on_pixels(distance):
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (40, 16), dtype=np.uint8)
    queries = rng.integers(0, 256, (9, 16), dtype=np.uint8)
    labels = rng.integers(0, 4, 40)
    d = _loop_distances(queries, ref, distance)
    expected = labels[np.argsort(d, axis=1, kind="stable")[:, :5]]
    # chunk=4: the chunking must not change anything; ties are absent with random pixels
    got = nearest_labels(torch.from_numpy(queries), torch.from_numpy(ref), torch.from_numpy(labels), 5,
                         distance, chunk=4).numpy()
    np.testing.assert_array_equal(got, expected)


def test_float_queries_in_unit_range_rank_like_their_pixels():
    rng = np.random.default_rng(2)
    ref = torch.from_numpy(rng.integers(0, 256, (30, 8), dtype=np.uint8))
    q = torch.from_numpy(rng.integers(0, 256, (6, 8), dtype=np.uint8))
    y = torch.arange(30)
    assert torch.equal(nearest_labels(q.float() / 255, ref, y, 3), nearest_labels(q, ref, y, 3))


def test_vote_counts_and_breaks_ties_toward_the_smaller_label():
    counts = vote(torch.tensor([[2, 1, 2], [3, 1, 1], [0, 3, 1]]), 4)
    assert counts.tolist() == [[0, 1, 2, 0], [0, 2, 0, 1], [1, 1, 0, 1]]
    assert counts.argmax(1).tolist() == [2, 1, 0]


def test_cross_validation_scores_every_k_on_every_fold():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images[:500] * 16).clip(0, 255).astype(np.uint8).reshape(500, -1))
    y = torch.from_numpy(d.target[:500]).long()
    cv = cross_validate(x, y, [1, 3, 50], folds=5, num_classes=10)
    assert set(cv) == {1, 3, 50} and all(len(v) == 5 for v in cv.values())
    assert np.mean(cv[1]) > 0.9  # digits: kNN is ~98%
    assert np.mean(cv[50]) < np.mean(cv[1])  # k=50 smooths too much on 400 references


def test_knn_model_matches_sklearn_and_survives_a_package(tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.neighbors import KNeighborsClassifier

    d = load_digits()
    images = (d.images * 16).clip(0, 255).astype(np.uint8)[..., None]  # N, 8, 8, 1
    train, test = slice(0, 1400), slice(1400, None)
    knn = KNearestNeighbors(1, 10, 8, k=3, distance="l2").fit(images[train], d.target[train])
    model = ImageClassifier(Normalize.identity(1), knn)
    pred, probs = model.predict_uint8(images[test][..., 0])
    sk = KNeighborsClassifier(3, algorithm="brute").fit(images[train].reshape(1400, -1).astype(np.float64),
                                                        d.target[train])
    agree = (pred.numpy() == sk.predict(images[test].reshape(-1, 64).astype(np.float64))).mean()
    assert agree > 0.99  # equal-distance neighbours may be ordered differently
    np.testing.assert_allclose(probs.sum(1).numpy(), 1.0, atol=1e-5)
    spec = ModelSpec(name="knn", in_channels=1, num_classes=10, image_size=8, classes=tuple(map(str, range(10))))
    loaded, _ = load_package(save_package(tmp_path / "pkg", model, spec))
    assert int(loaded.net.k) == 3 and loaded.net.distance == "l2" and loaded.net.train_x.shape == (1400, 64)
    assert torch.equal(loaded.predict_uint8(images[test])[0], pred)


def test_unfitted_knn_refuses_to_predict():
    with pytest.raises(RuntimeError, match="not been fitted"):
        KNearestNeighbors(1, 10, 8)(torch.zeros(2, 1, 8, 8))


def test_the_int8_search_runs_here_and_a_fallback_would_be_named():
    from components.models.knn import int8_gemm_fallback

    # x86 has torch's int8 GEMM: the kNN pipelines tag their run (visionray.knn.fallback) only where it lacks
    assert int8_gemm_fallback(8 * 8) is None and int8_gemm_fallback(28 * 28) is None
