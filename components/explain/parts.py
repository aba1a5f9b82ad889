"""The four parts of an explanation, each a plain function of a model and test images → arrays and numbers.

    out = attributions(model, x, y, grid=8)           # maps for a grid, deletion/insertion AUC per method
    out = adversarial(model, x, y, eps=(0.05, 0.1))   # accuracy per ε for FGSM and PGD, examples, fooling images
    out = class_models(model, classes=10, shape=(1, 28, 28))
    out = features(model, x, y, tsne_points=10000)    # t-SNE / UMAP, kNN accuracies, trustworthiness, neighbours

``x`` are float images in [0, 1] (N×C×H×W), ``y`` class ids; the model is in eval mode. Each part is what one
Ray task of the explain pipeline runs (pipelines.flows.explain); nothing here knows Ray or MLflow.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from components.explain import adversarial as adv
from components.explain import attribution as attr
from components.explain import embedding as emb


def attributions(model: nn.Module, x: Tensor, y: Tensor, *, methods: Sequence[str] = attr.METHODS, grid: int = 8,
                 masks: Tensor | None = None, tolerance: int = 1, patch: int = 4, stride: int = 2, samples: int = 16,
                 sigma: float = 0.15, steps: int = 32, curve_steps: int = 16, batch: int = 64,
                 seed: int = 0) -> dict[str, Any]:
    """Every method on every image, scored; the target is the true class.

    Returns ``maps`` (method → importance of the first ``grid`` images, grid×H×W) and ``rows``: one per
    method and the ``random`` baseline, with mean ``deletion_auc``, ``insertion_auc`` and, when ``masks``
    are given, ``pointing_game``, ranked by deletion AUC (lowest first).
    """
    rows, maps = [], {}
    for method in (*methods, "random"):
        started = time.perf_counter()
        dele, ins, hits, first = [], [], [], None
        for s in range(0, len(x), batch):
            xb, yb = x[s:s + batch], y[s:s + batch]
            heat = attr.importance(attr.attribute(method, model, xb, yb, patch=patch, stride=stride, samples=samples,
                                                  sigma=sigma, steps=steps, seed=seed + s), method)
            if first is None:
                first = heat[:grid]
            dele.append(attr.deletion_auc(model, xb, yb, heat, curve_steps))
            ins.append(attr.insertion_auc(model, xb, yb, heat, curve_steps))
            if masks is not None:
                hits.append(attr.pointing_game(heat, masks[s:s + batch], tolerance))
        row = {"method": method, "deletion_auc": float(torch.cat(dele).mean()),
               "insertion_auc": float(torch.cat(ins).mean()), "seconds": time.perf_counter() - started}
        if masks is not None:
            row["pointing_game"] = float(torch.cat(hits).mean())
        rows.append(row)
        if method != "random":
            maps[method] = first.numpy()
    rows.sort(key=lambda r: r["deletion_auc"])
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return {"maps": maps, "rows": rows, "images": x[:grid].numpy(), "labels": y[:grid].numpy()}


def adversarial(model: nn.Module, x: Tensor, y: Tensor, *, eps: Sequence[float] = (0.02, 0.05, 0.1, 0.2),
                pgd_steps: int = 10, examples: int = 8, fool_classes: Sequence[int] = (), confidence: float = 0.99,
                fool_steps: int = 500, seed: int = 0) -> dict[str, Any]:
    """Accuracy under FGSM and PGD at each ε (ε = 0: clean), example rows, the mean loss before and after
    FGSM, and one fooling image per class in ``fool_classes``."""
    radii = [0.0, *[float(e) for e in eps if e > 0]]
    accuracy: dict[str, list[float]] = {"fgsm": [], "pgd": []}
    rows, titles = [x[:examples].numpy()], ["clean"]
    predictions = {"clean": _predict(model, x[:examples])}
    for e in radii:
        if e == 0:
            clean = adv.accuracy(model, x, y)
            accuracy["fgsm"].append(clean)
            accuracy["pgd"].append(clean)
            continue
        for name, attack in (("fgsm", lambda xb, yb: adv.fgsm(model, xb, yb, e)),
                             ("pgd", lambda xb, yb: adv.pgd(model, xb, yb, e, pgd_steps, seed=seed))):
            attacked = torch.cat([attack(x[s:s + 256], y[s:s + 256]) for s in range(0, len(x), 256)])
            accuracy[name].append(adv.accuracy(model, attacked, y))
            rows.append(attacked[:examples].numpy())
            titles.append(f"{name} ε={e:g}")
            predictions[titles[-1]] = _predict(model, attacked[:examples])
    with torch.no_grad():
        before = float(nn.functional.cross_entropy(model(x), y))
    fgsm_eps = 0.1 if 0.1 in radii else radii[-1]
    attacked = adv.fgsm(model, x, y, fgsm_eps)
    with torch.no_grad():
        after = float(nn.functional.cross_entropy(model(attacked), y))
    fooling = [adv.fooling_image(model, int(c), tuple(x.shape[1:]), confidence, fool_steps, seed=seed + int(c))
               for c in fool_classes]
    return {"eps": radii, "accuracy": accuracy, "rows": rows, "titles": titles, "predictions": predictions,
            "labels": y[:examples].numpy(), "loss_clean": before, "loss_fgsm": after, "loss_fgsm_eps": fgsm_eps,
            "fooling": np.stack([f[0].numpy() for f in fooling]) if fooling else None,
            "fooling_confidence": [f[1] for f in fooling], "fooling_steps": [f[2] for f in fooling],
            "fool_classes": [int(c) for c in fool_classes]}


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor) -> list[int]:
    return model(x).argmax(1).tolist()


def class_models(model: nn.Module, classes: int, shape: tuple[int, int, int], *, steps: int = 200,
                 lr: float = 0.01, l2: float = 1e-3, blur_every: int = 10, blur_sigma: float = 0.5,
                 jitter: int = 2, seed: int = 0) -> dict[str, Any]:
    """One gradient-ascent image per class (classes×C×H×W) and the probability the model gives each."""
    images = torch.stack([adv.class_visualisation(model, c, shape, steps, lr, l2, blur_every, blur_sigma, jitter,
                                                  seed + c) for c in range(classes)])
    with torch.no_grad():
        probs = torch.softmax(model(images), 1)[torch.arange(classes), torch.arange(classes)]
    return {"images": images.numpy(), "probabilities": probs.tolist()}


def features(model: nn.Module, x: Tensor, y: Tensor, *, tsne_points: int = 10000, umap_on: bool = True,
             pca_dims: int = 50, k: int = 5, queries: int = 5, neighbours: int = 6, threads: int = 1,
             seed: int = 0) -> dict[str, Any]:
    """t-SNE (and UMAP) of the penultimate features of up to ``tsne_points`` images; leave-one-out kNN
    accuracy in the full feature space, in each 2-D map and in pixel space; trustworthiness of each
    map; the nearest neighbours of a few queries in feature space and in pixel space."""
    x, y = x[:tsne_points], y[:tsne_points]
    labels = y.numpy()
    feats = emb.penultimate(model, x)
    started = time.perf_counter()
    low = emb.pca(feats, pca_dims, seed)
    maps = {"tsne": emb.tsne(low, seed, threads=threads)}
    seconds = {"tsne": time.perf_counter() - started}
    if umap_on:
        started = time.perf_counter()
        maps["umap"] = emb.umap(low, seed)
        seconds["umap"] = time.perf_counter() - started
    pixels = x.flatten(1).numpy()
    out: dict[str, Any] = {"maps": maps, "labels": labels, "seconds": seconds, "points": len(labels),
                           "dims": int(feats.shape[1]),
                           "knn_full": emb.knn_accuracy(feats, labels, k), "knn_pixels": emb.knn_accuracy(pixels, labels, k),
                           "knn": {m: emb.knn_accuracy(p, labels, k) for m, p in maps.items()},
                           "trustworthiness": {m: emb.trustworthiness_of(feats, p, k, seed=seed) for m, p in maps.items()}}
    chosen = np.random.default_rng(seed).choice(len(labels), min(queries, len(labels)), replace=False)
    by_feature = emb.neighbours(feats[chosen], feats, neighbours)
    by_pixel = emb.neighbours(pixels[chosen], pixels, neighbours)
    out["neighbours"] = {"queries": chosen, "feature": by_feature, "pixel": by_pixel,
                         "feature_images": x.numpy()[by_feature], "pixel_images": x.numpy()[by_pixel],
                         "feature_agreement": float((labels[by_feature[:, 1:]] == labels[chosen, None]).mean()),
                         "pixel_agreement": float((labels[by_pixel[:, 1:]] == labels[chosen, None]).mean())}
    return out
