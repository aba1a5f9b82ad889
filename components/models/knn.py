"""k-nearest neighbours (CS231n §2.1-2.2): vectorised L1/L2 distances, k-fold CV, a model package.

Everything is a few matrix operations over a chunk of queries at a time (no Python loop over
samples). L2 ranks by ``|b|^2 - 2 a.b`` (one exact int8 GEMM on the pixels); L1 uses
``torch.cdist(p=1)``::

    knn = KNearestNeighbors(in_channels=1, num_classes=10, image_size=28, k=5, distance="l2")
    knn.fit(train_images_uint8, train_labels)          # N×H×W(×C) uint8, the train set as buffers
    model = ImageClassifier(Normalize.identity(1), knn) # raw images in, classes out, like any model
    classes, probs = model.predict_uint8(test_images_uint8)

The train set, k and the distance live in buffers, so ``save_package``/``load_package`` carry a
fitted kNN like any other net; the package rebuilds an empty one and :meth:`_load_from_state_dict`
resizes the buffers to what was saved.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

DISTANCES = ("l1", "l2")


def pairwise_distances(a: Tensor, b: Tensor, distance: str = "l2") -> Tensor:
    """(N, D) × (M, D) → (N, M) L1 or L2 (Euclidean) distances, in float32."""
    a, b = a.float(), b.float()
    if distance == "l1":
        return torch.cdist(a, b, p=1)
    if distance == "l2":
        return _squared_l2(a, b).clamp_min_(0).sqrt_()
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def _squared_l2(a: Tensor, b: Tensor, b_sq: Tensor | None = None) -> Tensor:
    b_sq = (b * b).sum(1) if b_sq is None else b_sq
    return torch.addmm(b_sq[None, :], a, b.T, alpha=-2).add_((a * a).sum(1, keepdim=True))


def to_int8(pixels: Tensor) -> Tensor:
    """uint8 pixels (or floats in [0, 1]) → int8 ``pixel - 128``.

    Shifting both sides by 128 leaves every L2 distance unchanged and makes the values fit int8, so
    the GEMM runs as an exact int8×int8→int32 product (VNNI on x86: ~4x the float32 rate).
    """
    if pixels.dtype != torch.uint8:
        pixels = pixels.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return (pixels.to(torch.int16) - 128).to(torch.int8)


def _int8_scores(q: Tensor, ref: Tensor, ref_sq: Tensor) -> Tensor:
    """|r|^2 - 2 q.r for int8 rows: the squared L2 distance less |q|^2, exact in int32."""
    try:
        dots = torch._int_mm(q, ref.T)
    except RuntimeError:  # no int8 GEMM on this device: the same numbers, exactly, in float64
        dots = (q.double() @ ref.double().T).to(torch.int32)
    return ref_sq[None, :] - 2 * dots


def int8_gemm_fallback(dim: int) -> str | None:
    """Why this machine's L2 search would run in float64 instead of int8 (None: the int8 GEMM runs). The
    answers are the same either way; float64 is several times slower, so a pipeline says so on its run."""
    try:
        for rows in (1, 32):  # a single query and a chunk: shapes the search uses
            torch._int_mm(torch.zeros(rows, dim, dtype=torch.int8), torch.zeros(dim, 8, dtype=torch.int8))
    except RuntimeError as e:
        return f"kNN L2 search in float64: no int8 GEMM here ({str(e).splitlines()[0][:120]})"
    return None


def nearest_labels(queries: Tensor, ref: Tensor, ref_labels: Tensor, k: int, distance: str = "l2",
                   chunk: int = 512) -> Tensor:
    """Labels of the ``k`` nearest reference rows of each query, nearest first: (N, k) int64.

    ``queries`` and ``ref`` are pixel rows (uint8, or floats in [0, 1]). Queries go ``chunk`` at a
    time so the (chunk, M) distance matrix stays small. For ranking, L2 needs neither the query
    norms nor the square root (both monotone per row), so it is one exact int8 GEMM per chunk.
    """
    if not 1 <= k <= ref.shape[0]:
        raise ValueError(f"k={k} must be between 1 and the {ref.shape[0]} reference rows")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if distance == "l2":
        ref = to_int8(ref)
        ref_sq = ref.to(torch.int32).pow(2).sum(1, dtype=torch.int32)
    else:
        ref = ref.float().div(255.0) if ref.dtype == torch.uint8 else ref.float()
    out = []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        if distance == "l2":
            scores = _int8_scores(to_int8(q), ref, ref_sq)
        else:
            q = q.float().div(255.0) if q.dtype == torch.uint8 else q.float()
            scores = torch.cdist(q, ref, p=1)
        idx = scores.topk(k, dim=1, largest=False, sorted=True).indices
        out.append(ref_labels[idx])
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)


def vote(labels: Tensor, num_classes: int) -> Tensor:
    """Neighbour labels (N, k) → vote counts (N, C); argmax breaks ties toward the smaller label."""
    counts = torch.zeros(labels.shape[0], num_classes, dtype=torch.float32)
    return counts.scatter_add_(1, labels.long(), torch.ones_like(labels, dtype=torch.float32))


def cross_validate(x: Tensor, y: Tensor, ks: Sequence[int], folds: int, num_classes: int,
                   distance: str = "l2", seed: int = 0) -> dict[int, list[float]]:
    """Validation accuracy of every ``k`` on each of ``folds`` folds: ``{k: [acc per fold]}``.

    One neighbour search per fold serves every k: the labels of the max(ks) nearest are sorted,
    so the k nearest are their first k columns.
    """
    n = x.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = torch.tensor_split(order, folds)
    kmax = max(ks)
    scores: dict[int, list[float]] = {k: [] for k in ks}
    for f in range(folds):
        held = parts[f]
        rest = torch.cat([parts[i] for i in range(folds) if i != f])
        labels = nearest_labels(x[held], x[rest], y[rest], min(kmax, len(rest)), distance)
        for k in ks:
            pred = vote(labels[:, :k], num_classes).argmax(1)
            scores[k].append(float((pred == y[held]).float().mean()))
    return scores


class KNearestNeighbors(nn.Module):
    """A fitted kNN as a net: float images (N, C, H, W) → log vote fractions (N, num_classes).

    ``forward`` returns ``log(votes / k)`` (floored at -30), so softmax gives the vote fractions and
    argmax the majority class, the same as the training loop's nets.
    """

    train_x: Tensor
    train_y: Tensor
    k: Tensor
    p: Tensor

    def __init__(self, in_channels: int, num_classes: int, image_size: int, *, k: int = 1,
                 distance: str = "l2", chunk: int = 512) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        self.num_classes, self.chunk = num_classes, chunk
        self.input_dim = in_channels * image_size * image_size
        # uint8: a package 4x smaller than float32, and the exact int8 GEMM of nearest_labels.
        self.register_buffer("train_x", torch.zeros(0, self.input_dim, dtype=torch.uint8))
        self.register_buffer("train_y", torch.zeros(0, dtype=torch.long))
        self.register_buffer("k", torch.tensor(k, dtype=torch.long))
        self.register_buffer("p", torch.tensor(DISTANCES.index(distance) + 1, dtype=torch.long))

    @property
    def distance(self) -> str:
        return DISTANCES[int(self.p) - 1]

    def fit(self, images: np.ndarray | Tensor, labels: np.ndarray | Tensor, k: int | None = None) -> "KNearestNeighbors":
        """Memorise uint8 images (N, H, W[, C]) and their labels (§2.1: training is remembering)."""
        x = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else torch.as_tensor(images)
        if x.dtype != torch.uint8:
            raise ValueError(f"fit expects uint8 images, got {x.dtype}")
        if x.ndim == 3:
            x = x.unsqueeze(-1)
        x = x.permute(0, 3, 1, 2).reshape(x.shape[0], -1)  # C, H, W order: what forward flattens
        if x.shape[1] != self.input_dim:
            raise ValueError(f"images have {x.shape[1]} values each, the model takes {self.input_dim}")
        self.train_x = x.contiguous()
        self.train_y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if k is not None:
            self.k = torch.tensor(k, dtype=torch.long)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.train_x.shape[0] == 0:
            raise RuntimeError("this kNN has not been fitted (no train set)")
        k = min(int(self.k), self.train_x.shape[0])
        labels = nearest_labels(x.flatten(1), self.train_x, self.train_y, k, self.distance, self.chunk)
        return torch.log(vote(labels, self.num_classes).div_(k)).clamp_min_(-30.0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001 - torch's signature
        # A package rebuilds an empty kNN: take the saved train set's size instead of refusing it.
        for name in ("train_x", "train_y"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"k={int(self.k)}, distance={self.distance}, train_rows={self.train_x.shape[0]}"


def build_knn(in_channels: int, num_classes: int, image_size: int, **_: object) -> KNearestNeighbors:
    """``build_model("knn", ...)``: an empty kNN, filled by ``fit`` or by loading a package."""
    return KNearestNeighbors(in_channels, num_classes, image_size)
