"""Detection mAP (components.detection_metrics): hand-computed cases, pycocotools itself, the summable form."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from components.detection_metrics import DetectionCounts, coco_map


def _det(boxes, scores, labels):
    return np.array(boxes, float).reshape(-1, 4), np.array(scores, float), np.array(labels, int)


def _gt(boxes, labels):
    return np.array(boxes, float).reshape(-1, 4), np.array(labels, int)


def test_a_perfect_detection_scores_one():
    r = coco_map([_det([[2, 2, 12, 12]], [0.9], [0])], [_gt([[2, 2, 12, 12]], [0])], num_classes=1)
    assert r["map"] == pytest.approx(1.0) and r["map50"] == pytest.approx(1.0)


def test_a_false_positive_ranked_first_halves_precision():
    # FP at 0.9, then TP at 0.8: precision 1/2 at recall 1, made flat back to recall 0 → AP 0.5
    dets = _det([[30, 30, 40, 40], [2, 2, 12, 12]], [0.9, 0.8], [0, 0])
    r = coco_map([dets], [_gt([[2, 2, 12, 12]], [0])], num_classes=1)
    assert r["map50"] == pytest.approx(0.5) and r["map"] == pytest.approx(0.5)


def test_a_missed_object_caps_recall():
    # one of two objects found: precision 1 up to recall 0.5 → 51 of the 101 recall points
    r = coco_map([_det([[2, 2, 12, 12]], [0.9], [0])], [_gt([[2, 2, 12, 12], [20, 20, 30, 30]], [0, 0])], 1)
    assert r["map50"] == pytest.approx(51 / 101)


def test_localisation_quality_counts_across_thresholds():
    # a 10x10 box shifted by 1.5 px in x: IoU = 8.5*10 / (200 - 85) = 0.739 → TP at 0.50 .. 0.70 (5 of 10)
    r = coco_map([_det([[3.5, 2, 13.5, 12]], [0.7], [0])], [_gt([[2, 2, 12, 12]], [0])], 1)
    assert r["map50"] == pytest.approx(1.0)
    assert r["map"] == pytest.approx(0.5)
    assert r["map75"] == pytest.approx(0.0)


def test_wrong_class_and_classes_without_ground_truth():
    # class 1 has no ground truth: its AP is NaN and it stays out of the mean; the class-1 detection of
    # the class-0 object does not match it
    dets = _det([[2, 2, 12, 12], [2, 2, 12, 12]], [0.9, 0.95], [0, 1])
    r = coco_map([dets], [_gt([[2, 2, 12, 12]], [0])], num_classes=2)
    assert r["map"] == pytest.approx(1.0)
    assert np.isnan(r["per_class_ap"][1]) and r["per_class_ap"][0] == pytest.approx(1.0)
    # no detection at all for a class that has ground truth: AP 0
    r = coco_map([_det([], [], [])], [_gt([[2, 2, 12, 12]], [0])], num_classes=1)
    assert r["map"] == 0.0


def test_duplicates_are_false_positives():
    # two detections of one object: the second is a FP; precision 1 at recall 1 already reached → AP 1
    dets = _det([[2, 2, 12, 12], [2, 2, 12, 12.5]], [0.9, 0.8], [0, 0])
    assert coco_map([dets], [_gt([[2, 2, 12, 12]], [0])], 1)["map50"] == pytest.approx(1.0)
    # the duplicate ranked above the second object's detection costs precision at recall 1: 2/3
    dets = _det([[2, 2, 12, 12], [2, 2, 12, 12.5], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])
    r = coco_map([dets], [_gt([[2, 2, 12, 12], [20, 20, 30, 30]], [0, 0])], 1)
    assert r["map50"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def _random_scene(rng, num_classes):
    n = rng.integers(0, 5)
    xy = rng.uniform(0, 50, (n, 2))
    gt = np.concatenate([xy, xy + rng.uniform(4, 20, (n, 2))], 1)
    labels = rng.integers(0, num_classes, n)
    # detections: jittered copies of the objects (some with the wrong class) and clutter
    jitter = gt + rng.normal(0, 2.5, gt.shape)
    jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 1)
    clutter_xy = rng.uniform(0, 50, (rng.integers(0, 4), 2))
    clutter = np.concatenate([clutter_xy, clutter_xy + rng.uniform(4, 20, clutter_xy.shape)], 1)
    boxes = np.concatenate([jitter, clutter])
    det_labels = np.concatenate([np.where(rng.uniform(size=n) < 0.8, labels, rng.integers(0, num_classes, n)),
                                 rng.integers(0, num_classes, len(clutter))])
    return (boxes, rng.uniform(size=len(boxes)), det_labels), (gt, labels)


def _pycocotools(dets, gts, num_classes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, ((boxes, scores, labels), (gb, gl)) in enumerate(zip(dets, gts), start=1):
        images.append({"id": i, "width": 80, "height": 80})
        for b, c in zip(gb, gl):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1,
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        for b, s, c in zip(boxes, scores, labels):
            results.append({"image_id": i, "category_id": int(c) + 1, "score": float(s),
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0], ev.stats[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_map_equals_pycocotools(seed):
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(seed)
    scenes = [_random_scene(rng, 3) for _ in range(40)]
    dets, gts = [s[0] for s in scenes], [s[1] for s in scenes]
    ours = coco_map(dets, gts, num_classes=3)
    theirs_map, theirs_map50 = _pycocotools(dets, gts, 3)
    assert ours["map"] == pytest.approx(theirs_map, abs=1e-9)
    assert ours["map50"] == pytest.approx(theirs_map50, abs=1e-9)


def test_summable_counts_agree_with_exact_and_add_across_ranks():
    rng = np.random.default_rng(7)
    scenes = [_random_scene(rng, 3) for _ in range(60)]
    exact = coco_map([s[0] for s in scenes], [s[1] for s in scenes], 3)
    ranks = [DetectionCounts(3), DetectionCounts(3)]
    for i, (d, g) in enumerate(scenes):  # two "ranks" see alternate images
        ranks[i % 2].add_image(*d, *g)
    summed = DetectionCounts(3).with_totals(np.add(ranks[0].totals(), ranks[1].totals()))
    got = summed.compute()
    assert got["map"] == pytest.approx(exact["map"], abs=3e-3)
    assert got["map50"] == pytest.approx(exact["map50"], abs=3e-3)
    assert summed.gt.sum() == sum(len(g[1]) for _, g in scenes)
    assert np.isnan(DetectionCounts(2).compute()["map"])  # nothing seen: not measured
