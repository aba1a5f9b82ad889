"""The segmentation task and its nets: mIoU and pixel accuracy against hand-computed cases, meters that sum
across ranks, the served form, and FCN / U-Net / FCN-on-ResNet shapes and up-sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.augment import Augment
from components.dense_plots import colourise, overlay_grid, png_bytes
from components.models import ImageClassifier, Normalize, build_model
from components.models.segmentation import FCN, FCNResNet, UNet, bilinear_kernel
from components.tasks import build_task
from components.tasks.segmentation import confusion, iou_from_confusion, scores


def logits_for(pred: torch.Tensor, k: int) -> torch.Tensor:
    """Scores whose argmax is ``pred`` (N, H, W) → (N, K, H, W)."""
    return torch.nn.functional.one_hot(pred, k).permute(0, 3, 1, 2).float() * 5


def test_miou_and_pixel_accuracy_by_hand():
    truth = torch.tensor([[[0, 0], [1, 1]]])
    pred = torch.tensor([[[0, 1], [1, 1]]])
    cm = confusion(pred, truth, 3).numpy()
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    # class 0: TP 1, FP 0, FN 1 → 1/2; class 1: TP 2, FP 1, FN 0 → 2/3; class 2 absent from both: not averaged
    iou = iou_from_confusion(cm)
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(2 / 3) and math.isnan(iou[2])
    assert scores(cm) == pytest.approx({"miou": 7 / 12, "pixel_accuracy": 3 / 4})
    # a class predicted but never true counts, at IoU 0
    assert scores(confusion(torch.tensor([[[2, 1]]]), torch.tensor([[[1, 1]]]), 3).numpy())["miou"] == pytest.approx(0.25)


def test_ignored_pixels_count_nowhere():
    truth = torch.tensor([[[0, 255], [1, 255]]])
    pred = torch.tensor([[[0, 1], [1, 0]]])
    assert scores(confusion(pred, truth, 2).numpy()) == {"miou": 1.0, "pixel_accuracy": 1.0}
    task = build_task("segmentation", num_classes=2)
    loss = task.loss(logits_for(pred, 2), truth)
    assert torch.isfinite(loss) and loss < 0.01  # the two ignored pixels, predicted wrong, cost nothing


def test_meters_of_two_ranks_sum_to_the_meter_of_all():
    task = build_task("segmentation", num_classes=3, classes=("background", "a", "b"))
    gen = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 3, (6, 5, 5), generator=gen)
    pred = torch.where(torch.rand(6, 5, 5, generator=gen) < 0.7, truth, torch.randint(0, 3, (6, 5, 5), generator=gen))
    whole, a, b = task.meter(), task.meter(), task.meter()
    whole.add(logits_for(pred, 3), truth, 0.5)
    a.add(logits_for(pred[:2], 3), truth[:2], 0.2)
    b.add(logits_for(pred[2:], 3), truth[2:], 0.65)
    summed = a.with_totals([x + y for x, y in zip(a.totals(), b.totals())]).compute()
    want = whole.compute()
    assert summed["miou"] == pytest.approx(want["miou"]) and summed["pixel_accuracy"] == pytest.approx(want["pixel_accuracy"])
    assert summed["loss"] == pytest.approx((0.2 * 2 + 0.65 * 4) / 6)
    assert want["pixel_accuracy"] == pytest.approx(float((pred == truth).float().mean()))
    assert task.primary == "miou" and task.higher_is_better and task.loss_floor() == pytest.approx(math.log(3))


def test_batch_prep_moves_masks_with_pixels_and_serving_agrees_with_the_loop():
    torch.manual_seed(0)
    task = build_task("segmentation", num_classes=4, classes=("background", "circle", "square", "triangle"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    masks = rng.integers(0, 4, (4, 16, 16)).astype(np.uint8)
    batch = {"image": images, "mask": masks, "idx": np.arange(4), "label": np.zeros(4, np.int64)}
    x, y = task.batch_prep()(batch)
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(masks).long())
    xa, ya = task.batch_prep(augment=Augment(flip=True), seed=1, epoch=0)(batch)
    for i in range(4):  # each image either kept or mirrored, its mask the same way
        flipped = torch.equal(xa[i], x[i].flip(-1)) and not torch.equal(xa[i], x[i])
        assert torch.equal(ya[i], y[i].flip(-1) if flipped else y[i])
    model = ImageClassifier(Normalize.identity(3), build_model("unet", in_channels=3, num_classes=4, image_size=16,
                                                               width=4, depth=2)).eval()
    served = task.predict(model, images)["mask"]
    with torch.no_grad():
        looped = task.predictions(task.infer(model, x)).numpy()
    assert served.shape == (4, 16, 16) and served.dtype == np.int64 and np.array_equal(served, looped)
    inputs, outputs = task.served_schema(images[:2], {"num_classes": 4})
    assert inputs[0].shape == (-1, 16, 16, 3) and (outputs[0].name, outputs[0].shape) == ("mask", (-1, 16, 16))


def test_report_has_per_class_iou_and_previews_draw():
    task = build_task("segmentation", num_classes=3, classes=("background", "a", "b"))
    truth = np.array([[[0, 0], [1, 1]]])
    report = task.report(np.array([[[0, 1], [1, 1]]]), truth, ["background", "a", "b"], {"val/miou": [(1, 0.5)]}, "t")
    assert report.metrics == pytest.approx({"iou_background": 0.5, "iou_a": 2 / 3})  # b never occurs
    assert report.documents["eval/test_report.json"]["per_class_iou"]["b"] is None
    assert set(report.figures) == {"plots/confusion_matrix.png", "plots/per_class_iou.png", "plots/curves.png"}
    grid = overlay_grid(np.zeros((2, 4, 4, 1), np.uint8), np.ones((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8),
                        scale=2, gap=1)
    assert grid.shape == (2 * 8 + 1, 3 * 8 + 2, 3)
    assert np.all(grid[:8, 9:17] != 0) and np.all(grid[:8, 18:26] == 0)  # truth painted, background prediction not
    assert png_bytes(grid)[:8] == b"\x89PNG\r\n\x1a\n"
    assert colourise(np.array([[0, 255]])).tolist() == [[[0, 0, 0], [128, 128, 128]]]
    model = ImageClassifier(Normalize.identity(1), FCN(1, 3, width=2, depth=1)).eval()
    preview = {"images": np.zeros((2, 8, 8), np.uint8), "masks": np.zeros((2, 8, 8), np.uint8)}
    drawing = build_task("segmentation", num_classes=3, preview=preview, preview_every=2, epochs=3)
    assert [bool(drawing.epoch_artifacts(model, e)) for e in range(3)] == [False, True, True]  # every 2nd, and the last
    assert list(drawing.epoch_artifacts(model, 1)) == ["previews/epoch_002.png"]


@pytest.mark.parametrize("net", [FCN, UNet])
def test_nets_score_every_pixel_at_any_size(net):
    model = net(3, 5, width=4, depth=3)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5, 32, 32)
    assert model(torch.rand(1, 3, 21, 30)).shape == (1, 5, 21, 30)  # padded to a multiple of 8, cropped back
    loss = torch.nn.functional.cross_entropy(model(torch.rand(2, 3, 16, 16)), torch.randint(0, 5, (2, 16, 16)))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="depth"):
        net(3, 5, width=4, depth=6)


def test_fcn_upsampling_starts_bilinear():
    up = torch.nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(2, 4))
    x = torch.rand(1, 2, 6, 6)
    want = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    # equal away from the border (the transposed convolution pads with zeros there)
    assert torch.allclose(up(x)[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-6)
    assert bilinear_kernel(3, 4)[0, 1].abs().sum() == 0  # no mixing between classes


def test_fcn_on_a_resnet_trunk_scores_every_pixel_and_takes_a_classifiers_trunk():
    """fcn_resnet: any size in, one score map per class out at that size; its trunk is a ResNet classifier's
    stem and stages under backbone., so components.transfer.backbone_state loads them, and the score heads
    keep their own initialisation."""
    from components.models.resnet import ResNet
    from components.transfer import backbone_state

    torch.manual_seed(0)
    net = FCNResNet(3, 4, depth=8, width=4)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 4, 32, 32)
    assert net(torch.rand(1, 3, 21, 30)).shape == (1, 4, 21, 30)  # stride 8: padded, cropped back
    loss = torch.nn.functional.cross_entropy(net(torch.rand(2, 3, 16, 16)), torch.randint(0, 4, (2, 16, 16)))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())  # every head is used: DDP needs no unused-param search
    classifier = ResNet(3, 10, 32, depth=8, width=4)
    state = backbone_state(classifier, net)
    trunk = [k for k in state if k.startswith("backbone.")]
    assert trunk and all(torch.equal(state[k], classifier.state_dict()[k[len("backbone."):]]) for k in trunk)
    assert torch.equal(state["heads.0.weight"], net.state_dict()["heads.0.weight"])
    with pytest.raises(ValueError, match="same ResNet depth and width"):
        backbone_state(ResNet(3, 10, 32, depth=8, width=8), net)
