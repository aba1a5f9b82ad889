"""Detectors of §11 on the ResNet family of the classification zoo, behind one dispatch: a single-object
localiser and a single-shot anchor-free detector (CenterNet; both in components.models.single_shot), a
two-stage detector (components.models.two_stage), and the model wrapper that serves them.

    net = build_detector("centernet", in_channels=3, num_classes=3, depth=20, width=16)
    out = net(x)                                   # training: the maps; net(x, targets) the same
    loss = detection_loss(out, (boxes, labels))    # boxes (B, K, 4) pixels, labels (B, K), -1 padding
    dets = decode(out, score_threshold=0.3)        # per image (boxes, scores, labels), after NMS

The backbone is a CIFAR ResNet's stem and stages (its state dict keys are the classifier's, so a
registered classifier's weights load into it: ``model.backbone_from``), with a stride-2 stem so a 64 px
scene costs what a 32 px CIFAR image does; a small top-down neck brings the last stage back to stride 4,
where the heads predict. Losses and decoding are functions of the outputs alone (the outputs name their
``kind``), so the task computes them without the model, and DDP sees every parameter used in forward.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from components.models.boxes import batched_nms
from components.models.single_shot import (  # noqa: F401 - the detectors' pieces, importable from here
    Backbone,
    CenterNet,
    Localizer,
    Targets,
    centernet_loss,
    centre_targets,
    decode_centernet,
    decode_localizer,
    localizer_loss,
)
from components.models.two_stage import TwoStage, decode_two_stage, two_stage_loss


def detection_loss(out: dict[str, Any], targets: Targets) -> Tensor:
    """The training loss of any detector here, chosen by the outputs' ``kind``."""
    return {"centernet": centernet_loss, "localizer": localizer_loss, "two_stage": two_stage_loss}[out["kind"]](
        out, targets)


def decode(out: dict[str, Any], score_threshold: float = 0.3, nms_threshold: float = 0.5,
           max_dets: int = 100) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per image: boxes (K, 4) in input pixels, clipped to the image, scores and labels, after the score
    threshold and per-class NMS, highest score first, at most ``max_dets``."""
    raw = {"centernet": decode_centernet, "localizer": decode_localizer, "two_stage": decode_two_stage}[out["kind"]](
        out, score_threshold, max_dets)
    h, w = (float(v) for v in out["image_size"])
    result = []
    for boxes, scores, labels in raw:
        boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w),
                             boxes[:, 3].clamp(0, h)], -1)
        keep = scores >= score_threshold
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, nms_threshold)[:max_dets]
        result.append((boxes[keep], scores[keep], labels[keep]))
    return result


# --------------------------------------------------------------------------- the model a package holds


class DetectionModel(nn.Module):
    """Normalisation + a detector; ``forward(x)`` takes float NCHW in [0, 1] like an ImageClassifier's,
    ``detect_uint8`` takes raw N×H×W×C pixels (the served path)."""

    def __init__(self, normalize: nn.Module, net: nn.Module):
        super().__init__()
        self.normalize, self.net = normalize, net

    def forward(self, x: Tensor, targets: Targets | None = None) -> dict[str, Any]:
        return self.net(self.normalize(x), targets)

    @torch.no_grad()
    def detect_uint8(self, images: Any, score_threshold: float = 0.3, nms_threshold: float = 0.5,
                     max_dets: int = 100) -> list[tuple[Tensor, Tensor, Tensor]]:
        x = torch.from_numpy(np.array(images, dtype=np.uint8))  # a copy: served arrays may be read-only
        x = (x.unsqueeze(-1) if x.ndim == 3 else x).permute(0, 3, 1, 2).float().div(255)
        self.eval()
        return decode(self(x), score_threshold, nms_threshold, max_dets)


DETECTORS = ("centernet", "two_stage", "localizer")
#: The options every detector takes (its ResNet backbone's size) and their defaults.
DETECTOR_OPTIONS = {"depth": 20, "width": 16}


def build_detector(name: str, in_channels: int, num_classes: int, *, depth: int | None = None,
                   width: int | None = None, batchnorm: bool = True, **_: Any) -> nn.Module:
    """A detector net (no normalisation): ``centernet`` (the default single-shot), ``two_stage`` or
    ``localizer``; ``depth``/``width`` size its ResNet backbone (20 and 16 by default)."""
    backbone = {"depth": depth or DETECTOR_OPTIONS["depth"], "width": width or DETECTOR_OPTIONS["width"],
                "batchnorm": batchnorm}
    nets = {"centernet": CenterNet, "two_stage": TwoStage, "localizer": Localizer}
    if name not in nets:
        raise ValueError(f"unknown detector {name!r}; expected one of {DETECTORS}")
    return nets[name](in_channels, num_classes, **backbone)
