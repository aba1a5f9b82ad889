"""Box operations in plain torch: IoU, NMS, RoIAlign and RoIPool with torchvision's semantics.

torchvision's PyPI wheel does not load beside the CPU-only torch here (``torchvision::nms does not
exist``), so the few ops detection needs are written out; tests/components/test_boxes.py checks each
against a NumPy transcription of torchvision's C++ kernels::

    from components.models.boxes import box_iou, nms, batched_nms, roi_align, roi_pool
    iou = box_iou(a, b)                                   # (N, 4) x (M, 4) → (N, M)
    keep = batched_nms(boxes, scores, labels, 0.5)        # per-class NMS, indices by score
    rois = torch.tensor([[0, 4.0, 4.0, 20.0, 20.0]])      # (K, 5): batch index, x1, y1, x2, y2
    crops = roi_align(features, rois, (7, 7), spatial_scale=0.25, sampling_ratio=2, aligned=True)

Boxes are ``x1, y1, x2, y2`` in pixels (x2 > x1 for a box of positive area; a zero-area box has IoU 0
with everything, itself included).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """Areas of (N, 4) boxes; an inverted box counts as 0."""
    return (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of every pair: (N, 4) x (M, 4) → (N, M); 0 where the union is empty."""
    if a.numel() == 0 or b.numel() == 0:
        return a.new_zeros((a.shape[0], b.shape[0]))
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    # A zero-area pair has union 0: IoU 0 rather than 0/0.
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(inter))


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first. A box is dropped
    when its IoU with a kept, higher-scoring box exceeds ``iou_threshold`` (torchvision's rule)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    # The loop is over kept boxes only, each step one vectorised row: fine for the hundreds of boxes a
    # detector proposes per image.
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each value of ``idxs`` (a class, or an image): boxes of different groups never
    suppress each other. Indices of the kept boxes, highest score first."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    # Shift each group's boxes apart by more than the largest coordinate (torchvision's trick), so
    # one NMS does every group: boxes of two groups then never overlap.
    offset = idxs.to(boxes) * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset[:, None], scores, iou_threshold)


def _rois(rois: Tensor | list[Tensor]) -> Tensor:
    """(K, 5) rows of (batch index, x1, y1, x2, y2); a list of per-image (K_i, 4) boxes is accepted."""
    if isinstance(rois, (list, tuple)):
        parts = [torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype, device=b.device), b], 1)
                 for i, b in enumerate(rois)]
        return torch.cat(parts) if parts else torch.zeros(0, 5)
    return rois


