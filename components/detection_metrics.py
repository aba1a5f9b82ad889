"""Detection metrics: COCO's mAP@[.5:.95] and mAP@0.5, exact and as sums DDP ranks can add.

    from components.detection_metrics import coco_map, DetectionCounts
    result = coco_map(detections, ground_truth, num_classes=3)   # exact, as pycocotools computes it
    result["map"], result["map50"], result["per_class_ap"]          # AP@[.5:.95] per class, NaN where no GT

    counts = DetectionCounts(num_classes=3)                         # summable: score histograms of TP/FP
    counts.add_image(boxes, scores, labels, gt_boxes, gt_labels)
    counts.with_totals(all_reduced).compute()                      # {"map": ..., "map50": ...}

``detections`` and ``ground_truth`` are lists with one entry per image: ``(boxes (K, 4) x1 y1 x2 y2,
scores (K,), labels (K,))`` and ``(boxes, labels)``. The exact computation follows pycocotools'
``COCOeval`` for bounding boxes, area range "all", 100 detections per image and class, no crowd
regions: greedy matching by score at each IoU threshold 0.50:0.05:0.95, precision made monotone,
sampled at 101 recall points, averaged over thresholds and the classes that have ground truth
(tests/components/test_detection_metrics.py checks it against pycocotools itself).

The summable form bins each detection's score (in [0, 1]) and counts true and false positives per
class, threshold and bin; the precision-recall curve is then read at bin edges, so it equals the
exact AP up to how detections inside one bin are ordered (1e-3 wide: differences of a few 1e-4).
It is what the per-epoch ``val/map`` uses, since a list of detections cannot be all-reduced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETS = 100

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes, scores, labels
GroundTruth = tuple[np.ndarray, np.ndarray]  # boxes, labels


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) and (M, 4) x1 y1 x2 y2 boxes; 0 where the union is empty."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih

    def area(x: np.ndarray) -> np.ndarray:
        return np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)

    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_class(boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray,
                thresholds: np.ndarray = IOU_THRESHOLDS, max_dets: int = MAX_DETS) -> tuple[np.ndarray, np.ndarray]:
    """One image, one class: the kept detections' scores (by score, at most ``max_dets``) and whether each
    is a true positive at each threshold, (T, D). COCOeval.evaluateImg's greedy rule: each detection
    takes the unmatched ground truth it overlaps most, if that IoU reaches the threshold."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")[:max_dets]
    scores = np.asarray(scores, np.float64)[order]
    ious = iou_matrix(np.asarray(boxes).reshape(-1, 4)[order], gt)
    tp = np.zeros((len(thresholds), len(order)), dtype=bool)
    for t, thr in enumerate(thresholds):
        taken = np.zeros(len(gt), dtype=bool)
        for d in range(len(order)):
            best, m = min(thr, 1 - 1e-10), -1
            for g in range(len(gt)):
                if taken[g] or ious[d, g] < best:
                    continue
                best, m = ious[d, g], g  # a later ground truth of equal IoU wins, as in COCOeval
            if m >= 0:
                taken[m] = True
                tp[t, d] = True
    return scores, tp


def average_precision(tp: np.ndarray, fp: np.ndarray, positives: int) -> float:
    """AP from cumulative TP and FP counts along the score order (COCOeval.accumulate's 101 points)."""
    if positives == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone: the best precision further on
    at = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0)
    return float(sampled.mean())


