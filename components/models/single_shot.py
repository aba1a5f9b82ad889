"""The single-shot pieces of the detectors (components.models.detectors): the ResNet backbone with its
top-down neck, CenterNet and the single-object localiser, their losses and their decoding.

    net = CenterNet(in_channels=3, num_classes=3, depth=20, width=16)
    out = net(x)                                    # {"kind": "centernet", "heat", "size", "offset", ...}
    loss = centernet_loss(out, (boxes, labels))     # boxes (B, K, 4) pixels, labels (B, K), -1 padding
    found = decode_centernet(out, 0.0, 100)         # per image (boxes, scores, labels), before NMS

Losses and decoding are functions of the outputs alone (the outputs name their ``kind``), so the task
computes them without the model and DDP sees every parameter used in forward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.models.resnet import ResNet

Targets = tuple[Tensor, Tensor]  # boxes (B, K, 4) x1 y1 x2 y2 in pixels; labels (B, K), -1: no object


class Backbone(nn.Module):
    """A CIFAR ResNet without its pool and classifier, returning the stride-4 map of a top-down neck.

    ``stem`` and ``stages`` are named as in :class:`~components.models.resnet.ResNet`, so a classifier's
    state dict (minus ``fc``) loads as it is. The stem is strided (the classifier's was not: weights
    are the same shape, the detector just samples its output every other pixel)."""

    def __init__(self, in_channels: int, *, depth: int = 20, width: int = 16, batchnorm: bool = True,
                 neck: int = 64):
        super().__init__()
        res = ResNet(in_channels, 10, 32, depth=depth, width=width, batchnorm=batchnorm)
        self.stem, self.stages = res.stem, res.stages
        self.stem[0].stride = (2, 2)
        n = len(res.stages) // 3
        self.split = (n, 2 * n)  # the blocks that end stage 1 (stride 2) and stage 2 (stride 4)
        self.lateral = nn.Conv2d(2 * width, neck, 1)
        self.top = nn.Conv2d(4 * width, neck, 1)
        self.smooth = nn.Sequential(nn.Conv2d(neck, neck, 3, padding=1, bias=False), nn.BatchNorm2d(neck),
                                    nn.ReLU(inplace=True))
        self.out_channels = neck

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        c2 = self.stages[:self.split[1]](x)  # stride 4
        c3 = self.stages[self.split[1]:](c2)  # stride 8
        up = F.interpolate(self.top(c3), size=c2.shape[-2:], mode="nearest")
        return self.smooth(self.lateral(c2) + up)


def _head(channels: int, out: int, bias: float = 0.0) -> nn.Sequential:
    head = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels, out, 1))
    nn.init.constant_(head[-1].bias, bias)
    return head


# Prior probability of an object at a cell (focal-loss init, Lin et al. 2017): the heatmap starts near
# the background rate instead of 0.5, so the first steps are not swamped by easy negatives.
_PRIOR_BIAS = -2.19


class CenterNet(nn.Module):
    """Objects as points (Zhou et al. 2019): per class a heatmap of object centres, per cell the box size
    and the centre's sub-cell offset. No anchors, no proposals: one pass, peaks are detections."""

    kind = "centernet"

    def __init__(self, in_channels: int, num_classes: int, **backbone: Any):
        super().__init__()
        self.backbone = Backbone(in_channels, **backbone)
        c = self.backbone.out_channels
        self.heat, self.size, self.offset = _head(c, num_classes, _PRIOR_BIAS), _head(c, 2), _head(c, 2)

    def forward(self, x: Tensor, targets: Targets | None = None) -> dict[str, Any]:
        f = self.backbone(x)
        return {"kind": self.kind, "heat": self.heat(f), "size": self.size(f), "offset": self.offset(f),
                "image_size": torch.tensor(x.shape[-2:], device=x.device)}


class Localizer(nn.Module):
    """Classification plus localisation (§11): one object per image, a class from a softmax and its box
    (x1, y1, x2, y2 as fractions of the image) regressed from the same pooled feature."""

    kind = "localizer"

    def __init__(self, in_channels: int, num_classes: int, **backbone: Any):
        super().__init__()
        self.backbone = Backbone(in_channels, **backbone)
        c = self.backbone.out_channels
        self.cls, self.box = nn.Linear(c, num_classes), nn.Linear(c, 4)

    def forward(self, x: Tensor, targets: Targets | None = None) -> dict[str, Any]:
        pooled = self.backbone(x).mean((2, 3))
        return {"kind": self.kind, "logits": self.cls(pooled), "box": torch.sigmoid(self.box(pooled)),
                "image_size": torch.tensor(x.shape[-2:], device=x.device)}


# --------------------------------------------------------------------------- centre targets and losses


