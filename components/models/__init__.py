"""Image classifiers in plain PyTorch: input normalisation, the CS231n model zoo, one factory.

The preprocessing travels *inside* the model, so a saved model takes raw images:

    >>> import torch
    >>> from components.models import (ImageClassifier, Normalize, build_model,
    ...                                normalization_stats)
    >>> images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)   # N,H,W
    >>> mean, std = normalization_stats([images[:32], images[32:]], mode="per_channel")
    >>> net = build_model("convnet", in_channels=1, num_classes=10, image_size=28)
    >>> model = ImageClassifier(Normalize(mean, std), net)
    >>> logits = model(images.unsqueeze(1).float() / 255)        # training path
    >>> classes, probs = model.predict_uint8(images[:4])          # serving path
    >>> classes.shape, probs.shape
    (torch.Size([4]), torch.Size([4, 10]))

Normalisation statistics can be computed streaming or across workers: each
worker calls :func:`accumulate_moments` on its shards (exact float64 sums of the
raw uint8 values, so partial results combine exactly in any order) and the
driver calls :func:`finalize_moments` on the list of partial results.

Families (:data:`BUILDERS`; every net is built as ``Net(in_channels, num_classes, image_size, ...)``):

* ``softmax`` :class:`SoftmaxLinear`, ``mlp`` :class:`MLP` (any activation/init, BN, dropout) - mlp.py
* ``convnet``, ``alexnet``, ``vgg``, ``googlenet`` - cnn.py
* ``resnet`` (basic or bottleneck blocks, ResNeXt with ``groups``), ``wide_resnet`` - resnet.py
* ``densenet`` (DenseNet-BC) - densenet.py
* ``fcn``, ``unet``, ``fcn_resnet``: per-pixel class scores for segmentation (:data:`SEGMENTATION_MODELS`) - segmentation.py
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from components.models.base import (
    NORMALIZATION_MODES,
    ImageClassifier,
    NormalizationMode,
    Normalize,
    accumulate_moments,
    count_macs,
    count_parameters,
    finalize_moments,
    normalization_stats,
)
from components.models.cnn import VGG, AlexNet, ConvNet, GoogLeNet, Inception
from components.models.densenet import DenseNet
from components.models.features import build_hoglinear
from components.models.knn import build_knn
from components.models.layers import ACTIVATIONS, INITS, Maxout
from components.models.mlp import MLP, SoftmaxLinear
from components.models.resnet import BasicBlock, Bottleneck, ResNet, WideResNet, resnet
from components.models.segmentation import FCN, FCNResNet, UNet

__all__ = [
    "MODEL_NAMES", "BUILDERS", "SEGMENTATION_MODELS", "FCN", "FCNResNet", "UNet", "NORMALIZATION_MODES", "NormalizationMode", "ACTIVATIONS", "INITS",
    "Normalize", "accumulate_moments", "finalize_moments", "normalization_stats", "ImageClassifier",
    "SoftmaxLinear", "MLP", "Maxout", "ConvNet", "AlexNet", "VGG", "GoogLeNet", "Inception",
    "BasicBlock", "Bottleneck", "ResNet", "resnet", "WideResNet", "DenseNet",
    "build_model", "accepted_options", "option_defaults", "count_parameters", "count_macs",
]


# --------------------------------------------------------------------------- builders
# One function per family: (in_channels, num_classes, image_size, *, options) -> nn.Module. Its keyword
# parameters ARE the options the family takes (accepted_options reads them), and their defaults are
# the family's defaults. dropout and batchnorm reach every builder.


def _softmax(c: int, k: int, s: int, *, dropout: float, batchnorm: bool) -> nn.Module:
    return SoftmaxLinear(c, k, s, dropout=dropout)  # batchnorm does not apply to a linear classifier


def _mlp(c: int, k: int, s: int, *, hidden: tuple[int, ...] = (256, 256), activation: str = "relu",
         init: str = "he", dropout: float, batchnorm: bool) -> nn.Module:
    return MLP(c, k, s, hidden=hidden, activation=activation, init=init, dropout=dropout, batchnorm=batchnorm)


def _convnet(c: int, k: int, s: int, *, width: int = 32, dropout: float, batchnorm: bool) -> nn.Module:
    return ConvNet(c, k, s, width=width, dropout=dropout, batchnorm=batchnorm)


def _alexnet(c: int, k: int, s: int, *, width: int = 32, dropout: float, batchnorm: bool) -> nn.Module:
    return AlexNet(c, k, s, width=width, dropout=dropout, batchnorm=batchnorm)


def _vgg(c: int, k: int, s: int, *, width: int = 32, dropout: float, batchnorm: bool) -> nn.Module:
    return VGG(c, k, s, width=width, dropout=dropout, batchnorm=batchnorm)


def _googlenet(c: int, k: int, s: int, *, width: int = 32, dropout: float, batchnorm: bool) -> nn.Module:
    return GoogLeNet(c, k, s, width=width, dropout=dropout, batchnorm=batchnorm)


def _resnet(c: int, k: int, s: int, *, depth: int = 20, width: int = 16, block: str = "basic",
            groups: int = 1, dropout: float, batchnorm: bool) -> nn.Module:
    return ResNet(c, k, s, depth=depth, width=width, block=block, groups=groups, dropout=dropout,
                  batchnorm=batchnorm)


def _wide_resnet(c: int, k: int, s: int, *, depth: int = 16, width: int = 2, dropout: float,
                 batchnorm: bool) -> nn.Module:
    return WideResNet(c, k, s, depth=depth, widen=width, dropout=dropout, batchnorm=batchnorm)  # width = k


def _densenet(c: int, k: int, s: int, *, depth: int = 40, growth: int = 12, dropout: float,
              batchnorm: bool) -> nn.Module:
    return DenseNet(c, k, s, depth=depth, growth=growth, dropout=dropout, batchnorm=batchnorm)


def _knn(c: int, k: int, s: int, *, dropout: float, batchnorm: bool) -> nn.Module:
    return build_knn(in_channels=c, num_classes=k, image_size=s)


def _hoglinear(c: int, k: int, s: int, *, dropout: float, batchnorm: bool) -> nn.Module:
    return build_hoglinear(in_channels=c, num_classes=k, image_size=s, dropout=dropout)


def _fcn(c: int, k: int, s: int, *, width: int = 16, depth: int = 3, dropout: float, batchnorm: bool) -> nn.Module:
    return FCN(c, k, width=width, depth=depth, dropout=dropout, batchnorm=batchnorm)  # any image size


def _unet(c: int, k: int, s: int, *, width: int = 16, depth: int = 3, dropout: float, batchnorm: bool) -> nn.Module:
    return UNet(c, k, width=width, depth=depth, dropout=dropout, batchnorm=batchnorm)


def _fcn_resnet(c: int, k: int, s: int, *, depth: int = 20, width: int = 16, dropout: float,
                batchnorm: bool) -> nn.Module:
    return FCNResNet(c, k, depth=depth, width=width, dropout=dropout, batchnorm=batchnorm)  # ResNet depth


#: The one dispatch: model name -> builder.
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "softmax": _softmax,
    "convnet": _convnet,
    "resnet": _resnet,
    "mlp": _mlp,
    "alexnet": _alexnet,
    "vgg": _vgg,
    "googlenet": _googlenet,
    "wide_resnet": _wide_resnet,
    "densenet": _densenet,
    "knn": _knn,
    "hoglinear": _hoglinear,
    # semantic segmentation (§11): per-pixel class scores, models/segmentation.py
    "fcn": _fcn,
    "unet": _unet,
    "fcn_resnet": _fcn_resnet,
}
#: Families whose output is a score map per class (N, K, H, W): trained by the segmentation task.
SEGMENTATION_MODELS: tuple[str, ...] = ("fcn", "unet", "fcn_resnet")
MODEL_NAMES: tuple[str, ...] = tuple(BUILDERS)

_ALWAYS = ("dropout", "batchnorm")


def accepted_options(name: str) -> tuple[str, ...]:
    """The options (``width``, ``depth``, ``activation``, ...) family ``name`` takes, besides dropout/batchnorm."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    params = inspect.signature(BUILDERS[name]).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _ALWAYS)


def option_defaults(name: str) -> dict[str, Any]:
    """Family ``name``'s default for each of its :func:`accepted_options`."""
    params = inspect.signature(BUILDERS[name]).parameters
    return {k: params[k].default for k in accepted_options(name)}


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    dropout: float = 0.0,
    batchnorm: bool = True,
    **options: Any,
) -> nn.Module:
    """Build the net called ``name`` (one of :data:`MODEL_NAMES`), without normalisation.

    ``options`` of ``None`` take the family's default (convnet width 32; resnet depth 20, width 16;
    mlp hidden (256, 256), relu, He init...). An option the family does not take (``depth`` for a
    convnet, ``width`` for softmax) is rejected, so a misrouted option fails loudly instead of being
    ignored. ``batchnorm`` does not apply to ``softmax``.
    """
    accepted = accepted_options(name)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    given = {k: v for k, v in options.items() if v is not None}
    for key in given:
        if key not in accepted:
            raise ValueError(f"{key} does not apply to {name!r} (it takes: {', '.join(accepted) or 'nothing'})")
    return BUILDERS[name](in_channels, num_classes, image_size, dropout=dropout, batchnorm=batchnorm, **given)
