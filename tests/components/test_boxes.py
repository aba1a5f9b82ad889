"""Box ops (components.models.boxes) against NumPy transcriptions of torchvision's CPU kernels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.models.boxes import batched_nms, box_iou, nms, roi_align, roi_pool

# --------------------------------------------------------------------------- NumPy references


def np_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = max(p[2] - p[0], 0) * max(p[3] - p[1], 0) + max(q[2] - q[0], 0) * max(q[3] - q[1], 0) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def np_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
    keep, dead = [], set()
    for i in order:
        if i in dead:
            continue
        keep.append(i)
        for j in order:
            if j not in dead and j != i and np_iou(boxes[[i]], boxes[[j]])[0, 0] > thr:
                dead.add(j)
    return keep


def _bilinear(fm: np.ndarray, y: float, x: float) -> float:
    """torchvision's roi_align bilinear_interpolate, for one (H, W) map."""
    h, w = fm.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= h - 1:
        yh = yl = h - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= w - 1:
        xh = xl = w - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * fm[yl, xl] + hy * lx * fm[yl, xh] + ly * hx * fm[yh, xl] + ly * lx * fm[yh, xh]


def np_roi_align(fm: np.ndarray, rois: np.ndarray, ph: int, pw: int, scale: float, ratio: int,
                 aligned: bool) -> np.ndarray:
    out = np.zeros((len(rois), fm.shape[1], ph, pw))
    off = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        sx, sy = x1 * scale - off, y1 * scale - off
        rw, rh = x2 * scale - off - sx, y2 * scale - off - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = ratio if ratio > 0 else math.ceil(rh / ph)
        gw = ratio if ratio > 0 else math.ceil(rw / pw)
        count = max(gh * gw, 1)
        for c in range(fm.shape[1]):
            for i in range(ph):
                for j in range(pw):
                    total = 0.0
                    for iy in range(gh):
                        y = sy + i * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = sx + j * bw + (ix + 0.5) * bw / gw
                            total += _bilinear(fm[int(b), c], y, x)
                    out[k, c, i, j] = total / count
    return out


def np_roi_pool(fm: np.ndarray, rois: np.ndarray, ph: int, pw: int, scale: float) -> np.ndarray:
    def c_round(v: float) -> int:
        return int(math.copysign(math.floor(abs(v) + 0.5), v))

    h, w = fm.shape[2:]
    out = np.zeros((len(rois), fm.shape[1], ph, pw))
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        sw, sh, ew, eh = c_round(x1 * scale), c_round(y1 * scale), c_round(x2 * scale), c_round(y2 * scale)
        rw, rh = max(ew - sw + 1, 1), max(eh - sh + 1, 1)
        bh, bw = rh / ph, rw / pw
        for i in range(ph):
            hs = min(max(math.floor(i * bh) + sh, 0), h)
            he = min(max(math.ceil((i + 1) * bh) + sh, 0), h)
            for j in range(pw):
                ws = min(max(math.floor(j * bw) + sw, 0), w)
                we = min(max(math.ceil((j + 1) * bw) + sw, 0), w)
                if he <= hs or we <= ws:
                    continue
                out[k, :, i, j] = fm[int(b), :, hs:he, ws:we].max(axis=(1, 2))
    return out


def random_boxes(rng: np.random.Generator, n: int, size: float = 40.0) -> np.ndarray:
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(0, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


# --------------------------------------------------------------------------- tests


def test_box_iou_matches_numpy_with_degenerate_boxes():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    a[0] = [3, 3, 3, 9]  # zero width
    b[1] = [5, 5, 5, 5]  # a point
    b[2] = a[3]  # identical: IoU 1
    got = box_iou(torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(got, np_iou(a, b), atol=1e-12)
    assert got[3, 2] == pytest.approx(1.0)
    assert got[0].max() == 0.0 and got[:, 1].max() == 0.0
    assert box_iou(torch.tensor(a[[0]]), torch.tensor(a[[0]])).item() == 0.0  # not 0/0


def test_box_iou_empty_inputs():
    assert box_iou(torch.zeros(0, 4), torch.zeros(3, 4)).shape == (0, 3)
    assert box_iou(torch.zeros(2, 4), torch.zeros(0, 4)).shape == (2, 0)


@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7])
def test_nms_matches_numpy(thr):
    rng = np.random.default_rng(int(thr * 10))
    boxes = random_boxes(rng, 60, size=30)
    boxes[5] = [4, 4, 4, 10]  # degenerate: never suppresses nor is suppressed (IoU 0)
    scores = rng.uniform(size=60)
    scores[7] = scores[8]  # a tie keeps input order
    got = nms(torch.tensor(boxes), torch.tensor(scores), thr).tolist()
    assert got == np_nms(boxes, scores, thr)
    assert 5 in got


