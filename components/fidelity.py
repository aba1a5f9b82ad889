"""Fashion-FID and KID: distances between image sets in the feature space of the project's own classifier.

    features = ClassifierFeatures(classifier, image_size=28)   # a trained ImageClassifier (models:/…@champion)
    scores = distances(features, real=test_images, sets={"dcgan": samples, "blurred": blur(test_images)})
    scores["dcgan"]                                        # {"fid": …, "kid": …, "kid_std": …}
    calibration(features, test_images, train_images, n=10_000)  # the references a generator is read against

Inception features (the usual FID) mean little on 28×28 grey clothing and need weights this machine does
not have; the classifier visionray trains on the same data is the natural judge. Its features are its
penultimate activations: the input of its last linear layer, or, where that layer reads a wide spatial
map (ConvNet's 48×7×7), that map average-pooled down to at most :data:`MAX_FEATURES` values. The FID and
KID themselves are torchmetrics' (a custom feature module, offline).

A distance means something only beside others on the same features, so every run measures its own
scale: real train vs real test (the floor a perfect generator reaches, sampling noise only), blurred test
images and uniform noise (what "recognisably wrong" and "nothing at all" score). Everything is measured
against the test split.
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Widest feature vector kept: FID estimates a D×D covariance, which needs well over D images.
MAX_FEATURES = 512


class ClassifierFeatures(nn.Module):
    """uint8 N×C×H×W images → the classifier's penultimate features (float64), in eval mode, no gradients."""

    def __init__(self, classifier: nn.Module, image_size: int, max_features: int = MAX_FEATURES):
        super().__init__()
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.max_features = max_features
        linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("the feature model has no linear head to read penultimate features from")
        self.head = linears[-1]
        mean = getattr(getattr(classifier, "normalize", None), "mean", None)
        self.in_channels = int(mean.shape[0]) if mean is not None and mean.ndim >= 1 else 1
        # torchmetrics sizes its sums from this (else it would probe with a 3×299×299 Inception input)
        self.num_features = int(self(torch.zeros(2, self.in_channels, image_size, image_size,
                                                 dtype=torch.uint8)).shape[1])

    def forward(self, images: Tensor) -> Tensor:
        seen: dict[str, Tensor] = {}

        def keep_map(_m, _inp, out):
            if isinstance(out, Tensor) and out.ndim == 4:
                seen["map"] = out

        def keep_head(_m, inp):
            seen["head"] = inp[0]

        hooks = [m.register_forward_hook(keep_map) for m in self.classifier.modules() if m is not self.classifier]
        hooks.append(self.head.register_forward_pre_hook(keep_head))
        try:
            with torch.no_grad():
                self.classifier(images.float() / 255 if images.dtype == torch.uint8 else images.float())
        finally:
            for h in hooks:
                h.remove()
        head = seen["head"].flatten(1)
        if head.shape[1] > self.max_features and "map" in seen:
            fmap = seen["map"]
            side = max(1, int(math.sqrt(self.max_features / fmap.shape[1])))
            head = F.adaptive_avg_pool2d(fmap, min(side, fmap.shape[-1])).flatten(1)
        return head.double()


def as_nchw(images: np.ndarray | Tensor) -> Tensor:
    """uint8 N×H×W or N×H×W×C → uint8 N×C×H×W tensor."""
    if isinstance(images, np.ndarray):
        images = np.array(images)  # a copy: a memory-mapped or read-only array cannot back a tensor
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    return (x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)).contiguous()


def _batches(images: np.ndarray | Tensor, batch: int = 500):
    x = as_nchw(images)
    for i in range(0, len(x), batch):
        yield x[i:i + batch]


def distances(module: ClassifierFeatures, real: np.ndarray, sets: Mapping[str, np.ndarray],
              subset_size: int = 1000, subsets: int = 50, seed: int = 0) -> dict[str, dict[str, float]]:
    """FID, KID (mean and std over ``subsets`` random subsets of ``subset_size``, fewer where a set is
    smaller) of each set against ``real``: torchmetrics' metrics on ``module``'s features, the real
    images' features kept across sets; KID's subsets seeded so a run's figures repeat."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real), *(len(s) for s in sets.values()))
    # sync_on_compute off: inside a DDP worker torchmetrics would gather across ranks, and only one measures
    fid = FrechetInceptionDistance(feature=module, reset_real_features=False, sync_on_compute=False)
    with warnings.catch_warnings():  # "KID keeps every feature in memory": ≤ 2 × 10,000 × 512 doubles here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=module, subsets=subsets, subset_size=size, reset_real_features=False,
                                      sync_on_compute=False)
    for x in _batches(real):
        fid.update(x, real=True)
        kid.update(x, real=True)
    out = {}
    for name, images in sets.items():
        fid.reset()
        kid.reset()
        for x in _batches(images):
            fid.update(x, real=False)
            kid.update(x, real=False)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            kid_mean, kid_std = kid.compute()
        out[name] = {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
    return out


def blur(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Gaussian blur of uint8 images (each channel, each image): the 'recognisable but wrong' reference."""
    x = as_nchw(images).float()
    radius = max(1, int(3 * sigma))
    k = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    out = x.round().clamp(0, 255).to(torch.uint8)
    out = out[:, 0] if np.asarray(images).ndim == 3 else out.permute(0, 2, 3, 1)
    return out.numpy()


def noise_like(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Uniform random uint8 images of the same shape: the 'nothing at all' reference."""
    return np.random.default_rng(seed).integers(0, 256, size=np.asarray(images).shape, dtype=np.uint8)


def calibration(module: ClassifierFeatures, test: np.ndarray, train: np.ndarray, n: int,
                sigma: float = 1.0, seed: int = 0, subset_size: int = 1000) -> dict[str, dict[str, float]]:
    """The reference distances of a run, each on ``n`` images against the first ``n`` test images:
    ``real_train`` (n train images: the floor), ``blurred`` (the test images blurred by ``sigma``) and
    ``noise`` (uniform noise: the ceiling). ``blurred`` is the same images, blurred: it measures blur
    alone, not sampling noise."""
    rng = np.random.default_rng(seed)
    reference = np.asarray(test[:n])
    picked = np.asarray(train)[np.sort(rng.choice(len(train), min(n, len(train)), replace=False))]
    return distances(module, reference, {"real_train": picked, "blurred": blur(reference, sigma),
                                         "noise": noise_like(reference, seed)}, subset_size)


def class_accuracy(classifier: nn.Module, images: np.ndarray, labels: np.ndarray,
                   num_classes: int) -> tuple[float, np.ndarray]:
    """How often the classifier labels generated images as the class they were asked for: overall and per
    class (NaN for a class with no images)."""
    classifier.eval()
    predicted = []
    x = as_nchw(images)
    with torch.no_grad():
        for i in range(0, len(x), 512):
            predicted.append(classifier(x[i:i + 512].float() / 255).argmax(1))
    predicted_np = torch.cat(predicted).numpy() if predicted else np.zeros(0, dtype=np.int64)
    labels = np.asarray(labels)
    hits = predicted_np == labels
    per_class = np.array([hits[labels == c].mean() if (labels == c).any() else np.nan for c in range(num_classes)])
    return float(hits.mean()) if len(hits) else float("nan"), per_class
