"""The plain model package and its spec: ``arch.json`` (how to rebuild the net) + ``weights.pt`` (a
plain state dict). The bottom of packaging: the other formats (components.ensemble_package,
components.compression.package) build on this module, and :mod:`components.packaging` dispatches
among all of them (import ``load_package`` and the names here from there).

Weights load with ``torch.load(weights_only=True)`` (:func:`components.package_safety.load_tensors`): a
``weights.pt`` holding any pickled object but tensors and plain containers is refused, never unpickled.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from components.models import ImageClassifier, Normalize, build_model
from components.package_safety import load_tensors

ARCH_FILE = "arch.json"
WEIGHTS_FILE = "weights.pt"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an :class:`ImageClassifier` before loading its weights."""

    name: str
    in_channels: int
    num_classes: int
    image_size: int
    classes: tuple[str, ...]
    normalization: str = "per_channel"
    width: int | None = None
    depth: int | None = None
    dropout: float = 0.0
    batchnorm: bool = True
    # Family options; None = the family's default, or an option it does not take. Packages
    # written before these existed load with all of them None, which rebuilds the same nets.
    activation: str | None = None  # mlp
    init: str | None = None  # mlp
    hidden: tuple[int, ...] | None = None  # mlp
    block: str | None = None  # resnet: basic | bottleneck
    groups: int | None = None  # resnet bottleneck: ResNeXt cardinality
    growth: int | None = None  # densenet
    # The task the net was trained for (components.tasks): evaluation, the gate and serving rebuild it
    # from here. Packages written before tasks existed are classifiers.
    task: str = "classification"
    # Character language models (task "language_model"): ``classes`` is the vocabulary (id → character),
    # ``num_classes`` its size, ``width`` the hidden size, ``depth`` the layers, ``image_size`` unused.
    embed: int | None = None
    context: int | None = None  # the transformer's longest input
    tie_weights: bool | None = None
    heads: int | None = None  # the transformer's attention heads
    # Captioners (task "captioning"): ``classes`` is the word vocabulary, ``width`` the CNN's, ``embed`` the
    # words', ``decoder`` the LSTM's size.
    decoder: int | None = None
    attention: bool | None = None
    # Generative models (task "generation"; components.models.generative): ``name`` the model (vae,
    # pixelcnn, ...), ``width``/``depth`` its size, ``levels`` the values a pixel takes (256; 2 binarised),
    # ``latent`` a latent code's size, ``beta`` the VAE's KL weight.
    levels: int | None = None
    latent: int | None = None
    beta: float | None = None
    sample_steps: int | None = None  # ddpm: DDIM steps of the served sampler
    # Classifiers: test-time augmentation inside the model (eval mode only): "flip" averages the logits of
    # each image and its mirror image, "flip_shift" also of each moved one pixel (components.models.base.
    # TTA_VIEWS). None: none (packages written before it existed).
    tta: str | None = None

    def build(self, normalize: Normalize | None = None) -> torch.nn.Module:
        if self.task == "language_model":
            from components.models.charlm import build_text_model

            return build_text_model(self.name, self.num_classes, embed=self.embed, hidden=self.width,
                                    layers=self.depth, dropout=self.dropout, tie_weights=self.tie_weights,
                                    context=self.context, heads=self.heads)
        if self.task == "captioning":
            from components.models.captioner import Captioner

            return Captioner(self.num_classes, in_channels=self.in_channels, width=self.width or 32,
                             embed=self.embed or 64, hidden=self.decoder or 256, attention=bool(self.attention),
                             dropout=self.dropout)
        if self.task == "detection":  # components.models.detectors: centernet, two_stage, localizer
            from components.models.detectors import DetectionModel, build_detector

            return DetectionModel(normalize or self._placeholder_normalize(),
                                  build_detector(self.name, self.in_channels, self.num_classes, depth=self.depth,
                                                 width=self.width, batchnorm=self.batchnorm))
        if self.task == "generation":
            from components.models.generative import build_generator

            return build_generator(self.name, in_channels=self.in_channels, image_size=self.image_size,
                                   levels=self.levels or 256, num_classes=self.num_classes, width=self.width,
                                   depth=self.depth, latent=self.latent, beta=self.beta,
                                   sample_steps=self.sample_steps)
        net = build_model(self.name, in_channels=self.in_channels, num_classes=self.num_classes,
                          image_size=self.image_size, width=self.width, depth=self.depth,
                          dropout=self.dropout, batchnorm=self.batchnorm, activation=self.activation,
                          init=self.init, hidden=self.hidden, block=self.block, groups=self.groups,
                          growth=self.growth)
        return ImageClassifier(normalize or self._placeholder_normalize(), net, tta=self.tta)

    def _placeholder_normalize(self) -> Normalize:
        # Buffers of the right shape, overwritten by load_state_dict.
        c, s = self.in_channels, self.image_size
        if self.normalization == "mean_image":
            return Normalize(torch.zeros(c, s, s), torch.ones(1, 1, 1))
        return Normalize.identity(c)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        if self.hidden is not None:
            d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["classes"] = tuple(d["classes"])
        if d.get("hidden") is not None:
            d["hidden"] = tuple(int(h) for h in d["hidden"])
        return cls(**d)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DistributedDataParallel (``prepare_model`` wraps it)."""
    return getattr(model, "module", model)


def save_package(directory: str | Path, model: torch.nn.Module, spec: ModelSpec) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ARCH_FILE).write_text(json.dumps(spec.to_dict(), indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    torch.save(state, directory / WEIGHTS_FILE)
    return directory


def load_state_dict_package(directory: str | Path) -> tuple[ImageClassifier, ModelSpec]:
    """A package of the plain format (``arch.json`` without ``"format"``, or ``"state_dict"``)."""
    directory = Path(directory)
    arch = json.loads((directory / ARCH_FILE).read_text())
    spec = ModelSpec.from_dict(arch)
    model = spec.build()
    state = load_tensors(directory / WEIGHTS_FILE)
    model.load_state_dict(state)
    model.eval()
    return model, spec