def roi_align(features: Tensor, rois: Tensor | list[Tensor], output_size: int | tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """RoIAlign (Mask R-CNN) as torchvision computes it: each output bin averages ``sampling_ratio``²
    bilinear samples (adaptive, ceil(roi size / bins), when ``sampling_ratio`` <= 0); ``aligned``
    shifts boxes by half a pixel so pixel centres line up. (N, C, H, W) features, (K, 5) rois →
    (K, C, PH, PW). Bilinear samples come from ``F.grid_sample`` on coordinates clamped to the map,
    and samples further than one pixel outside it count as 0, as in torchvision's kernel."""
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    rois = _rois(rois).to(features.dtype)
    k, (_, c, h, w) = len(rois), features.shape
    out = features.new_zeros((k, c, ph, pw))
    if k == 0:
        return out
    offset = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * spatial_scale - offset, rois[:, 2] * spatial_scale - offset
    rw, rh = rois[:, 3] * spatial_scale - offset - x1, rois[:, 4] * spatial_scale - offset - y1
    if not aligned:  # legacy: force malformed boxes to 1x1
        rw, rh = rw.clamp_min(1.0), rh.clamp_min(1.0)
    bw, bh = rw / pw, rh / ph
    if sampling_ratio > 0:
        gh = gw = torch.full((k,), sampling_ratio, dtype=torch.int64)
    else:
        # a zero-area box gets no samples and stays 0, as in torchvision
        gh, gw = torch.ceil(rh / ph).long().clamp_min(0).cpu(), torch.ceil(rw / pw).long().clamp_min(0).cpu()
    # One grid_sample per distinct sample count (adaptive sampling differs from box to box).
    for sh, sw in sorted({(int(a), int(b)) for a, b in zip(gh.tolist(), gw.tolist()) if a and b}):
        sel = torch.nonzero((gh == sh) & (gw == sw)).flatten().to(features.device)
        iy = (torch.arange(ph * sh, device=features.device, dtype=features.dtype) + 0.5) / sh  # bin units
        ix = (torch.arange(pw * sw, device=features.device, dtype=features.dtype) + 0.5) / sw
        ys = y1[sel, None] + iy[None] * bh[sel, None]  # (k', PH*sh)
        xs = x1[sel, None] + ix[None] * bw[sel, None]
        valid = ((ys >= -1) & (ys <= h))[:, :, None] & ((xs >= -1) & (xs <= w))[:, None, :]
        ys, xs = ys.clamp(0, h - 1), xs.clamp(0, w - 1)
        grid = torch.stack(torch.broadcast_tensors((2 * xs / max(w - 1, 1) - 1)[:, None, :],
                                                   (2 * ys / max(h - 1, 1) - 1)[:, :, None]), -1)
        images = features[rois[sel, 0].long()]
        samples = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
        samples = samples * valid[:, None].to(samples.dtype)
        out[sel] = F.avg_pool2d(samples, (sh, sw), (sh, sw))
    return out


def roi_pool(features: Tensor, rois: Tensor | list[Tensor], output_size: int | tuple[int, int],
             spatial_scale: float = 1.0) -> Tensor:
    """RoIPool (Fast R-CNN) as torchvision computes it: boxes rounded to the feature grid, each bin the
    max over its cells (0 for an empty bin). (N, C, H, W), (K, 5) → (K, C, PH, PW)."""
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    rois = _rois(rois).to(features.dtype)
    k, (_, c, h, w) = len(rois), features.shape
    if k == 0:
        return features.new_zeros((0, c, ph, pw))

    def c_round(v: Tensor) -> Tensor:  # C's round(): halves away from zero
        return torch.sign(v) * torch.floor(v.abs() + 0.5)

    x1, y1 = c_round(rois[:, 1] * spatial_scale), c_round(rois[:, 2] * spatial_scale)
    x2, y2 = c_round(rois[:, 3] * spatial_scale), c_round(rois[:, 4] * spatial_scale)
    rw, rh = (x2 - x1 + 1).clamp_min(1), (y2 - y1 + 1).clamp_min(1)

    def bins(start: Tensor, size: Tensor, parts: int, limit: int) -> Tensor:
        """(K, parts, limit): which cells of the axis each bin covers."""
        p = torch.arange(parts, device=features.device, dtype=features.dtype)
        lo = (torch.floor(p[None] * (size / parts)[:, None]) + start[:, None]).clamp(0, limit)
        hi = (torch.ceil((p[None] + 1) * (size / parts)[:, None]) + start[:, None]).clamp(0, limit)
        cells = torch.arange(limit, device=features.device, dtype=features.dtype)
        return (cells[None, None] >= lo[..., None]) & (cells[None, None] < hi[..., None])

    my, mx = bins(y1, rh, ph, h), bins(x1, rw, pw, w)  # (K, PH, H), (K, PW, W)
    images = features[rois[:, 0].long()]  # (K, C, H, W)
    neg = torch.tensor(-math.inf, dtype=features.dtype, device=features.device)
    # max over x within each column bin, then over y within each row bin
    cols = torch.where(mx[:, None, None], images[:, :, :, None, :], neg).amax(-1)  # (K, C, H, PW)
    out = torch.where(my[:, None, :, :, None], cols[:, :, None], neg).amax(3)  # (K, C, PH, PW)
    return torch.where(torch.isfinite(out), out, torch.zeros_like(out))
