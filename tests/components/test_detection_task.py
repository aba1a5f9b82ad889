"""The detection task and its detectors (components.tasks.detection, components.models.detectors, two_stage)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.augment import Augment
from components.models import Normalize
from components.models.detectors import (
    DETECTORS,
    build_detector,
    centre_targets,
    decode,
)
from components.models.resnet import ResNet
from components.package_base import ModelSpec, load_state_dict_package, save_package
from components.tasks import build_task
from components.tasks.detection import DetectionPrep, DetectionStats
from components.transfer import backbone_state


@pytest.fixture(autouse=True)
def one_thread():
    """These nets are tiny: one intra-op thread is fastest, and on a busy machine a second one spends its
    time spinning at OpenMP barriers (50x slower per step here under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _scene(n: int = 4, size: int = 32):
    """Images with one white rectangle each (and a -1 padding row): rows as Ray Data gives them."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, size, size, 3), np.uint8)
    boxes = np.zeros((n, 2, 4), np.float32)
    labels = np.full((n, 2), -1, np.int64)
    for i in range(n):
        x1, y1 = rng.integers(0, size // 2, 2)
        w, h = rng.integers(6, size // 2, 2)
        images[i, y1:y1 + h, x1:x1 + w] = 255
        boxes[i, 0] = [x1, y1, x1 + w, y1 + h]
        labels[i, 0] = i % 2
    return {"image": images, "boxes": boxes, "box_labels": labels, "idx": np.arange(n)}


def test_flipped_boxes_are_the_boxes_of_the_flipped_images():
    rows = _scene(8)
    x, (boxes, labels) = DetectionPrep(Augment(flip=True), seed=3)(rows)
    flipped = (x[:, 0] > 0.5).numpy()  # the rectangle's pixels after the augmentation
    moved = 0
    for i in range(len(x)):
        ys, xs = np.nonzero(flipped[i])
        assert boxes[i, 0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert boxes[i, 1].tolist() == [0, 0, 0, 0] and labels[i, 1] == -1  # padding stays padding
        moved += boxes[i, 0, 0].item() != rows["boxes"][i, 0, 0]
    assert 0 < moved < len(x)  # some flipped, some not
    assert torch.equal(boxes[:, 0, [1, 3]], torch.from_numpy(rows["boxes"][:, 0, [1, 3]]))  # y never changes


def test_centre_targets_peak_at_the_centre_cell_with_the_box_size():
    boxes = torch.tensor([[[8.0, 4.0, 24.0, 12.0], [0, 0, 0, 0]]])
    labels = torch.tensor([[1, -1]])
    heat, valid, iy, ix, size, offset = centre_targets(boxes, labels, 3, (8, 8), (4.0, 4.0))
    assert valid.tolist() == [[True, False]]
    assert (iy[0, 0].item(), ix[0, 0].item()) == (2, 4)  # centre (16, 8) px → cell (2, 4) at stride 4
    assert heat[0, 1, 2, 4] == 1.0 and heat[0, 1].max() == 1.0 and heat[0, [0, 2]].max() == 0.0
    assert size[0, 0].tolist() == [4.0, 2.0] and offset[0, 0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("name", DETECTORS)
def test_every_detector_trains_every_parameter_and_decodes_boxes_inside_the_image(name):
    torch.manual_seed(0)
    rows = _scene(4)
    task = build_task("detection", num_classes=2)
    x, targets = task.batch_prep()(rows)
    model = ModelSpec(name=name, in_channels=3, num_classes=2, image_size=32, classes=("a", "b"), width=8,
                      depth=8, task="detection").build(Normalize.identity(3))
    model.train()
    outputs, loss = task.forward(model, x, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    with torch.no_grad():
        out, found = task.infer(model, x)
        assert torch.isfinite(task.eval_loss((out, found), targets))
    for boxes, scores, labels in decode(out, score_threshold=0.0):
        assert len(boxes) <= 100 and (boxes >= 0).all() and (boxes <= 32).all()
        assert (scores[:-1] >= scores[1:]).all() and set(labels.tolist()) <= {0, 1}


@pytest.mark.parametrize("name", ["centernet", "two_stage"])
def test_a_detector_overfits_a_few_scenes(name):
    """Learning, not just running: after a short fit on four scenes each object is found (IoU > 0.5, right class)."""
    from components.detection_metrics import coco_map

    torch.manual_seed(0)
    rows = _scene(4)
    task = build_task("detection", num_classes=2)
    x, targets = task.batch_prep()(rows)
    model = ModelSpec(name=name, in_channels=3, num_classes=2, image_size=32, classes=("a", "b"), width=8,
                      depth=8, task="detection").build(Normalize.identity(3))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        _, loss = task.forward(model, x, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    found = model.detect_uint8(rows["image"], score_threshold=0.05)
    truth = [(b[c >= 0], c[c >= 0]) for b, c in zip(rows["boxes"], rows["box_labels"])]
    result = coco_map([tuple(t.numpy() for t in f) for f in found], truth, 2)
    assert result["map50"] > 0.9, result


def test_the_localizer_learns_one_box_with_the_l2_loss():
    torch.manual_seed(0)
    rows = _scene(4)
    task = build_task("detection", num_classes=2)
    x, targets = task.batch_prep()(rows)
    model = ModelSpec(name="localizer", in_channels=3, num_classes=2, image_size=32, classes=("a", "b"), width=8,
                      depth=8, task="detection").build(Normalize.identity(3))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        _, loss = task.forward(model, x, targets)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.2 * first
    found = model.detect_uint8(rows["image"], score_threshold=0.0)
    assert all(len(b) == 1 for b, _, _ in found)  # one object per image


def test_the_meter_sums_across_ranks_and_measures_map_only_when_decoding():
    rows = _scene(4)
    _, (boxes, labels) = DetectionPrep()(rows)
    training = DetectionStats(2)
    training.add({"kind": "centernet"}, (boxes, labels), 2.0)
    assert np.isnan(training.compute()["map50"]) and training.compute()["loss"] == 2.0
    perfect = [(boxes[i][labels[i] >= 0], torch.ones(int((labels[i] >= 0).sum())), labels[i][labels[i] >= 0])
               for i in range(4)]
    a, b = DetectionStats(2), DetectionStats(2)
    a.add(({}, perfect[:2]), (boxes[:2], labels[:2]), 1.0)
    b.add(({}, perfect[2:]), (boxes[2:], labels[2:]), 3.0)
    summed = DetectionStats(2).with_totals(np.add(a.totals(), b.totals()))
    assert summed.compute() == {"loss": 2.0, "map50": 1.0, "map": 1.0}


def test_served_form_is_one_dict_per_image_in_pixels():
    torch.manual_seed(0)
    model = ModelSpec(name="centernet", in_channels=3, num_classes=2, image_size=32, classes=("a", "b"), width=8,
                      depth=8, task="detection").build(Normalize.identity(3))
    task = build_task("detection", num_classes=2)
    out = task.predict(model, _scene(3)["image"], {"score_threshold": 0.0, "max_detections": 5})
    assert len(out) == 3
    for image in out:
        assert set(image) == {"boxes", "labels", "scores"}
        assert len(image["boxes"]) == len(image["labels"]) == len(image["scores"]) <= 5
        assert all(len(b) == 4 for b in image["boxes"])
    none = task.predict(model, _scene(1)["image"], {"score_threshold": 0.999})
    assert none == [{"boxes": [], "labels": [], "scores": []}]


def test_a_detector_package_round_trips(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec(name="two_stage", in_channels=3, num_classes=2, image_size=32, classes=("a", "b"), width=8,
                     depth=8, task="detection")
    model = spec.build(Normalize(torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.2, 0.2])))
    save_package(tmp_path, model, spec)
    loaded, loaded_spec = load_state_dict_package(tmp_path)
    assert loaded_spec == spec
    images = _scene(2)["image"]
    model.eval()
    a, b = model.detect_uint8(images, 0.0), loaded.detect_uint8(images, 0.0)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))


def test_the_backbone_starts_from_a_resnet_classifier_and_refuses_another():
    torch.manual_seed(0)
    classifier = ResNet(3, 10, 32, depth=8, width=8)
    detector = build_detector("centernet", 3, 2, depth=8, width=8)
    state = backbone_state(classifier, detector)
    detector.load_state_dict(state)
    assert torch.equal(detector.backbone.stem[0].weight, classifier.stem[0].weight)
    assert torch.equal(detector.backbone.stages[-1].conv2.weight, classifier.stages[-1].conv2.weight)
    fresh = build_detector("centernet", 3, 2, depth=8, width=8)
    assert torch.equal(state["heat.2.bias"], fresh.state_dict()["heat.2.bias"])  # heads keep their init
    with pytest.raises(ValueError, match="same ResNet depth and width"):
        backbone_state(ResNet(1, 10, 32, depth=8, width=8), detector)  # grey classifier, colour detector


def test_previews_are_pngs_on_the_epochs_asked_for():
    import io

    from PIL import Image

    torch.manual_seed(0)
    rows = _scene(2)
    preview = {"images": rows["image"], "boxes": rows["boxes"], "labels": rows["box_labels"]}
    task = build_task("detection", num_classes=2, classes=("a", "b"), preview=preview, preview_every=2, epochs=3)
    model = ModelSpec(name="centernet", in_channels=3, num_classes=2, image_size=32, classes=("a", "b"), width=8,
                      depth=8, task="detection").build(Normalize.identity(3))
    model.train()
    assert task.epoch_artifacts(model, 0) == {}  # epoch 1
    drawn = task.epoch_artifacts(model, 1)  # epoch 2
    assert list(drawn) == ["predictions/epoch_002.png"] and model.training
    picture = np.asarray(Image.open(io.BytesIO(drawn["predictions/epoch_002.png"])))
    assert picture.shape[:2] == (2 * 96 + 4, 2 * 96 + 4)  # two rows of [truth | predictions], 3x
    assert list(task.epoch_artifacts(model, 2)) == ["predictions/epoch_003.png"]  # the last epoch too
    # the ground-truth box of the first image is drawn in class 0's colour on the left panel
    x1, y1, x2, y2 = (int(v) * 3 for v in rows["boxes"][0, 0])
    from components.dense_plots import PALETTE

    assert (picture[y1, x1:x2 - 3] == PALETTE[1]).all()