def centre_targets(boxes: Tensor, labels: Tensor, classes: int, shape: tuple[int, int], stride: tuple[float, float]):
    """Per image the class heatmaps (Gaussian bumps at object centres, 1 at the centre cell; sigma from
    the box size, TTFNet's alpha 0.54) and each object's centre cell, size and offset in cells."""
    h, w = shape
    sy, sx = stride
    valid = labels >= 0
    cx, cy = (boxes[..., 0] + boxes[..., 2]) / (2 * sx), (boxes[..., 1] + boxes[..., 3]) / (2 * sy)
    bw, bh = (boxes[..., 2] - boxes[..., 0]) / sx, (boxes[..., 3] - boxes[..., 1]) / sy
    ix, iy = cx.floor().clamp(0, w - 1), cy.floor().clamp(0, h - 1)
    gx = torch.arange(w, device=boxes.device, dtype=boxes.dtype)
    gy = torch.arange(h, device=boxes.device, dtype=boxes.dtype)
    sig_x, sig_y = (0.54 * bw / 6).clamp_min(0.25), (0.54 * bh / 6).clamp_min(0.25)
    bump = torch.exp(-((gx - ix[..., None]) ** 2 / (2 * sig_x[..., None] ** 2))[..., None, :]
                     - ((gy - iy[..., None]) ** 2 / (2 * sig_y[..., None] ** 2))[..., :, None])  # (B, K, H, W)
    onehot = F.one_hot(labels.clamp_min(0), classes).to(boxes.dtype) * valid[..., None]  # (B, K, C)
    heat = (onehot[..., None, None] * bump[:, :, None]).amax(1) if labels.shape[1] else \
        boxes.new_zeros((len(boxes), classes, h, w))
    return heat, valid, iy.long(), ix.long(), torch.stack([bw, bh], -1), torch.stack([cx - ix, cy - iy], -1)


def focal_loss(logits: Tensor, heat: Tensor) -> Tensor:
    """CenterNet's penalty-reduced focal loss over heatmap cells, per object (alpha 2, beta 4)."""
    p = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = heat >= 1.0 - 1e-6
    pos_loss = -(torch.log(p) * (1 - p) ** 2)[pos].sum()
    neg_loss = -(torch.log(1 - p) * p ** 2 * (1 - heat) ** 4)[~pos].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp_min(1)


def _stride(out: dict[str, Any], fmap: Tensor) -> tuple[float, float]:
    h, w = (int(v) for v in out["image_size"])
    return h / fmap.shape[-2], w / fmap.shape[-1]


def centernet_loss(out: dict[str, Any], targets: Targets, size_weight: float = 0.4) -> Tensor:
    boxes, labels = targets
    heat_logits = out["heat"]
    b, c, h, w = heat_logits.shape
    heat, valid, iy, ix, size, offset = centre_targets(boxes.float(), labels, c, (h, w), _stride(out, heat_logits))
    bi = torch.arange(b, device=boxes.device)[:, None].expand_as(iy)
    n = valid.sum().clamp_min(1)
    # sizes and offsets are learnt at the objects' centre cells only
    pred_size = out["size"].float()[bi, :, iy, ix]  # (B, K, 2)
    pred_off = out["offset"].float()[bi, :, iy, ix]
    size_l1 = ((pred_size - size).abs().sum(-1) * valid).sum() / n
    off_l1 = ((pred_off - offset).abs().sum(-1) * valid).sum() / n
    return focal_loss(heat_logits, heat) + size_weight * size_l1 + off_l1


def localizer_loss(out: dict[str, Any], targets: Targets, box_weight: float = 1.0) -> Tensor:
    """§11's multi-task loss: softmax cross-entropy on the class plus L2 on the box (as image fractions)
    of each image's first object."""
    boxes, labels = targets
    h, w = (float(v) for v in out["image_size"])
    scale = boxes.new_tensor([w, h, w, h])
    first = boxes[:, 0] / scale
    cls = F.cross_entropy(out["logits"].float(), labels[:, 0].clamp_min(0), reduction="none")
    l2 = ((out["box"].float() - first) ** 2).sum(-1)
    has = (labels[:, 0] >= 0).float()
    return ((cls + box_weight * l2) * has).sum() / has.sum().clamp_min(1)


# --------------------------------------------------------------------------- decoding


def decode_centernet(out: dict[str, Any], score_threshold: float, max_dets: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    heat = torch.sigmoid(out["heat"].float())
    b, c, h, w = heat.shape
    sy, sx = _stride(out, heat)
    # a peak is a cell that is the maximum of its 3x3 neighbourhood (CenterNet's cheap NMS)
    peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
    scores, idx = peaks.flatten(1).topk(min(max_dets, c * h * w))
    labels, cell = idx // (h * w), idx % (h * w)
    y, x = (cell // w).float(), (cell % w).float()
    size = out["size"].float().flatten(2).gather(2, cell[:, None].expand(-1, 2, -1))  # (B, 2, K)
    off = out["offset"].float().flatten(2).gather(2, cell[:, None].expand(-1, 2, -1))
    cx, cy = (x + off[:, 0]) * sx, (y + off[:, 1]) * sy
    bw, bh = size[:, 0].clamp_min(0) * sx, size[:, 1].clamp_min(0) * sy
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    return [(boxes[i], scores[i], labels[i]) for i in range(b)]


def decode_localizer(out: dict[str, Any], score_threshold: float, max_dets: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    h, w = (float(v) for v in out["image_size"])
    probs = out["logits"].float().softmax(-1)
    scores, labels = probs.max(-1)
    boxes = out["box"].float() * out["box"].new_tensor([w, h, w, h])
    return [(boxes[i:i + 1], scores[i:i + 1], labels[i:i + 1]) for i in range(len(boxes))]
