"""The ``detect.*`` section: what the detect pipeline logs beside the shared sections.

The detector itself is ``model.*`` (``model=centernet|two_stage|localizer``, ``model.depth``,
``model.width`` of its ResNet backbone, ``model.backbone_from``); the served thresholds are request
parameters (``score_threshold``, ``nms_threshold``, ``max_detections``), so one registered model
answers at any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.config.base import _check, _doc


@dataclass(frozen=True)
class DetectConfig:
    image_every: int = _doc("detect: draw predictions over the ground truth on a few val images every this "
                            "many epochs, and at the last (0: never)", 2)
    images: int = _doc("detect: val images in those figures", 8)
    score_threshold: float = _doc("detect: lowest score drawn in those figures", 0.3)

    def __post_init__(self) -> None:
        _check(self.image_every >= 0, "detect.image_every", "must be >= 0 (0: never)")
        _check(1 <= self.images <= 64, "detect.images", "must be in [1, 64]")
        _check(0 <= self.score_threshold < 1, "detect.score_threshold", "must be in [0, 1)")