def coco_map(detections: Sequence[Detections], ground_truth: Sequence[GroundTruth], num_classes: int,
             max_dets: int = MAX_DETS) -> dict:
    """Exact COCO box mAP: ``map`` (AP@[.5:.95]), ``map50``, ``map75``, per class ``per_class_ap`` and
    ``per_class_ap50`` (NaN for a class without ground truth; the means skip it)."""
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truth)} of ground truth")
    ap = np.full((num_classes, len(IOU_THRESHOLDS)), np.nan)
    for k in range(num_classes):
        scores, tps, positives = [], [], 0
        for (boxes, s, labels), (gt_boxes, gt_labels) in zip(detections, ground_truth):
            gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)[np.asarray(gt_labels) == k]
            positives += len(gt)
            mine = np.asarray(labels) == k
            kept, tp = match_class(np.asarray(boxes).reshape(-1, 4)[mine], np.asarray(s)[mine], gt,
                                   max_dets=max_dets)
            scores.append(kept)
            tps.append(tp)
        if positives == 0:
            continue
        order = np.argsort(-np.concatenate(scores), kind="mergesort")
        tp = np.concatenate(tps, axis=1)[:, order]
        for t in range(len(IOU_THRESHOLDS)):
            ctp, cfp = np.cumsum(tp[t]), np.cumsum(~tp[t])
            ap[k, t] = average_precision(ctp.astype(float), cfp.astype(float), positives)
    return _summary(ap)


def _summary(ap: np.ndarray) -> dict:
    valid = ~np.isnan(ap[:, 0])
    return {"map": float(ap[valid].mean()) if valid.any() else float("nan"),
            "map50": float(ap[valid, 0].mean()) if valid.any() else float("nan"),
            "map75": float(ap[valid, 5].mean()) if valid.any() else float("nan"),
            "per_class_ap": [float(a) for a in ap.mean(1)], "per_class_ap50": [float(a) for a in ap[:, 0]]}


@dataclass
class DetectionCounts:
    """Per class: ground-truth count, and per IoU threshold a histogram of detection scores that were
    true / false positives. Everything is a count, so ranks add their vectors (:meth:`totals`)."""

    num_classes: int
    bins: int = 0  # 0: chosen from the class count (finer for few classes, the vector stays small)
    gt: np.ndarray = field(init=False)
    tp: np.ndarray = field(init=False)
    fp: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.bins = self.bins or int(np.clip(20_000 // max(self.num_classes, 1), 100, 1000))
        shape = (self.num_classes, len(IOU_THRESHOLDS), self.bins)
        self.gt, self.tp, self.fp = np.zeros(self.num_classes), np.zeros(shape), np.zeros(shape)

    def add_image(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, gt_boxes: np.ndarray,
                  gt_labels: np.ndarray) -> None:
        boxes, gt_boxes = np.asarray(boxes).reshape(-1, 4), np.asarray(gt_boxes).reshape(-1, 4)
        scores, labels, gt_labels = np.asarray(scores), np.asarray(labels), np.asarray(gt_labels)
        for k in set(labels.tolist()) | set(gt_labels.tolist()):
            if not 0 <= k < self.num_classes:
                continue
            gt = gt_boxes[gt_labels == k]
            self.gt[k] += len(gt)
            kept, tp = match_class(boxes[labels == k], scores[labels == k], gt)
            b = np.clip((kept * self.bins).astype(int), 0, self.bins - 1)
            for t in range(len(IOU_THRESHOLDS)):
                np.add.at(self.tp[k, t], b, tp[t])
                np.add.at(self.fp[k, t], b, ~tp[t])

    def totals(self) -> list[float]:
        return [*self.gt.tolist(), *self.tp.ravel().tolist(), *self.fp.ravel().tolist()]

    def with_totals(self, totals: Sequence[float]) -> "DetectionCounts":
        out = DetectionCounts(self.num_classes, self.bins)
        t = np.asarray(totals, dtype=np.float64)
        n = out.tp.size
        out.gt = t[:self.num_classes].copy()
        out.tp = t[self.num_classes:self.num_classes + n].reshape(out.tp.shape).copy()
        out.fp = t[self.num_classes + n:].reshape(out.fp.shape).copy()
        return out

    def compute(self) -> dict:
        ap = np.full((self.num_classes, len(IOU_THRESHOLDS)), np.nan)
        for k in range(self.num_classes):
            if self.gt[k] == 0:
                continue
            for t in range(len(IOU_THRESHOLDS)):
                tp, fp = self.tp[k, t, ::-1], self.fp[k, t, ::-1]  # highest scores first
                used = (tp + fp) > 0
                ap[k, t] = average_precision(np.cumsum(tp)[used], np.cumsum(fp)[used], int(self.gt[k]))
        return _summary(ap)