def test_nms_empty_and_single():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    assert nms(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([0.3]), 0.5).tolist() == [0]


def test_batched_nms_is_nms_within_each_class():
    rng = np.random.default_rng(1)
    boxes, scores = random_boxes(rng, 40, size=20), rng.uniform(size=40)
    labels = rng.integers(0, 3, 40)
    got = batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(labels), 0.5).tolist()
    expected = []
    for c in range(3):
        idx = np.flatnonzero(labels == c)
        expected += [int(idx[i]) for i in np_nms(boxes[idx], scores[idx], 0.5)]
    assert got == sorted(expected, key=lambda i: -scores[i])
    # the same box in two classes survives twice
    two = batched_nms(torch.tensor([[0.0, 0, 5, 5]] * 2), torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5)
    assert two.tolist() == [0, 1]
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).tolist() == []


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [-1, 0, 2])
def test_roi_align_matches_numpy(aligned, ratio):
    rng = np.random.default_rng(2)
    fm = rng.normal(size=(2, 3, 9, 11))
    rois = np.array([[0, 1.0, 2.0, 30.0, 20.0],
                     [1, -6.0, -5.0, 10.0, 9.0],  # partly outside the map
                     [0, 12.0, 12.0, 12.0, 12.0],  # zero area
                     [1, 38.0, 30.0, 60.0, 50.0],  # mostly beyond the far edge
                     [0, 3.3, 7.7, 17.1, 25.9]])
    got = roi_align(torch.tensor(fm), torch.tensor(rois), (3, 4), spatial_scale=0.25, sampling_ratio=ratio,
                    aligned=aligned).numpy()
    np.testing.assert_allclose(got, np_roi_align(fm, rois, 3, 4, 0.25, ratio, aligned), atol=1e-10)


def test_roi_align_empty_and_list_form():
    fm = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    assert roi_align(fm, torch.zeros(0, 5, dtype=torch.float64), 2).shape == (0, 2, 2, 2)
    box = torch.tensor([[1.0, 1.0, 4.0, 5.0]], dtype=torch.float64)
    a = roi_align(fm, [box], 2, sampling_ratio=2)
    b = roi_align(fm, torch.cat([torch.zeros(1, 1, dtype=torch.float64), box], 1), 2, sampling_ratio=2)
    assert torch.equal(a, b)


def test_roi_align_has_gradients():
    fm = torch.randn(1, 2, 8, 8, requires_grad=True)
    roi_align(fm, torch.tensor([[0.0, 1, 1, 6, 6]]), 2, sampling_ratio=2, aligned=True).sum().backward()
    assert fm.grad is not None and fm.grad.abs().sum() > 0


def test_roi_pool_matches_numpy():
    rng = np.random.default_rng(3)
    fm = rng.normal(size=(2, 3, 10, 12))
    rois = np.array([[0, 0.0, 0.0, 44.0, 36.0], [1, 5.0, 6.0, 21.0, 13.0], [1, -8.0, -8.0, 4.0, 4.0],
                     [0, 10.0, 10.0, 10.0, 10.0],  # zero area: a single cell
                     [0, 60.0, 50.0, 90.0, 80.0]])  # beyond the map: empty bins are 0
    got = roi_pool(torch.tensor(fm), torch.tensor(rois), (2, 3), spatial_scale=0.25).numpy()
    np.testing.assert_allclose(got, np_roi_pool(fm, rois, 2, 3, 0.25), atol=1e-12)
    assert np.all(got[4] == 0)
    assert roi_pool(torch.tensor(fm), torch.zeros(0, 5, dtype=torch.float64), 2).shape == (0, 3, 2, 2)
