"""The one training loop: it learns, it is deterministic, bf16 works on CPU, serving matches eval."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from components import engine
from components.augment import Augment
from components.losses import build_criterion
from components.models import Normalize, normalization_stats
from components.optim import build_optimizer, build_scheduler
from components.packaging import ModelSpec, load_package, save_package


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    images = (d.images * (255 / 16)).round().astype(np.uint8)[..., None]  # N×8×8×1
    return images, d.target.astype(np.int64)


def batches(images, labels, bs, prep):
    for i in range(0, len(labels), bs):
        yield prep({"image": images[i:i + bs], "label": labels[i:i + bs], "idx": np.arange(i, i + len(labels[i:i + bs]))})


def make_model(images, name="convnet"):
    spec = ModelSpec(name=name, in_channels=1, num_classes=10, image_size=8, classes=tuple("0123456789"),
                     width=8 if name == "convnet" else None)
    mean, std = normalization_stats([images], "per_channel")
    torch.manual_seed(0)
    return spec.build(Normalize(mean, std)), spec


def fit(images, labels, precision="fp32", epochs=3, name="convnet"):
    model, spec = make_model(images, name)
    opt = build_optimizer("nesterov", model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = epochs * int(np.ceil(len(labels) / 64))
    sched = build_scheduler(opt, schedule="cosine", total_steps=steps, warmup_steps=min(5, steps))
    crit = build_criterion("softmax")
    history = []
    for epoch in range(epochs):
        prep = engine.BatchPrep(Augment(), seed=0, epoch=epoch)
        stats = engine.train_one_epoch(model, crit, opt, batches(images, labels, 64, prep), scheduler=sched,
                                       precision=precision)
        history.append(stats.loss)
    return model, spec, history


def test_training_reduces_loss_and_learns_digits(digits):
    images, labels = digits
    model, _, history = fit(images[:1500], labels[:1500])
    assert history[-1] < history[0] * 0.5
    stats, preds, true = engine.evaluate(model, build_criterion("softmax"),
                                         batches(images[1500:], labels[1500:], 128, engine.BatchPrep()), collect=True)
    assert stats.accuracy > 0.85
    assert len(preds) == len(true) == len(labels) - 1500


def test_bf16_autocast_trains_on_cpu(digits):
    images, labels = digits
    _, _, history = fit(images[:640], labels[:640], precision="bf16", epochs=2)
    assert np.isfinite(history).all() and history[-1] < history[0]


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    cpu = torch.device("cpu")
    native = engine.native_bf16(cpu)
    assert engine.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert [engine.resolve_precision(p, cpu) for p in ("fp32", "bf16")] == ["fp32", "bf16"]
    with engine.autocast("auto", cpu):
        dtype = torch.ones(2, 2).mm(torch.ones(2, 2)).dtype
    assert dtype == (torch.bfloat16 if native else torch.float32)
    # a CPU without AMX or AVX512-BF16 (this machine's probes answering no): auto falls back to fp32
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    assert not engine.native_bf16(cpu) and engine.resolve_precision("auto", cpu) == "fp32"
    with engine.autocast("auto", cpu):
        assert torch.ones(2, 2).mm(torch.ones(2, 2)).dtype == torch.float32


def test_fp16_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        engine.autocast("fp16", torch.device("cpu"))


def test_training_is_deterministic(digits):
    images, labels = digits
    a = fit(images[:256], labels[:256], epochs=1)[0].state_dict()
    b = fit(images[:256], labels[:256], epochs=1)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_batch_prep_layout_and_seeded_augmentation(digits):
    images, labels = digits
    batch = {"image": images[:16], "label": labels[:16], "idx": np.arange(100, 116)}
    x, y = engine.BatchPrep()(batch)
    assert x.shape == (16, 1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(y, torch.as_tensor(labels[:16]))
    aug = Augment(crop_padding=1, cutout=2)
    x1, y1 = engine.BatchPrep(aug, seed=1, epoch=0)(batch)
    x2, _ = engine.BatchPrep(aug, seed=1, epoch=0)(batch)
    x3, _ = engine.BatchPrep(aug, seed=1, epoch=1)(batch)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert torch.equal(y1, y)  # labels survive augmentation
    # read-only inputs (Arrow-backed Ray Data batches) are accepted
    ro = images[:4].copy()
    ro.flags.writeable = False
    engine.BatchPrep()({"image": ro, "label": labels[:4]})


def test_nan_loss_raises_loss_explosion(digits):
    images, labels = digits
    model, _ = make_model(images, "softmax")
    with torch.no_grad():
        next(model.net.parameters())[0, 0] = float("inf")  # what a diverged update leaves behind
    opt = build_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.0, weight_decay=0.0)
    with pytest.raises(engine.LossExplosion, match="lower train.lr"):
        engine.train_one_epoch(model, build_criterion("softmax"), opt,
                               batches(images[:512], labels[:512], 64, engine.BatchPrep()))


def test_model_package_round_trip_serves_raw_images(digits, tmp_path):
    images, labels = digits
    model, spec, _ = fit(images[:512], labels[:512], epochs=1)
    save_package(tmp_path / "pkg", model, spec)
    loaded, spec2 = load_package(tmp_path / "pkg")
    assert spec2 == spec
    _, preds, _ = engine.evaluate(model, build_criterion("softmax"),
                                  batches(images[:100], labels[:100], 50, engine.BatchPrep()), collect=True)
    classes, probs = loaded.predict_uint8(images[:100, :, :, 0])  # N×H×W, as a client sends grey images
    assert np.array_equal(classes.numpy(), preds)
    assert torch.allclose(probs.sum(1), torch.ones(100), atol=1e-5)


def test_prefetched_yields_everything_in_order_and_raises_the_producers_error():
    assert list(engine.prefetched(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad shard")

    got = []
    with pytest.raises(ValueError, match="bad shard"):
        for item in engine.prefetched(failing()):
            got.append(item)
    assert got == [1]


def test_prefetched_stops_its_thread_when_the_consumer_stops_early():
    import threading

    made = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    it = engine.prefetched(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # what a loop's break (max_steps) does to the generator
    assert not any(t.name == "visionray-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(made) <= 3 + 2 + 1  # at most depth batches (and the one in hand) made ahead
