"""Each compression method on a small ConvNet trained in-process on scikit-learn's digits (seconds).

    .venv/bin/python -m pytest -q tests/components/test_compression.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components import engine
from components.compression import binary, huffman, kmeans, lowrank, package, prune
from components.hooks import build_hooks
from components.losses import build_criterion
from components.models import Normalize
from components.packaging import ModelSpec, load_package, save_package
from pipelines.services import names


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * 255 / 16).astype(np.uint8)  # N×8×8 raw pixels
    return images, d.target.astype(np.int64)


def batches(images, labels, size=64, seed=0):
    order = np.random.default_rng(seed).permutation(len(labels))
    prep = engine.BatchPrep()
    for i in range(0, len(order), size):
        j = order[i:i + size]
        yield prep({"image": images[j], "label": labels[j]})


def train(model, images, labels, epochs=6, hooks=(), lr=0.05):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    criterion = build_criterion("softmax")
    for epoch in range(epochs):
        engine.train_one_epoch(model, criterion, opt, batches(images, labels, seed=epoch),
                               on_step=lambda step, _: [h.after_step(model, step) for h in hooks])
    return model.eval()


def accuracy(model, images, labels) -> float:
    classes, _ = model.predict_uint8(images)
    return float((classes.numpy() == labels).mean())


@pytest.fixture(scope="module")
def trained(digits):
    """(model, spec, train images/labels, test images/labels): a width-8 ConvNet at ~95% on digits."""
    images, labels = digits
    spec = ModelSpec(name="convnet", in_channels=1, num_classes=10, image_size=8,
                     classes=tuple(str(i) for i in range(10)), width=8, dropout=0.0)
    torch.manual_seed(0)
    x = torch.from_numpy(images[:1400]).float() / 255
    model = spec.build(Normalize(x.mean().reshape(1), x.std().reshape(1)))
    train(model, images[:1400], labels[:1400])
    return model, spec, images[:1400], labels[:1400], images[1400:], labels[1400:]


def clone(model, spec):
    copy = spec.build()
    copy.load_state_dict(model.state_dict())
    return copy.eval()


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_pruning_reaches_exactly_the_target_sparsity(trained, scope, tmp_path):
    model, spec, *_, test_x, test_y = trained
    pruned = clone(model, spec)
    masks = prune.prune_(pruned.net, 0.7, scope)
    layers = prune.weight_layers(pruned.net)
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    assert zeros == round(0.7 * total) if scope == "global" else all(
        int((m.weight == 0).sum()) == round(0.7 * m.weight.numel()) for _, m in layers)
    assert all(int((~masks[n]).sum()) == int((m.weight == 0).sum()) for n, m in layers)
    # Stored sparse, the package is genuinely smaller and decodes to the same weights.
    sparse_dir = package.save_sparse(tmp_path / "sparse", pruned, spec)
    dense_dir = save_package(tmp_path / "dense", pruned, spec)
    assert package.package_bytes(sparse_dir) < 0.6 * package.package_bytes(dense_dir)
    loaded, _ = load_package(sparse_dir)
    for (_, a), (_, b) in zip(prune.weight_layers(pruned.net), prune.weight_layers(loaded.net)):
        assert torch.equal(a.weight, b.weight)


def test_mask_hook_keeps_pruned_weights_at_zero_while_fine_tuning(trained):
    model, spec, train_x, train_y, test_x, test_y = trained
    tuned = clone(model, spec)
    hooks = build_hooks([(prune.MaskHook, {"sparsity": 0.8, "scope": "global", "epochs": 3,
                                           "metric": names.COMPRESS_SPARSITY})])
    hooks[0].setup(tuned)
    for epoch in range(3):
        train(tuned, train_x, train_y, epochs=1, hooks=hooks, lr=0.01)
        reported = hooks[0].end_epoch(tuned, epoch, None)
        assert set(reported) == {names.COMPRESS_SPARSITY}  # the sparsity this epoch's validation saw
    assert prune.sparsity_of(tuned.net) == pytest.approx(0.8, abs=1e-3)
    assert accuracy(tuned, test_x, test_y) > 0.8


# --------------------------------------------------------------------------- weight sharing


def test_kmeans_leaves_exactly_k_distinct_values_per_layer(trained, tmp_path):
    model, spec, *_, test_x, test_y = trained
    shared = clone(model, spec)
    books = kmeans.share_(shared.net, clusters=16)
    for name, m in prune.weight_layers(shared.net):
        assert torch.unique(m.weight).numel() == 16, name
        assert len(books[name].centroids) == 16
    loaded, _ = load_package(package.save_shared(tmp_path / "shared", shared, spec, books))
    for (_, a), (_, b) in zip(prune.weight_layers(shared.net), prune.weight_layers(loaded.net)):
        assert torch.equal(a.weight, b.weight)
    assert abs(accuracy(loaded, test_x, test_y) - accuracy(model, test_x, test_y)) < 0.05


def test_centroid_fine_tuning_keeps_the_assignment(trained):
    model, spec, train_x, train_y, *_ = trained
    tuned = clone(model, spec)
    prune.prune_(tuned.net, 0.5)
    books = kmeans.share_(tuned.net, clusters=8)
    before = {n: b.centroids.clone() for n, b in books.items()}
    hooks = build_hooks([(kmeans.ShareHook, {"indices": {n: b.indices for n, b in books.items()}})])
    hooks[0].setup(tuned)
    train(tuned, train_x, train_y, epochs=1, hooks=hooks, lr=0.01)
    for name, m in prune.weight_layers(tuned.net):
        values = torch.unique(m.weight)
        assert values.numel() <= 9 and (m.weight[books[name].indices < 0] == 0).all()
    assert any(not torch.allclose(before[n], b.centroids) for n, b in kmeans.enforce_(tuned.net, hooks[0].indices).items())


# --------------------------------------------------------------------------- Huffman


@pytest.mark.parametrize("n,alphabet", [(0, 4), (1, 3), (50, 1), (20000, 33), (3000, 256)])
def test_huffman_round_trips(n, alphabet):
    x = np.random.default_rng(n).geometric(0.25, size=n) % alphabet
    data, lengths = huffman.encode(x, alphabet)
    assert np.array_equal(huffman.decode(data, lengths, n), x)
    if n > 1000:  # a skewed stream codes below its fixed width
        assert len(data) * 8 < n * np.ceil(np.log2(alphabet))


def test_deep_compression_chain_size_is_the_bytes_written_and_decodes_exactly(trained, tmp_path):
    model, spec, *_, test_x, test_y = trained
    chained = clone(model, spec)
    prune.prune_(chained.net, 0.6)
    books = kmeans.share_(chained.net, clusters=16)
    directory = package.save_deep(tmp_path / "deep", chained, spec, books)
    assert package.package_bytes(directory) == sum(p.stat().st_size for p in directory.iterdir())
    dense = package.package_bytes(save_package(tmp_path / "dense", model, spec))
    assert package.package_bytes(directory) < dense / 3
    loaded, _ = load_package(directory)
    for (_, a), (_, b) in zip(prune.weight_layers(chained.net), prune.weight_layers(loaded.net)):
        assert torch.equal(a.weight, b.weight)
    assert np.array_equal(loaded.predict_uint8(test_x)[0].numpy(), chained.predict_uint8(test_x)[0].numpy())


# --------------------------------------------------------------------------- low rank, binary


def test_svd_at_full_rank_reproduces_each_layer(trained):
    model, spec, *_, test_x, _ = trained
    for name, m in prune.weight_layers(model.net):
        full = min(m.weight.flatten(1).shape)
        factored = lowrank.factorise_layer(m, full)
        x = torch.randn(4, m.in_channels, 8, 8) if isinstance(m, torch.nn.Conv2d) else torch.randn(4, m.in_features)
        with torch.no_grad():
            assert torch.allclose(factored(x), m(x), atol=1e-4), name


def test_low_rank_by_energy_saves_weights_and_round_trips(trained, tmp_path):
    model, spec, *_, test_x, test_y = trained
    ranks = lowrank.choose_ranks(model.net, energy=0.9)
    assert ranks, "some layer should be worth factorising at 90% energy"
    small = lowrank.factorise_(clone(model, spec).net, ranks)
    assert lowrank.count_weights(small) < lowrank.count_weights(model.net)
    net_model = clone(model, spec)
    lowrank.factorise_(net_model.net, ranks)
    loaded, _ = load_package(package.save_lowrank(tmp_path / "lr", net_model, spec, ranks))
    assert np.array_equal(loaded.predict_uint8(test_x)[0].numpy(), net_model.predict_uint8(test_x)[0].numpy())


@pytest.mark.parametrize("method", ["binary", "ternary"])
def test_binary_and_ternary_weights(trained, method, tmp_path):
    model, spec, train_x, train_y, test_x, test_y = trained
    coded = clone(model, spec)
    codes = (binary.binarise_ if method == "binary" else binary.ternarise_)(coded.net)
    binary.recalibrate_bn(coded, (x for x, _ in batches(train_x, train_y)))
    coded.eval()
    for name, m in prune.weight_layers(coded.net):
        assert torch.unique(m.weight.abs()).numel() <= (1 if method == "binary" else 2), name
    directory = package.save_codes(tmp_path / method, coded, spec, codes, method)
    loaded, _ = load_package(directory)
    assert np.array_equal(loaded.predict_uint8(test_x)[0].numpy(), coded.predict_uint8(test_x)[0].numpy())
    assert package.package_bytes(directory) < package.package_bytes(save_package(tmp_path / "d", model, spec)) / 4


# --------------------------------------------------------------------------- int8, ONNX


@pytest.mark.parametrize("dynamic", [False, True])
def test_int8_agrees_with_fp32(trained, dynamic, tmp_path):
    from components.compression import quantize

    model, spec, train_x, train_y, test_x, test_y = trained
    example = next(batches(train_x, train_y))[0]
    program = quantize.quantize(clone(model, spec), (x for x, _ in batches(train_x[:512], train_y[:512])),
                                example, dynamic=dynamic)
    directory = package.save_int8(tmp_path / "int8", program, spec, example, "int8")
    loaded, _ = load_package(directory)
    fp32 = model.predict_uint8(test_x)[0].numpy()
    int8 = loaded.predict_uint8(test_x)[0].numpy()
    assert (fp32 == int8).mean() >= 0.98
    assert loaded.predict_uint8(test_x[:1])[0].shape == (1,)  # the batch stays symbolic
    tensors = [*program.state_dict.values(), *program.constants.values()]
    int8 = [t for t in tensors if t.dtype == torch.int8]
    assert len(int8) == (1 if dynamic else len(prune.weight_layers(model.net)))  # weights stored int8
    convs = len(prune.weight_layers(model.net)) - 1  # dynamic: the convolutions stay fp32
    assert sum(t.numel() > 64 and t.dtype == torch.float32 for t in tensors) == (convs if dynamic else 0)
    # A fresh process, as `mlflow models serve` is: nothing has imported torchao or registered the
    # quantized_decomposed ops before the package loads.
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", test_x[:8])
    code = ("import numpy as np, sys; from components.packaging import load_package; "
            f"m, _ = load_package({str(directory)!r}); "
            f"print(m.predict_uint8(np.load({str(tmp_path / 'x.npy')!r}))[0].tolist())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(loaded.predict_uint8(test_x[:8])[0].tolist())


def _static_program(trained):
    from components.compression import quantize

    model, spec, train_x, train_y, _, _ = trained
    example = next(batches(train_x, train_y))[0]
    return quantize.quantize(clone(model, spec), (x for x, _ in batches(train_x[:512], train_y[:512])), example), example


def test_int8_compiled_runtime_pads_to_buckets_and_agrees_with_the_lowered_graph(trained, tmp_path, monkeypatch):
    import shutil

    from components.compression import quantize

    if shutil.which("g++") is None:  # .ci/run installs it; elsewhere the runtime falls back (next test)
        pytest.skip("no g++: torch.compile's inductor backend cannot build the int8 kernels here")
    model, spec, _, _, test_x, test_y = trained
    program, example = _static_program(trained)
    compiled, lowered = quantize.Compiled(program, example), quantize.lower(program, example)
    x = next(batches(test_x, test_y, size=100))[0]
    for n in (1, 3, 64, 100):  # buckets 1, 4, 64 and 64 + a padded 64
        with torch.no_grad():
            fast, slow = compiled(x[:n]), lowered(x[:n])
        assert fast.shape == (n, 10)
        assert (fast.argmax(1) == slow.argmax(1)).float().mean() >= 0.98
    assert compiled.fallback is None  # inductor compiled it: no silent fall-back to the slow graph
    nhwc = x[:64].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # grey NHWC seen as NCHW (predict_uint8)
    nchw = torch.empty_like(nhwc, memory_format=torch.contiguous_format).copy_(nhwc)
    assert nhwc.stride() != nchw.stride()
    with torch.no_grad():
        assert torch.equal(compiled(nhwc), compiled(nchw))  # copied to the bucket's one layout
    directory = package.save_int8(tmp_path / "int8", program, spec, example, "int8")
    assert isinstance(load_package(directory)[0].run, quantize.Compiled)
    monkeypatch.setenv(quantize.RUNTIME_ENV, "lowered")
    assert isinstance(load_package(directory)[0].run, torch.fx.GraphModule)
    monkeypatch.setenv(quantize.RUNTIME_ENV, "fastest")
    with pytest.raises(ValueError, match="VISIONRAY_INT8_RUNTIME"):
        load_package(directory)


def test_int8_compiled_runtime_falls_back_to_the_lowered_graph_without_a_compiler(trained):
    import torch._inductor.config as inductor_config

    from components.compression import quantize

    _, _, _, _, test_x, test_y = trained
    program, example = _static_program(trained)
    compiled = quantize.Compiled(program, example)
    x = next(batches(test_x, test_y, size=8))[0]
    # A serving machine without a C++ compiler (and nothing in inductor's on-disk cache to reuse).
    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++"), "fx_graph_cache": False}), \
            pytest.warns(RuntimeWarning, match="torch.compile failed") as caught:
        out = compiled(x)
    ours = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    assert "nonexistent" in ours[0] or "ompiler" in ours[0], ours[0]
    assert compiled.fallback is not None and out.shape == (8, 10)
    with torch.no_grad():
        assert torch.equal(out.argmax(1), quantize.lower(program, example)(x).argmax(1))


def test_int8_qat_fine_tunes_with_fake_quantisation_then_converts(trained, tmp_path):
    from components.compression import quantize

    model, spec, train_x, train_y, test_x, test_y = trained
    steps = [b for epoch in range(3) for b in batches(train_x, train_y, size=64, seed=10 + epoch)]
    example = steps[0][0][:4]
    program, losses = quantize.quantize_qat(clone(model, spec), steps, example, lr=0.01)
    assert len(losses) == len(steps) and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.5  # it trained (a fresh net starts at ln 10 = 2.3)
    tensors = [*program.state_dict.values(), *program.constants.values()]
    assert sum(t.dtype == torch.int8 for t in tensors) == len(prune.weight_layers(model.net))
    loaded, _ = load_package(package.save_int8(tmp_path / "qat", program, spec, example[:2], "int8_qat"))
    assert accuracy(loaded, test_x, test_y) >= accuracy(model, test_x, test_y) - 0.02


def test_onnx_export_matches_torch(trained, tmp_path):
    model, spec, train_x, train_y, test_x, _ = trained
    example = next(batches(train_x, train_y))[0]
    loaded, _ = load_package(package.save_onnx(tmp_path / "onnx", clone(model, spec), spec, example))
    x = next(batches(test_x, np.zeros(len(test_x), dtype=np.int64)))[0]
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-4)
    assert loaded.predict_uint8(test_x[:1])[0].shape == (1,)


def test_latency_is_the_median_of_timed_calls_after_the_warm_up():
    import time

    import numpy as np

    from components.compression.latency import latency_ms

    calls = []

    class Sleeper:
        """Takes at least 2 ms a call: the median cannot be below that, whatever the machine's load."""

        def predict_uint8(self, x):
            calls.append(len(x))
            time.sleep(0.002)

    median = latency_ms(Sleeper(), np.zeros((10, 28, 28, 1), np.uint8), batch=64, repeats=5, warmup=2)
    assert calls == [64] * 7  # 2 untimed warm-ups + 5 timed calls, the 10 images tiled to a batch of 64
    assert median >= 2.0
