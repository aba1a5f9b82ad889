"""The sections of the §12 pipelines: ``explain.*`` (what a registered classifier learned) and ``style.*``
(neural style transfer, texture synthesis, DeepDream).

    visionray show explain                 # the resolved values
    visionray show style --help            # every field with its help
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelines.config.base import _check, _doc

AttributionMethod = Literal["gradients", "smoothgrad", "integrated_gradients", "occlusion"]
StyleMode = Literal["transfer", "texture", "dream"]
#: scikit-image's bundled images that style.content / style.style may name instead of a path.
BUNDLED_IMAGES = ("astronaut", "chelsea", "coffee", "brick", "grass", "gravel", "camera", "rocket")


@dataclass(frozen=True)
class ExplainConfig:
    model: str | None = _doc("the classifier to explain: models:/NAME@alias or models:/NAME/VERSION (None: "
                             "models:/<dataset>-classifier@champion)", None)
    methods: tuple[AttributionMethod, ...] = _doc(
        "attribution methods, shown side by side and ranked by deletion AUC (a random map is always added "
        "as the baseline)", ("gradients", "smoothgrad", "integrated_gradients", "occlusion"))
    images: int = _doc("test images every attribution method is scored on (deletion/insertion AUC)", 200)
    grid: int = _doc("test images shown in the attribution and adversarial grids", 8)
    patch: int = _doc("occlusion: side of the square set to black", 4)
    stride: int = _doc("occlusion: step between squares", 2)
    smoothgrad_samples: int = _doc("SmoothGrad: noisy copies averaged", 16)
    smoothgrad_sigma: float = _doc("SmoothGrad: noise std, as a fraction of the [0, 1] pixel range", 0.15)
    ig_steps: int = _doc("integrated gradients: points on the path from the black baseline", 32)
    curve_steps: int = _doc("deletion/insertion: points on each curve", 16)
    pointing_tolerance: int = _doc("pointing game: pixels the map's peak may miss the object mask by", 1)
    eps: tuple[float, ...] = _doc("FGSM and PGD L∞ radii (pixels in [0, 1]); logged as steps 1000·ε", (0.02, 0.05, 0.1, 0.2))
    pgd_steps: int = _doc("PGD: signed-gradient steps per radius", 10)
    adv_images: int = _doc("test images attacked at every radius", 1000)
    fool_classes: tuple[int, ...] = _doc("classes to make fooling images for (empty: every class)", ())
    fool_confidence: float = _doc("fooling images: the probability the noise must reach", 0.99)
    class_steps: int = _doc("class-model visualisation: gradient-ascent steps per class", 200)
    class_lr: float = _doc("class-model visualisation: mean pixel change per step", 0.01)
    class_l2: float = _doc("class-model visualisation: L2 decay of the image (around grey)", 1e-3)
    class_blur_every: int = _doc("class-model visualisation: blur every this many steps (0: never)", 10)
    class_jitter: int = _doc("class-model visualisation: random shift of up to this many pixels per step", 2)
    tsne_points: int = _doc("test images whose penultimate features are embedded (t-SNE, UMAP)", 10000)
    umap: bool = _doc("also embed with UMAP (umap-learn; its first use compiles for about a minute)", True)
    pca_dims: int = _doc("PCA dimensions before t-SNE and UMAP", 50)
    knn_k: int = _doc("k of the leave-one-out kNN accuracies and of trustworthiness", 5)
    queries: int = _doc("test images whose nearest neighbours are shown, in feature and in pixel space", 5)

    def __post_init__(self) -> None:
        _check(self.model is None or self.model.startswith("models:/"), "explain.model",
               "must be models:/NAME@alias or models:/NAME/VERSION")
        _check(len(self.methods) >= 1 and len(set(self.methods)) == len(self.methods), "explain.methods",
               "must name at least one method, each once")
        _check(min(self.images, self.grid, self.adv_images, self.queries) >= 1, "explain.images",
               "grid, adv_images and queries must be >= 1")
        _check(self.patch >= 1 and self.stride >= 1, "explain.patch", "and explain.stride must be >= 1")
        _check(min(self.smoothgrad_samples, self.ig_steps, self.curve_steps, self.pgd_steps) >= 1,
               "explain.ig_steps", "smoothgrad_samples, curve_steps and pgd_steps must be >= 1")
        _check(all(0 < e <= 1 for e in self.eps), "explain.eps", "must be radii in (0, 1]")
        _check(0 < self.fool_confidence < 1, "explain.fool_confidence", "must be in (0, 1)")
        _check(self.tsne_points >= 20, "explain.tsne_points", "must be >= 20")
        _check(self.pca_dims >= 2 and self.knn_k >= 1, "explain.pca_dims", "must be >= 2 (and explain.knn_k >= 1)")


@dataclass(frozen=True)
class StyleConfig:
    modes: tuple[StyleMode, ...] = _doc("what to make, each in its own nested run: transfer (content image in the "
                                        "style's texture), texture (the style image's texture from noise), dream "
                                        "(DeepDream on the content image)", ("transfer", "texture", "dream"))
    content: str = _doc(f"content image: one of scikit-image's ({', '.join(BUNDLED_IMAGES)}) or a path", "chelsea")
    style: str = _doc("style / texture image: one of scikit-image's or a path", "brick")
    size: int = _doc("images are resized to this square side (pixels)", 256)
    features: str = _doc("feature network: 'random' (a shallow multi-scale net of random filters, Ustyuzhaninov "
                         "et al. 2016) or a registered classifier models:/NAME@alias", "random")
    filters: int = _doc("random features: filters per scale", 64)
    scales: tuple[int, ...] = _doc("random features: image downsampling factors, one layer each", (1, 2, 4, 8))
    kernel: int = _doc("random features: filter side", 5)
    optimizer: Literal["lbfgs", "adam"] = _doc(
        "pixel optimiser of transfer and texture (lbfgs: fewer steps, several evaluations each)", "adam")
    steps: int = _doc("transfer and texture: optimiser steps", 150)
    lr: float = _doc("learning rate (adam: per pixel, pixels in [0, 1]; lbfgs: about 1)", 0.02)
    content_weight: float = _doc("transfer: weight of the (relative) content loss", 1.0)
    style_weight: float = _doc("transfer and texture: weight of the (relative) Gram-matrix style loss", 1.0)
    tv_weight: float = _doc("weight of the total-variation smoothness loss", 1.0)
    content_scale: int = _doc("random features: the scale whose features are the content target", 2)
    dream_steps: int = _doc("dream: gradient-ascent steps", 40)
    dream_lr: float = _doc("dream: mean pixel change per step", 0.01)
    dream_layer: int = _doc("dream: which feature layer's activations are amplified (0: the first)", 1)
    log_every: int = _doc("log the image every this many steps", 25)

    def __post_init__(self) -> None:
        _check(len(self.modes) >= 1 and len(set(self.modes)) == len(self.modes), "style.modes",
               "must name at least one of transfer, texture, dream, each once")
        _check(32 <= self.size <= 1024, "style.size", "must be in [32, 1024]")
        _check(self.features == "random" or self.features.startswith("models:/"), "style.features",
               "must be 'random' or models:/NAME@alias")
        _check(self.filters >= 1 and self.kernel >= 1 and self.kernel % 2 == 1, "style.kernel",
               "must be odd and >= 1 (and style.filters >= 1)")
        _check(len(self.scales) >= 1 and all(s >= 1 for s in self.scales), "style.scales", "must list factors >= 1")
        _check(self.content_scale in self.scales, "style.content_scale", f"must be one of style.scales {list(self.scales)}")
        _check(min(self.steps, self.dream_steps, self.log_every) >= 1, "style.steps",
               "dream_steps and log_every must be >= 1")
        _check(self.lr > 0 and self.dream_lr > 0, "style.lr", "and style.dream_lr must be > 0")
        _check(min(self.content_weight, self.style_weight, self.tv_weight) >= 0, "style.style_weight",
               "content_weight and tv_weight must be >= 0")
        _check(self.dream_layer >= 0, "style.dream_layer", "must be >= 0")
