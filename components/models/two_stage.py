"""A small two-stage detector, the R-CNN line of §11: region proposals → RoIAlign → a box head.

    net = TwoStage(in_channels=3, num_classes=3)
    out = net(x, (boxes, labels))   # training: proposals plus the ground-truth boxes, sampled
    out = net(x)                    # evaluation: the top proposals of each image
    two_stage_loss(out, (boxes, labels)); decode_two_stage(out, 0.3, 100)

Stage one is a class-agnostic region proposal network on the shared stride-4 feature map, anchor-free
(an objectness heatmap of centres, a size and an offset per cell, as components.models.detectors'
CenterNet, with one class); its top peaks after NMS are the proposals, as Faster R-CNN's RPN. Stage two
pools each proposal to 7x7 with RoIAlign (components.models.boxes, in plain torch) and classifies it
(the classes plus background) with two fully connected layers, refining its box with Fast R-CNN's
deltas. In training each image's ground-truth boxes join its proposals and up to ``rois_per_image`` are
sampled, a quarter foreground (IoU >= 0.5) where there are enough (Fast R-CNN's recipe).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.models.boxes import box_iou, nms, roi_align
from components.models.single_shot import (
    _PRIOR_BIAS,
    Backbone,
    Targets,
    _head,
    centernet_loss,
    decode_centernet,
)

# Fast R-CNN's box-delta weights: deltas of a well-placed box are small numbers, these bring them to ~1.
_DELTA_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_FOREGROUND_IOU = 0.5


def encode_deltas(rois: Tensor, boxes: Tensor) -> Tensor:
    wx, wy, ww, wh = _DELTA_WEIGHTS
    pw, ph = (rois[:, 2] - rois[:, 0]).clamp_min(1e-3), (rois[:, 3] - rois[:, 1]).clamp_min(1e-3)
    px, py = rois[:, 0] + pw / 2, rois[:, 1] + ph / 2
    gw, gh = (boxes[:, 2] - boxes[:, 0]).clamp_min(1e-3), (boxes[:, 3] - boxes[:, 1]).clamp_min(1e-3)
    gx, gy = boxes[:, 0] + gw / 2, boxes[:, 1] + gh / 2
    return torch.stack([wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)], 1)


def apply_deltas(rois: Tensor, deltas: Tensor) -> Tensor:
    wx, wy, ww, wh = _DELTA_WEIGHTS
    pw, ph = (rois[:, 2] - rois[:, 0]).clamp_min(1e-3), (rois[:, 3] - rois[:, 1]).clamp_min(1e-3)
    px, py = rois[:, 0] + pw / 2, rois[:, 1] + ph / 2
    dw, dh = (deltas[:, 2] / ww).clamp(max=4.0), (deltas[:, 3] / wh).clamp(max=4.0)  # no exp overflow
    cx, cy, w, h = px + deltas[:, 0] / wx * pw, py + deltas[:, 1] / wy * ph, pw * dw.exp(), ph * dh.exp()
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


class TwoStage(nn.Module):
    kind = "two_stage"

    def __init__(self, in_channels: int, num_classes: int, *, proposals: int = 32, rois_per_image: int = 32,
                 pool: int = 7, hidden: int = 256, **backbone: Any):
        super().__init__()
        self.backbone = Backbone(in_channels, **backbone)
        c = self.backbone.out_channels
        self.num_classes, self.proposals, self.rois_per_image, self.pool = num_classes, proposals, rois_per_image, pool
        self.rpn_heat, self.rpn_size, self.rpn_offset = _head(c, 1, _PRIOR_BIAS), _head(c, 2), _head(c, 2)
        self.box_head = nn.Sequential(nn.Flatten(), nn.Linear(c * pool * pool, hidden), nn.ReLU(inplace=True),
                                      nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.cls = nn.Linear(hidden, num_classes + 1)  # index num_classes: background
        self.deltas = nn.Linear(hidden, 4)  # class-agnostic refinement
        nn.init.normal_(self.deltas.weight, std=0.001)
        nn.init.zeros_(self.deltas.bias)

    def forward(self, x: Tensor, targets: Targets | None = None) -> dict[str, Any]:
        f = self.backbone(x)
        size = torch.tensor(x.shape[-2:], device=x.device)
        rpn = {"kind": "centernet", "heat": self.rpn_heat(f), "size": self.rpn_size(f),
               "offset": self.rpn_offset(f), "image_size": size}
        with torch.no_grad():  # proposals are inputs to stage two, not something it backpropagates into
            found = decode_centernet({k: v.detach() if isinstance(v, Tensor) else v for k, v in rpn.items()},
                                     0.0, 4 * self.proposals)
            rois = []
            for i, (boxes, scores, _) in enumerate(found):
                h, w = (float(v) for v in size)
                boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w),
                                     boxes[:, 3].clamp(0, h)], -1)
                keep = nms(boxes, scores, 0.7)[:self.proposals]
                boxes = boxes[keep]
                if targets is not None:
                    boxes = self._sample(boxes, targets[0][i][targets[1][i] >= 0].to(boxes))
                rois.append(torch.cat([torch.full((len(boxes), 1), float(i), device=x.device), boxes], 1))
            rois = torch.cat(rois) if rois else x.new_zeros((0, 5))
        pooled = roi_align(f, rois, self.pool, spatial_scale=f.shape[-1] / x.shape[-1], sampling_ratio=2,
                           aligned=True)
        hidden = self.box_head(pooled)
        return {"kind": self.kind, "rpn": rpn, "rois": rois, "cls": self.cls(hidden), "deltas": self.deltas(hidden),
                "image_size": size}

    def _sample(self, proposals: Tensor, gt: Tensor) -> Tensor:
        """Proposals plus the ground truth, at most ``rois_per_image``: up to a quarter foreground, the
        rest background, each drawn at random (torch's global generator, seeded per worker)."""
        boxes = torch.cat([proposals, gt])
        if len(gt) == 0:
            return boxes[:self.rois_per_image]
        best = box_iou(boxes, gt).amax(1)
        fg, bg = torch.nonzero(best >= _FOREGROUND_IOU).flatten(), torch.nonzero(best < _FOREGROUND_IOU).flatten()
        n_fg = min(len(fg), max(self.rois_per_image // 4, len(gt)))
        fg = fg[torch.randperm(len(fg), device=fg.device)[:n_fg]]
        bg = bg[torch.randperm(len(bg), device=bg.device)[:self.rois_per_image - n_fg]]
        return boxes[torch.cat([fg, bg])]


def _assign(rois: Tensor, targets: Targets, num_classes: int) -> tuple[Tensor, Tensor]:
    """Each RoI's class (``num_classes``: background) and the ground-truth box it overlaps most."""
    gt_boxes, gt_labels = targets
    cls = torch.full((len(rois),), num_classes, dtype=torch.int64, device=rois.device)
    matched = rois[:, 1:].clone()
    for i in range(len(gt_boxes)):
        mine = torch.nonzero(rois[:, 0] == i).flatten()
        real = gt_labels[i] >= 0
        if len(mine) == 0 or not real.any():
            continue
        iou = box_iou(rois[mine, 1:], gt_boxes[i][real].to(rois))
        best, which = iou.max(1)
        fg = best >= _FOREGROUND_IOU
        cls[mine[fg]] = gt_labels[i][real][which[fg]]
        matched[mine] = gt_boxes[i][real].to(rois)[which]
    return cls, matched


def two_stage_loss(out: dict[str, Any], targets: Targets) -> Tensor:
    """RPN loss (centre heatmap of any object, sizes, offsets) + the box head's cross-entropy over the
    classes and background + smooth L1 on the foreground RoIs' deltas."""
    boxes, labels = targets
    rpn = centernet_loss(out["rpn"], (boxes, torch.where(labels >= 0, 0, -1)))
    rois = out["rois"]
    if len(rois) == 0:
        return rpn + 0.0 * out["cls"].sum()
    num_classes = out["cls"].shape[1] - 1
    cls, matched = _assign(rois, targets, num_classes)
    ce = F.cross_entropy(out["cls"].float(), cls)
    fg = cls < num_classes
    reg = F.smooth_l1_loss(out["deltas"].float()[fg], encode_deltas(rois[fg, 1:], matched[fg]), beta=1 / 9,
                           reduction="sum") / max(len(rois), 1)
    return rpn + ce + reg


def decode_two_stage(out: dict[str, Any], score_threshold: float, max_dets: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Each RoI's best class other than background, its refined box and that class's probability."""
    rois = out["rois"]
    probs = out["cls"].float().softmax(-1)[:, :-1]
    scores, labels = probs.max(1) if probs.shape[1] else (probs.new_zeros(len(rois)), rois.new_zeros(len(rois)).long())
    boxes = apply_deltas(rois[:, 1:], out["deltas"].float())
    batch = int(out["rpn"]["heat"].shape[0])
    result = []
    for i in range(batch):
        mine = rois[:, 0] == i
        result.append((boxes[mine], scores[mine], labels[mine]))
    return result
