"""Tests for components.models: nets, normalisation statistics, the serving path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from components.models import (
    MODEL_NAMES,
    SEGMENTATION_MODELS,
    ConvNet,
    ImageClassifier,
    Normalize,
    ResNet,
    SoftmaxLinear,
    accumulate_moments,
    build_model,
    count_macs,
    count_parameters,
    finalize_moments,
    normalization_stats,
    resnet,
)

# (in_channels, image_size): Fashion-MNIST, CIFAR-10, sklearn digits.
SHAPES = [(1, 28), (3, 32), (1, 8)]
#: The smallest options of each family (fast tests); families not listed build with their defaults.
SMALL = {"convnet": {"width": 8}, "resnet": {"width": 4, "depth": 8}, "mlp": {"hidden": (16, 8)},
         "alexnet": {"width": 4}, "vgg": {"width": 4}, "googlenet": {"width": 8},
         "wide_resnet": {"depth": 10, "width": 1}, "densenet": {"depth": 10, "growth": 4}}


#: Classifiers trained by gradient descent: all but kNN, which memorises its training set
#: (tests/components/test_knn.py), and the segmentation nets, which score every pixel
#: (tests/components/test_segmentation.py).
TRAINABLE = tuple(n for n in MODEL_NAMES if n != "knn" and n not in SEGMENTATION_MODELS)


@pytest.mark.parametrize("name", TRAINABLE)
@pytest.mark.parametrize("in_channels,size", SHAPES)
def test_every_net_forward_backward(name: str, in_channels: int, size: int) -> None:
    torch.manual_seed(0)
    # Smallest widths/depth keep the test fast; the defaults are checked below.
    net = build_model(name, in_channels=in_channels, num_classes=7, image_size=size, dropout=0.1,
                      **SMALL.get(name, {}))
    x = torch.rand(4, in_channels, size, size)
    out = net(x)
    assert out.shape == (4, 7)
    out.square().sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("in_channels,size", SHAPES)
def test_default_nets_forward(in_channels: int, size: int) -> None:
    for name in TRAINABLE:
        net = build_model(name, in_channels=in_channels, num_classes=10, image_size=size).eval()
        with torch.no_grad():
            assert net(torch.rand(2, in_channels, size, size)).shape == (2, 10)


def test_build_model_types_and_errors() -> None:
    kw = dict(in_channels=1, num_classes=10, image_size=28)
    assert isinstance(build_model("softmax", **kw), SoftmaxLinear)
    assert isinstance(build_model("convnet", **kw), ConvNet)
    assert isinstance(build_model("resnet", **kw), ResNet)
    with pytest.raises(ValueError, match="softmax.*convnet.*resnet"):
        build_model("vgg16", **kw)
    with pytest.raises(ValueError, match="depth"):
        build_model("convnet", depth=20, **kw)
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model("resnet", depth=21, **kw)


def test_resnet20_size_and_shortcuts() -> None:
    # He et al. (2016) Table 6: ResNet-20 has 0.27M parameters.
    net_b = resnet(20, in_channels=3, num_classes=10, image_size=32)
    assert 0.26e6 < count_parameters(net_b) < 0.28e6
    net_a = resnet(20, shortcut="A", in_channels=3, num_classes=10, image_size=32)
    assert 0.26e6 < count_parameters(net_a) < count_parameters(net_b)
    assert net_a(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    # depth = 6n + 2 -> 3n BasicBlocks.
    assert len(resnet(32).stages) == 15


def test_count_macs_counts_a_transposed_convolution_by_its_scattered_patches() -> None:
    up = torch.nn.ConvTranspose2d(4, 6, kernel_size=2, stride=2)
    # each of the 4 x 5 x 5 input values scatters a 2 x 2 patch into each of 6 output maps
    assert count_macs(up, (4, 5, 5)) == 4 * 5 * 5 * 6 * 2 * 2
    # ... the same count as the direct convolution it is the adjoint of, run on the 6 x 10 x 10 output
    assert count_macs(torch.nn.Conv2d(6, 4, kernel_size=2, stride=2), (6, 10, 10)) == 4 * 5 * 5 * 6 * 2 * 2


def test_count_macs_matches_hand_count() -> None:
    net = SoftmaxLinear(1, 10, 28)
    assert count_macs(net, (1, 28, 28)) == 784 * 10
    conv = build_model("convnet", in_channels=1, num_classes=10, image_size=28, width=8)
    # 4 convs (two at 28x28, two at 14x14) + the head on a 16x7x7 map.
    expected = 784 * 9 * (1 * 8 + 8 * 8) + 196 * 9 * (8 * 16 + 16 * 16) + 16 * 49 * 10
    assert count_macs(conv, (1, 28, 28)) == expected
    assert conv.training  # restored


def test_softmax_templates_shape() -> None:
    net = SoftmaxLinear(3, 10, 32)
    assert net.templates().shape == (10, 3, 32, 32)


# --- normalisation -----------------------------------------------------------


def _random_images(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_streaming_moments_equal_numpy(channels: int) -> None:
    images = _random_images(0, (50, 8, 8, channels))
    batches = [images[:7], images[7:30], images[30:]]
    ref = images.astype(np.float64) / 255

    mean, std = normalization_stats(batches, mode="per_channel")
    assert mean.shape == std.shape == (channels, 1, 1)
    np.testing.assert_allclose(mean.flatten(), ref.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std.flatten(), ref.std(axis=(0, 1, 2)), rtol=1e-6)

    mean, std = normalization_stats(batches, mode="mean_image")
    assert mean.shape == (channels, 8, 8) and std.shape == (1, 1, 1)
    np.testing.assert_allclose(mean.numpy(), ref.mean(axis=0).transpose(2, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(float(std), ref.std(), rtol=1e-6)


def test_partial_moments_combine_in_any_order() -> None:
    images = _random_images(1, (40, 8, 8))  # N,H,W grayscale
    parts = [accumulate_moments(images[i : i + 10]) for i in range(0, 40, 10)]
    for mode in ("per_channel", "mean_image"):
        forward = finalize_moments(parts, mode)
        backward = finalize_moments(parts[::-1], mode)
        whole = finalize_moments([accumulate_moments(torch.from_numpy(images))], mode)
        for a, b, c in zip(forward, backward, whole):
            assert torch.equal(a, b) and torch.equal(a, c)


def test_moments_errors() -> None:
    with pytest.raises(ValueError, match="uint8"):
        accumulate_moments(np.zeros((2, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="mode"):
        parts = [accumulate_moments(_random_images(0, (2, 8, 8)))]
        finalize_moments(parts, "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        normalization_stats([], mode="per_channel")


def test_normalize_forward_both_layouts() -> None:
    images = _random_images(2, (20, 8, 8, 3))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    for mode in ("per_channel", "mean_image"):
        out = Normalize(*normalization_stats([images], mode=mode))(x)
        assert out.shape == x.shape
        assert abs(float(out.mean())) < 1e-4
        if mode == "per_channel":
            std = out.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
            torch.testing.assert_close(std, torch.ones(3), atol=1e-4, rtol=0)
    ident = Normalize.identity(3)
    assert torch.equal(ident(x), x)
    # Buffers travel in the state dict, so a saved model keeps its preprocessing.
    assert set(ident.state_dict()) == {"mean", "std"}


def test_normalize_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        Normalize(torch.zeros(3, 1, 1), torch.ones(2, 1, 1))
    with pytest.raises(ValueError):
        Normalize(torch.zeros(1, 3), torch.ones(1))


# --- serving path ---------------------------------------------------------


def _classifier(in_channels: int, size: int) -> ImageClassifier:
    torch.manual_seed(0)
    net = build_model("convnet", in_channels=in_channels, num_classes=10, image_size=size, width=4)
    norm = Normalize(torch.full((in_channels,), 0.5), torch.full((in_channels,), 0.25))
    return ImageClassifier(norm, net)


@pytest.mark.parametrize("shape", [(5, 8, 8), (5, 8, 8, 1)])
def test_predict_uint8_grayscale(shape: tuple[int, ...]) -> None:
    model = _classifier(1, 8).train()
    images = torch.from_numpy(_random_images(3, shape))
    classes, probs = model.predict_uint8(images)
    assert classes.dtype == torch.int64 and classes.shape == (5,)
    assert probs.dtype == torch.float32 and probs.shape == (5, 10)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(5))
    assert torch.equal(classes, probs.argmax(dim=1))
    assert model.training  # mode restored


def test_predict_uint8_matches_forward_and_accepts_numpy() -> None:
    model = _classifier(3, 32).eval()
    images = _random_images(4, (3, 32, 32, 3))
    classes, probs = model.predict_uint8(images)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1)
    torch.testing.assert_close(probs, expected)
    assert math.isclose(float(probs.sum()), 3.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        model.predict_uint8(_random_images(0, (2, 32, 32)))
    with pytest.raises(ValueError, match="uint8"):
        model.predict_uint8(torch.rand(2, 32, 32, 3))


def test_classifier_state_dict_roundtrip() -> None:
    model = _classifier(1, 8)
    clone = _classifier(1, 8)
    for p in clone.parameters():
        nn.init.zeros_(p)
    clone.load_state_dict(model.state_dict())
    images = _random_images(5, (4, 8, 8))
    assert torch.equal(model.predict_uint8(images)[1], clone.predict_uint8(images)[1])


def test_predict_uint8_takes_read_only_images_without_sharing_them(monkeypatch) -> None:
    # Arrow buffers and served requests are read-only: torch would share the memory and warn (once per
    # process, so the warning itself cannot be asserted on); the model copies such an array, only such.
    model = _classifier(1, 8).eval()
    images = _random_images(5, (3, 8, 8))
    expected = model.predict_uint8(images)
    given = []
    as_tensor = torch.as_tensor
    monkeypatch.setattr(torch, "as_tensor", lambda a, *args, **kw: given.append(a) or as_tensor(a, *args, **kw))
    read_only = images.copy()
    read_only.flags.writeable = False
    classes, probs = model.predict_uint8(read_only)
    assert given[-1].flags.writeable and given[-1] is not read_only
    assert torch.equal(classes, expected[0]) and torch.equal(probs, expected[1])
    model.predict_uint8(images)
    assert given[-1] is images  # a writable array is not copied


def test_flip_tta_averages_the_logits_of_an_image_and_its_mirror_only_in_eval_mode():
    torch.manual_seed(0)
    net = ConvNet(in_channels=1, num_classes=10, image_size=28, width=8)
    plain = ImageClassifier(Normalize.identity(1), net)
    tta = ImageClassifier(Normalize.identity(1), net, tta="flip")
    x = torch.rand(5, 1, 28, 28)
    x[:, :, :, :14] = 0  # not mirror-symmetric: the mirror image scores differently
    plain.eval(), tta.eval()
    with torch.no_grad():
        expected = (plain(x) + plain(x.flip(-1))) / 2
        assert not torch.allclose(plain(x), expected, atol=1e-4)
        torch.testing.assert_close(tta(x), expected)
        assert torch.equal(tta(x[:1]).argmax(1), tta(x[:1].flip(-1)).argmax(1))  # mirror-invariant
        with tta.without_tta():  # the training loop's per-epoch validation: the plain net
            torch.testing.assert_close(tta(x), plain(x))
        torch.testing.assert_close(tta(x), expected)  # and the flips again after it
    tta.train()
    torch.manual_seed(1)
    a = tta(x)
    torch.manual_seed(1)
    torch.testing.assert_close(a, plain.train()(x))  # training sees each image once, as it is
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        ImageClassifier(Normalize.identity(1), net, tta="rotate")


def test_flip_shift_tta_averages_ten_views_each_moved_one_pixel():
    """flip_shift: the image, its mirror, and each moved one pixel right, left, down and up (zeros fill in),
    logits averaged; the shifts move the content the named way."""
    from components.models.base import TTA_VIEWS, _view

    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 2] = 1.0
    assert _view(x, False, 1, 0)[0, 0, 1, 3] == 1 and _view(x, False, -1, 0)[0, 0, 1, 1] == 1
    assert _view(x, False, 0, 1)[0, 0, 2, 2] == 1 and _view(x, False, 0, -1)[0, 0, 0, 2] == 1
    assert _view(x, True, 0, 0)[0, 0, 1, 1] == 1
    edge = torch.ones(1, 1, 3, 3)
    assert _view(edge, False, 1, 0)[0, 0, :, 0].sum() == 0  # the vacated column is zeros
    assert len(TTA_VIEWS["flip_shift"]) == 10 and set(TTA_VIEWS["flip"]) < set(TTA_VIEWS["flip_shift"])
    torch.manual_seed(0)
    net = ConvNet(in_channels=1, num_classes=10, image_size=28, width=8)
    plain = ImageClassifier(Normalize.identity(1), net).eval()
    tta = ImageClassifier(Normalize.identity(1), net, tta="flip_shift").eval()
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = torch.stack([plain(_view(images, *v)) for v in TTA_VIEWS["flip_shift"]]).mean(0)
        torch.testing.assert_close(tta(images), expected)
        assert not torch.allclose(tta(images), ImageClassifier(Normalize.identity(1), net, tta="flip").eval()(images),
                                  atol=1e-4)
    # the evaluate stage runs it channels-last (3x faster on a CPU): the same function, and a request of the
    # first rows gets bitwise what the evaluation loop's batch gave them (the views are scored in fixed chunks)
    import copy

    nhwc = copy.deepcopy(tta).to(memory_format=torch.channels_last)
    batch = torch.rand(300, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(batch), tta(batch), atol=1e-5, rtol=1e-5)
        assert torch.equal(nhwc(batch)[:128], nhwc(batch[:128]))


def test_a_package_keeps_its_flip_tta(tmp_path):
    from components.package_base import ModelSpec, save_package
    from components.packaging import load_package

    spec = ModelSpec(name="convnet", in_channels=1, num_classes=10, image_size=28, classes=tuple("abcdefghij"),
                     width=8, tta="flip")
    model = spec.build(Normalize.identity(1)).eval()
    save_package(tmp_path / "pkg", model, spec)
    loaded, loaded_spec = load_package(tmp_path / "pkg")
    assert loaded_spec.tta == "flip" and loaded.tta == "flip"
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))
