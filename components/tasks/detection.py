"""Object detection as a task: images → boxes, labels, scores; mAP@0.5 ↑ (COCO mAP@[.5:.95] beside it).

    task = Detection.build(num_classes=3, classes=("circle", "square", "triangle"))
    x, (boxes, labels) = task.batch_prep(augment=Augment(flip=True), seed=0, epoch=2)(rows)
    outputs, loss = task.forward(model, x, (boxes, labels))     # the detector's own multi-part loss
    task.predict(model, uint8_images, {"score_threshold": 0.3})
    # [{"boxes": [[x1, y1, x2, y2], ...], "labels": [...], "scores": [...]}, ...]  one dict per image

Rows carry ``boxes`` (N, K, 4) pixels and ``box_labels`` (N, K), -1 past each image's objects
(components.data.shards.decode_targets). Training computes only the loss; evaluation decodes every
image (score >= ``EVAL_SCORE``, the usual low cut for mAP, NMS inside) and the meter matches detections
to ground truth per image, keeping score histograms of true and false positives that DDP ranks add
(components.detection_metrics.DetectionCounts); the final test mAP is computed exactly from the served
model's detections (pipelines.flows.detect). The served form applies ``score_threshold`` and NMS inside
the model and answers with pixel boxes and class indices; class names are in the model's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from components.detection_metrics import DetectionCounts
from components.tasks.base import Report, Task, TensorSpec

#: What a served detector accepts besides its images (name → default).
SERVED_PARAMS: dict[str, Any] = {"score_threshold": 0.3, "nms_threshold": 0.5, "max_detections": 100}
#: Detections scored below this are not kept when measuring mAP (COCO practice: low, so the
#: precision-recall curve reaches far; at most 100 per image).
EVAL_SCORE = 0.05


@dataclass
class DetectionStats:
    """Summed loss and count, and the summable mAP counts of decoded batches (evaluation only)."""

    num_classes: int
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0])
    counts: DetectionCounts | None = None

    def __post_init__(self) -> None:
        self.counts = self.counts or DetectionCounts(self.num_classes)

    def add(self, outputs: Any, targets: Any, loss: float) -> None:
        boxes, labels = targets
        self.sums[0] += float(loss) * len(boxes)
        self.sums[1] += len(boxes)
        if not isinstance(outputs, tuple):  # training: the raw maps, nothing decoded
            return
        gt_boxes, gt_labels = boxes.cpu().numpy(), labels.cpu().numpy()
        for (b, s, c), gb, gl in zip(outputs[1], gt_boxes, gt_labels):
            real = gl >= 0
            self.counts.add_image(b.cpu().numpy(), s.cpu().numpy(), c.cpu().numpy(), gb[real], gl[real])

    def totals(self) -> list[float]:
        return [*self.sums, *self.counts.totals()]

    def with_totals(self, totals: Sequence[float]) -> "DetectionStats":
        return DetectionStats(self.num_classes, [float(totals[0]), float(totals[1])],
                              self.counts.with_totals(totals[2:]))

    def compute(self) -> dict[str, float]:
        out = {"loss": self.sums[0] / max(self.sums[1], 1.0)}
        if self.counts.gt.sum() == 0:  # nothing decoded (a training epoch): not measured
            return {**out, "map50": float("nan"), "map": float("nan")}
        m = self.counts.compute()
        return {**out, "map50": m["map50"], "map": m["map"]}


@dataclass(frozen=True)
class DetectionPrep:
    """Rows → (float NCHW in [0, 1], (boxes (N, K, 4) float, labels (N, K) int64)); with ``augment``
    (``data.augment``), crops and flips move the boxes with the pixels (components.dense_augment; a box
    cropped away becomes padding) and brightness/contrast jitter the pixels, seeded per batch like
    components.batches."""

    augment: Any = None
    seed: int = 0
    epoch: int = 0
    channels_last: bool = False

    def __call__(self, batch: Mapping[str, Any]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        images = torch.from_numpy(np.array(batch["image"], copy=True))
        images = images.unsqueeze(-1) if images.ndim == 3 else images
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        boxes = torch.from_numpy(np.array(batch["boxes"], dtype=np.float32, copy=True))
        labels = torch.from_numpy(np.array(batch["box_labels"], dtype=np.int64, copy=True))
        from components.dense_augment import augment_batch

        x, _, boxes, labels = augment_batch(x, None, boxes, labels, self.augment, self.seed, self.epoch,
                                            batch.get("idx"))
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
        return x, (boxes, labels)


@dataclass
class Detection(Task):
    name: ClassVar[str] = "detection"
    primary: ClassVar[str] = "map50"
    higher_is_better: ClassVar[bool] = True

    num_classes: int = 0
    classes: tuple[str, ...] = ()
    preview: Mapping[str, Any] | None = None  # a few val images with their boxes and labels, drawn per epoch
    preview_every: int = 0  # draw after every this many epochs, and after the last (0: never)
    epochs: int = 0
    preview_score: float = SERVED_PARAMS["score_threshold"]

    @classmethod
    def build(cls, num_classes: int, classes: Sequence[str] = (), preview: Mapping[str, Any] | None = None,
              preview_every: int = 0, epochs: int = 0, preview_score: float = SERVED_PARAMS["score_threshold"],
              **_: Any) -> "Detection":
        return cls(num_classes, tuple(classes) or tuple(str(i) for i in range(num_classes)), preview,
                   preview_every, epochs, preview_score)

    def batch_prep(self, *, augment: Any = None, seed: int = 0, epoch: int = 0, channels_last: bool = False,
                   pin_memory: bool = False) -> DetectionPrep:
        return DetectionPrep(augment, seed, epoch, channels_last)

    def forward(self, model: nn.Module, inputs: Any, targets: Any) -> tuple[Any, Tensor]:
        outputs = model(inputs, targets)  # a two-stage detector samples its RoIs with the ground truth
        return outputs, self.loss(outputs, targets)

    def infer(self, model: nn.Module, inputs: Any) -> Any:
        from components.models.detectors import decode

        outputs = model(inputs)
        return outputs, decode(outputs, EVAL_SCORE, SERVED_PARAMS["nms_threshold"], SERVED_PARAMS["max_detections"])

    def loss(self, outputs: Any, targets: Any) -> Tensor:
        from components.models.detectors import detection_loss

        return detection_loss(outputs[0] if isinstance(outputs, tuple) else outputs, targets)

    def meter(self) -> DetectionStats:
        return DetectionStats(self.num_classes)

    def loss_floor(self) -> float:
        return 1.0  # a fresh detector's focal loss is of order one per object

    def predictions(self, outputs: Any) -> Any:
        return outputs[1]

    def epoch_artifacts(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Predicted boxes beside the ground truth on the preview images, as PNG bytes, every few epochs."""
        number = epoch + 1
        if not self.preview or not self.preview_every or (number % self.preview_every and number != self.epochs):
            return {}
        from components.dense_plots import png_bytes
        from components.detection_plots import boxes_grid

        was_training = model.training
        images = np.asarray(self.preview["images"], dtype=np.uint8)
        found = model.detect_uint8(images, self.preview_score)
        model.train(was_training)
        truth = (np.asarray(self.preview["boxes"]), np.asarray(self.preview["labels"]))
        return {f"predictions/epoch_{number:03d}.png": png_bytes(boxes_grid(images, truth, found, self.classes))}

    # -- serving
    def predict(self, model: nn.Module, raw: np.ndarray, params: Mapping[str, Any] | None = None) -> list[dict]:
        p = {**SERVED_PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
        found = model.detect_uint8(np.asarray(raw, dtype=np.uint8), float(p["score_threshold"]),
                                   float(p["nms_threshold"]), int(p["max_detections"]))
        return [{"boxes": [[round(float(v), 2) for v in box] for box in b.tolist()],
                 "labels": [int(c) for c in c_.tolist()], "scores": [round(float(v), 4) for v in s.tolist()]}
                for b, s, c_ in found]

    def served_schema(self, example: np.ndarray, model_meta: Mapping[str, Any]) -> tuple[list[TensorSpec],
                                                                                          list[TensorSpec]]:
        # One list of boxes per image, of any length: no tensor spec describes it, so no output schema.
        return [TensorSpec("uint8", (-1, *example.shape[1:]))], []

    def served_params(self) -> dict[str, Any]:
        return dict(SERVED_PARAMS)

    def report(self, predictions: np.ndarray, targets: np.ndarray, classes: Sequence[str],
               history: Mapping[str, Sequence[tuple[int, float]]], title: str) -> Report:
        from components.plots import curves_figure

        return Report(figures={"plots/curves.png": curves_figure(history, title)})
