"""Fashion-FID and KID in a classifier's feature space; the nearest-neighbour check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.fidelity import (
    ClassifierFeatures,
    blur,
    calibration,
    class_accuracy,
    distances,
    noise_like,
)
from components.models import ImageClassifier, Normalize, build_model
from components.nearest import copy_ratio, nearest_training_images


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255 / 16)).round().astype(np.uint8)  # 8×8, 0-16 → 0-255
    return images, d.target


@pytest.fixture(scope="module")
def classifier(digits):
    """A small ConvNet trained a few hundred steps on digits: real features, not random ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: more threads only spin against each other on 2 shared cores
    torch.manual_seed(0)
    images, labels = digits
    net = build_model("convnet", in_channels=1, num_classes=10, image_size=8, width=8)
    model = ImageClassifier(Normalize.identity(1), net)
    x = torch.from_numpy(images[:1200]).unsqueeze(1).float() / 255
    y = torch.from_numpy(labels[:1200])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        idx = torch.randint(0, len(x), (64,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()


def test_features_are_the_penultimate_activations(classifier):
    features = ClassifierFeatures(classifier, image_size=8)
    out = features(torch.zeros(3, 1, 8, 8, dtype=torch.uint8))
    assert out.shape == (3, features.num_features) and out.dtype == torch.float64
    assert features.num_features == 16 * 2 * 2  # ConvNet width 8: the head reads 16×2×2
    narrow = ClassifierFeatures(classifier, image_size=8, max_features=20)
    assert narrow.num_features == 16  # wider than 20: the map pooled to 1×1


def test_fid_of_a_set_against_itself_is_zero_and_larger_for_blur_and_noise(classifier, digits):
    images = digits[0][np.random.default_rng(0).permutation(len(digits[0]))]
    features = ClassifierFeatures(classifier, image_size=8)
    real, other = images[:800], images[800:1600]
    d = distances(features, real, {"itself": real, "other_half": other, "blurred": blur(real, 0.5),
                                   "noise": noise_like(real)}, subset_size=200, subsets=10)
    assert d["itself"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < d["other_half"]["fid"] < min(d["blurred"]["fid"], d["noise"]["fid"]) / 5
    assert d["noise"]["fid"] > 10
    # KID's subsets of one set overlap, which biases it below 0 against itself: near 0 beside noise's
    assert abs(d["itself"]["kid"]) < 0.05 * d["noise"]["kid"]
    assert d["other_half"]["kid"] < d["blurred"]["kid"] and d["other_half"]["kid"] < d["noise"]["kid"]
    again = distances(features, real, {"other_half": other}, subset_size=200, subsets=10)
    assert again["other_half"] == d["other_half"]  # seeded: a run's figures repeat


def test_calibration_puts_the_floor_below_blur_and_noise(classifier, digits):
    images = digits[0]
    features = ClassifierFeatures(classifier, image_size=8)
    cal = calibration(features, images[1200:], images[:1200], n=500, sigma=0.5, subset_size=200)
    # (blur against noise has no fixed order in a classifier's space: on 8×8 digits a blur of σ = 1 px
    # scores farther than uniform noise)
    assert cal["real_train"]["fid"] < min(cal["blurred"]["fid"], cal["noise"]["fid"]) / 2


def test_class_accuracy_per_class(classifier, digits):
    images, labels = digits
    overall, per_class = class_accuracy(classifier, images[1200:], labels[1200:], 10)
    assert overall > 0.7 and per_class.shape == (10,)
    wrong, _ = class_accuracy(classifier, images[1200:], (labels[1200:] + 1) % 10, 10)
    assert wrong < 0.2


def test_blur_keeps_shape_and_mean_and_smooths():
    img = np.zeros((2, 9, 9), dtype=np.uint8)
    img[:, 4, 4] = 255
    out = blur(img, 1.0)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out[0, 4, 4] < 255 and out[0, 4, 5] > 0
    colour = blur(np.full((1, 8, 8, 3), 100, dtype=np.uint8), 1.0)
    assert colour.shape == (1, 8, 8, 3) and (colour == 100).all()


def test_nearest_neighbours_find_copies(digits):
    images = digits[0]
    train = images[:1000]
    copies = train[[5, 17, 900]]
    idx, dist = nearest_training_images(copies, train, k=2, chunk=300)  # chunks: the merge across them
    assert idx[:, 0].tolist() == [5, 17, 900] and np.allclose(dist[:, 0], 0, atol=0.01)
    assert (dist[:, 1] > 0).all()
    _, test_dist = nearest_training_images(images[1000:1100], train, k=1)
    assert copy_ratio(dist[:, 0], test_dist[:, 0]) < 0.01
    assert 0.5 < copy_ratio(test_dist[:50, 0], test_dist[50:, 0]) < 2
