"""Unit tests for components.data: sources, splitting, Parquet shards.

Everything runs on tiny files built in tmp_path; the one check against the real
Fashion-MNIST files is skipped when the Debian package is not installed.  No network.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.data import shards
from components.data.errors import DataError
from components.data.shards import (
    Manifest,
    decode_images,
    read_split,
    shape_from_schema,
    split_dataset,
    stratified_split,
    write_dataset,
)
from components.data.sources import (
    cifar10,
    digits,
    download_fashion_mnist,
    download_verified,
    fashion_mnist,
    image_folder,
    load_source,
    locate_fashion_mnist,
    parse_idx,
    read_idx,
)
from components.data.types import RawDataset, RawSplit

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
HAVE_DEBIAN = all((DEBIAN / f"{stem}.gz").is_file() for stem in FASHION_STEMS)
# Patch the module that defines the Fashion-MNIST reader (it looks these names up in its own
# globals); the package attribute components.data.sources.fashion_mnist is the function itself.
FASHION_MODULE = sys.modules[fashion_mnist.__module__]


# --------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    assert array.dtype == np.uint8
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True, level: int = 9) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, compresslevel=level) if gz else data)
    return path


def fake_fashion_dir(
    directory: Path, *, n_train: int = 20, n_test: int = 10, gz: bool = True, level: int = 9
) -> dict[str, np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(directory / (f"{stem}.gz" if gz else stem), array, gz=gz, level=level)
    return arrays


def toy_raw(n_per_class: int = 30, classes: tuple[str, ...] = ("a", "b", "c"), shape=(4, 5, 3)) -> RawDataset:
    labels = np.repeat(np.arange(len(classes)), n_per_class).astype(np.int64)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256  # make rows distinguishable
    return RawDataset(
        name="toy",
        classes=classes,
        splits={"all": RawSplit(images=images, labels=labels)},
        source="memory",
        fingerprint=hashlib.sha256(images.tobytes()).hexdigest(),
    )


# --------------------------------------------------------------------------- IDX / Fashion-MNIST


def test_parse_idx_reads_images_and_labels(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i.gz", images)), images)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l", labels, gz=False)), labels)
    np.testing.assert_array_equal(parse_idx(idx_bytes(images), name="mem"), images)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"xx", "trailing"),
        (lambda b: b"\x01\x02" + b[2:], "not an IDX file"),
        (lambda b: b[:2], "truncated"),
        (lambda b: b[:9], "truncated inside its header"),
    ],
)
def test_bad_idx_raises_naming_file(tmp_path, mangle, message):
    good = idx_bytes(np.zeros((3, 2, 2), np.uint8))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(mangle(good)))
    with pytest.raises(DataError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_truncated_gzip_raises_naming_file(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_fashion_mnist_from_explicit_dir(tmp_path):
    arrays = fake_fashion_dir(tmp_path / "fm")
    raw = fashion_mnist(str(tmp_path / "fm"))
    assert raw.name == "fashion_mnist"
    assert raw.classes[0] == "T-shirt/top" and raw.classes[-1] == "Ankle boot" and len(raw.classes) == 10
    assert set(raw.splits) == {"train", "test"}
    train = raw.splits["train"]
    assert train.images.shape == (20, 28, 28, 1) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.images[..., 0], arrays["train-images-idx3-ubyte"])
    assert len(raw.fingerprint) == 64


def test_fashion_fingerprint_is_content_not_compression(tmp_path):
    fake_fashion_dir(tmp_path / "a", level=9)
    fake_fashion_dir(tmp_path / "b", level=1)
    fake_fashion_dir(tmp_path / "c", gz=False)
    prints = {fashion_mnist(tmp_path / d).fingerprint for d in "abc"}
    assert len(prints) == 1


def test_locate_fashion_mnist_errors_and_env(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="not a directory") as err:
        locate_fashion_mnist(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)

    fake_fashion_dir(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        locate_fashion_mnist(tmp_path / "partial")

    fake_fashion_dir(tmp_path / "env" / "fashion-mnist")
    monkeypatch.setenv("VISIONRAY_DATA", str(tmp_path / "env"))
    assert locate_fashion_mnist(None) == tmp_path / "env" / "fashion-mnist"


def test_fashion_mnist_not_found_does_not_download(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONRAY_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(FASHION_MODULE, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(FASHION_MODULE, "download_fashion_mnist", lambda *a, **k: pytest.fail("must not download"))
    assert locate_fashion_mnist(None) is None
    with pytest.raises(DataError, match="allow downloading"):
        fashion_mnist(None)


def test_fashion_mnist_downloads_only_when_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONRAY_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(FASHION_MODULE, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    calls = []

    def fake_download(dest_dir):
        calls.append(Path(dest_dir))
        fake_fashion_dir(Path(dest_dir))
        return Path(dest_dir)

    monkeypatch.setattr(FASHION_MODULE, "download_fashion_mnist", fake_download)
    raw = fashion_mnist(None, allow_download=True)
    assert calls == [tmp_path / "cache" / "fashion-mnist"]
    assert len(raw.splits["train"]) == 20
    # The next call finds the cached copy and does not download again.
    fashion_mnist(None, allow_download=True)
    assert len(calls) == 1


@pytest.mark.skipif(not HAVE_DEBIAN, reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_debian_files():
    raw = fashion_mnist(str(DEBIAN))
    train, test = raw.splits["train"], raw.splits["test"]
    assert train.images.shape == (60000, 28, 28, 1)
    assert test.images.shape == (10000, 28, 28, 1)
    assert set(np.unique(train.labels)) == set(range(10)) == set(np.unique(test.labels))


# --------------------------------------------------------------------------- verified downloads


def test_download_verified_good_and_bad_hash(tmp_path):
    payload = b"hello visionray" * 100
    src = tmp_path / "src" / "blob.gz"
    src.parent.mkdir()
    src.write_bytes(gzip.compress(payload))
    url = src.as_uri()

    dest = tmp_path / "dl" / "blob.gz"
    good = hashlib.sha256(payload).hexdigest()
    assert download_verified(url, dest, digest=good, gunzip=True) == dest
    assert dest.read_bytes() == src.read_bytes()
    # An already-present verified file is reused without touching the URL.
    assert download_verified("file:///does/not/exist", dest, digest=good, gunzip=True) == dest

    raw_md5 = hashlib.md5(src.read_bytes()).hexdigest()
    assert download_verified(url, tmp_path / "dl2" / "b.gz", digest=raw_md5, algorithm="md5").is_file()

    bad_dest = tmp_path / "bad" / "blob.gz"
    with pytest.raises(DataError, match="failed verification") as err:
        download_verified(url, bad_dest, digest="0" * 64, gunzip=True)
    assert url in str(err.value)
    assert list((tmp_path / "bad").iterdir()) == []  # no final file, no .part left behind


def test_download_verified_missing_url(tmp_path):
    with pytest.raises(DataError, match="Could not download"):
        download_verified((tmp_path / "missing").as_uri(), tmp_path / "x", digest="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_download_fashion_mnist_rejects_wrong_content(tmp_path):
    fake_fashion_dir(tmp_path / "mirror")
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="failed verification") as err:
        download_fashion_mnist(dest, base_url=(tmp_path / "mirror").as_uri())
    assert "mirror" in str(err.value)
    assert not any(dest.iterdir())


@pytest.mark.skipif(not HAVE_DEBIAN, reason="Debian package dataset-fashion-mnist not installed")
def test_download_fashion_mnist_verifies_real_files(tmp_path):
    # file:// stands in for the Zalando mirror; the Debian copies have the official content.
    dest = download_fashion_mnist(tmp_path / "fm", base_url=DEBIAN.as_uri())
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in DEBIAN.iterdir())


# --------------------------------------------------------------------------- CIFAR-10


def make_cifar_tarball(
    path: Path, *, per_batch: int = 2, n_test: int = 3, drop: str | None = None, protocol: int = 2
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A cifar-10-python.tar.gz in the official layout (pickled dicts with bytes keys)."""
    rng = np.random.default_rng(3)
    members: dict[str, bytes] = {}
    arrays = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, n)]
        arrays[name] = (data, labels)
        batch = {b"batch_label": name.encode(), b"data": data, b"labels": labels}
        members[name] = pickle.dumps(batch, protocol=protocol)
    names = [f"class{i}".encode() for i in range(10)]
    members["batches.meta"] = pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=protocol)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            if name == drop:
                continue
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return arrays


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_fake_tarball(tmp_path, protocol):
    tarball = tmp_path / "cifar-10-python.tar.gz"
    arrays = make_cifar_tarball(tarball, protocol=protocol)
    raw = cifar10(str(tarball))
    assert raw.name == "cifar10" and raw.classes == tuple(f"class{i}" for i in range(10))
    train, test = raw.splits["train"], raw.splits["test"]
    assert train.images.shape == (10, 32, 32, 3) and test.images.shape == (3, 32, 32, 3)
    # Channel-planar rows: R plane, then G, then B, each 32x32 row-major.
    data, labels = arrays["data_batch_1"]
    y, x = 5, 7
    assert tuple(train.images[0, y, x]) == tuple(data[0, [y * 32 + x, 1024 + y * 32 + x, 2048 + y * 32 + x]])
    np.testing.assert_array_equal(train.labels[:2], labels)
    np.testing.assert_array_equal(test.labels, arrays["test_batch"][1])
    # A folder containing the tarball works too and gives the same content fingerprint.
    assert cifar10(tmp_path).fingerprint == raw.fingerprint


def test_cifar10_errors(tmp_path):
    make_cifar_tarball(tmp_path / "short.tar.gz", drop="data_batch_3")
    with pytest.raises(DataError, match="data_batch_3") as err:
        cifar10(tmp_path / "short.tar.gz")
    assert "short.tar.gz" in str(err.value)

    with pytest.raises(DataError, match="does not exist"):
        cifar10(tmp_path / "missing.tar.gz")

    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball at all")
    with pytest.raises(DataError, match="unreadable"):
        cifar10(tmp_path / "junk.tar.gz")


def test_cifar10_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    tarball = tmp_path / "evil.tar.gz"
    blob = pickle.dumps({b"data": Evil(), b"labels": []})
    with tarfile.open(tarball, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DataError, match="not a valid CIFAR-10 pickle"):
        cifar10(tarball)


def test_cifar10_url_is_verified_then_cached(tmp_path):
    src = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    src.parent.mkdir()
    make_cifar_tarball(src)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    raw = cifar10(src.as_uri(), cache_dir=tmp_path / "cache", md5=md5)
    assert (tmp_path / "cache" / "cifar-10-python.tar.gz").is_file()
    assert len(raw.splits["train"]) == 10

    with pytest.raises(DataError, match="failed verification"):
        cifar10(src.as_uri(), cache_dir=tmp_path / "cache2")  # official md5 != fake tarball
    assert not any((tmp_path / "cache2").iterdir())


# --------------------------------------------------------------------------- image folder


def save(img: Image.Image, path: Path, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt)
    return path


def noise(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(sum(size))
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


@pytest.fixture()
def messy_folder(tmp_path) -> Path:
    root = tmp_path / "images"
    save(noise((40, 30)), root / "cat" / "a.png", "PNG")
    save(noise((17, 64), "L"), root / "cat" / "b.JPG", "JPEG")
    save(noise((50, 20)), root / "dog" / "c.jpeg", "JPEG")
    save(noise((9, 9)).convert("RGBA"), root / "dog" / "d.png", "PNG")
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "corrupt.png").write_bytes(np.random.default_rng(0).bytes(300))
    truncated = io.BytesIO()
    noise((120, 120)).save(truncated, "JPEG", quality=95)
    (root / "cat" / "truncated.jpg").write_bytes(truncated.getvalue()[: len(truncated.getvalue()) // 2])
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    (root / ".hidden").mkdir()
    return root


def test_image_folder_decodes_resizes_and_quarantines(messy_folder):
    raw = image_folder(messy_folder, image_size=16, channels=3)
    assert raw.name == "image_folder" and raw.classes == ("cat", "dog")
    split = raw.splits["all"]
    assert split.images.shape == (4, 16, 16, 3) and split.images.dtype == np.uint8
    assert list(split.labels) == [0, 0, 1, 1]
    reasons = {Path(q.path).name: q.reason for q in raw.quarantine}
    assert set(reasons) == {"empty.png", "corrupt.png", "truncated.jpg"}
    assert "empty" in reasons["empty.png"]
    assert "not a decodable" in reasons["corrupt.png"]
    assert "truncated" in reasons["truncated.jpg"]
    assert all(Path(q.path).is_absolute() for q in raw.quarantine)

    grey = image_folder(messy_folder, image_size=8, channels=1)
    assert grey.splits["all"].images.shape == (4, 8, 8, 1)
    assert grey.fingerprint != raw.fingerprint  # resize settings are part of the version
    assert image_folder(messy_folder, image_size=16, channels=3).fingerprint == raw.fingerprint


def test_image_folder_size_limits_quarantine_before_decoding(messy_folder):
    raw = image_folder(messy_folder, image_size=8, channels=3, max_pixels=40 * 30 - 1)
    reasons = {Path(q.path).name: q.reason for q in raw.quarantine}
    assert "1200 pixels, over the 1199-pixel limit" in reasons["a.png"]
    assert len(raw.splits["all"]) == 3

    big = messy_folder / "dog" / "c.jpeg"
    raw = image_folder(messy_folder, image_size=8, channels=3, max_bytes=big.stat().st_size - 1)
    reasons = {Path(q.path).name: q.reason for q in raw.quarantine}
    assert "byte limit" in reasons["c.jpeg"]


def test_image_folder_empty_class_names_it(messy_folder):
    (messy_folder / "zebra").mkdir()
    (messy_folder / "zebra" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match="'zebra'"):
        image_folder(messy_folder, image_size=8, channels=3)


def test_image_folder_class_with_only_bad_files_names_it(tmp_path):
    save(noise((8, 8)), tmp_path / "ok" / "a.png", "PNG")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="'broken'.*quarantined"):
        image_folder(tmp_path, image_size=8, channels=3)


def test_image_folder_missing_or_flat_root(tmp_path):
    with pytest.raises(DataError) as err:
        image_folder(tmp_path / "nowhere", image_size=8, channels=3)
    assert str(tmp_path / "nowhere") in str(err.value)
    save(noise((8, 8)), tmp_path / "flat" / "a.png", "PNG")
    with pytest.raises(DataError, match="no class sub-folders"):
        image_folder(tmp_path / "flat", image_size=8, channels=3)
    with pytest.raises(DataError, match="channels"):
        image_folder(tmp_path / "flat", image_size=8, channels=2)


# --------------------------------------------------------------------------- digits / dispatch


def test_digits():
    raw = digits()
    split = raw.splits["all"]
    assert split.images.shape == (1797, 8, 8, 1) and split.images.dtype == np.uint8
    assert split.images.max() == 255 and raw.classes == tuple("0123456789")
    assert digits().fingerprint == raw.fingerprint


def test_load_source_dispatch(tmp_path, messy_folder):
    assert load_source("digits").name == "digits"
    fake_fashion_dir(tmp_path / "fm")
    assert load_source("fashion-mnist", path=tmp_path / "fm").name == "fashion_mnist"
    assert load_source("image_folder", path=messy_folder, image_size=8, channels=1).shape == (8, 8, 1)
    with pytest.raises(DataError, match="image_size and channels"):
        load_source("image_folder", path=messy_folder)
    with pytest.raises(DataError, match="fashion_mnist, cifar10, image_folder, digits"):
        load_source("imagenet")


# --------------------------------------------------------------------------- splitting


def test_stratified_split_proportions_and_determinism():
    labels = np.repeat(np.arange(4), [100, 50, 20, 10])
    a = stratified_split(labels, seed=7, val_fraction=0.2, test_fraction=0.1)
    b = stratified_split(labels, seed=7, val_fraction=0.2, test_fraction=0.1)
    c = stratified_split(labels, seed=8, val_fraction=0.2, test_fraction=0.1)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].dtype == np.int64
    assert not np.array_equal(a["val"], c["val"])
    everything = np.concatenate([a["train"], a["val"], a["test"]])
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(labels)))  # disjoint and complete
    for cls, n in enumerate([100, 50, 20, 10]):
        assert np.sum(labels[a["val"]] == cls) == round(0.2 * n)
        assert np.sum(labels[a["test"]] == cls) == round(0.1 * n)
    assert not np.all(np.diff(a["train"]) > 0)  # shuffled, so shards mix classes


def test_stratified_split_keeps_a_training_example_and_validates():
    split = stratified_split(np.array([0, 1, 1]), seed=0, val_fraction=0.5, test_fraction=0.4)
    assert set(np.asarray([0, 1, 1])[split["train"]]) == {0, 1}
    with pytest.raises(DataError, match="below 1"):
        stratified_split(np.zeros(5), seed=0, val_fraction=0.6, test_fraction=0.4)
    with pytest.raises(DataError, match="seed"):
        stratified_split(np.zeros(5), seed=-1, val_fraction=0.1, test_fraction=0.1)


def test_split_dataset_uses_official_test(tmp_path):
    fake_fashion_dir(tmp_path / "fm", n_train=100, n_test=30)
    raw = fashion_mnist(tmp_path / "fm")
    parts = split_dataset(raw, seed=0, val_fraction=0.2, test_fraction=0.5)
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (80, 20, 30)
    assert parts["test"] is raw.splits["test"]


# --------------------------------------------------------------------------- shards


def tree_state(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_write_dataset_then_cached_noop(tmp_path):
    raw = toy_raw()
    out = tmp_path / "out"
    manifest = write_dataset(raw, out, seed=3, val_fraction=0.2, test_fraction=0.1, rows_per_shard=25)
    assert not manifest.cached
    root = Path(manifest.root)
    assert root == out.resolve() / "toy" / manifest.version and len(manifest.version) == 16
    assert manifest.shape == (4, 5, 3) and manifest.classes == ("a", "b", "c")
    assert {k: v["rows"] for k, v in manifest.splits.items()} == {"train": 63, "val": 18, "test": 9}
    assert manifest.splits["train"]["files"] == [f"train/part-0000{i}.parquet" for i in range(3)]
    assert manifest.splits["val"]["class_counts"] == {"a": 6, "b": 6, "c": 6}
    assert sum(manifest.splits["train"]["class_counts"].values()) == 63
    assert (manifest.seed, manifest.val_fraction, manifest.test_fraction) == (3, 0.2, 0.1)

    schema = pq.read_schema(root / "train" / "part-00000.parquet")
    assert schema.field("image").type == pa.binary(4 * 5 * 3)
    assert schema.field("label").type == pa.int64() and schema.field("idx").type == pa.int64()
    assert shape_from_schema(schema) == (4, 5, 3)
    idx = pq.read_table(root / "train" / "part-00001.parquet").column("idx").to_pylist()
    assert idx == list(range(25, 50))

    before = tree_state(out)
    again = write_dataset(raw, out, seed=3, val_fraction=0.2, test_fraction=0.1, rows_per_shard=25)
    assert again.cached and again == manifest
    assert tree_state(out) == before  # nothing written, no temp folders left

    other = write_dataset(raw, out, seed=4, val_fraction=0.2, test_fraction=0.1)
    assert other.version != manifest.version and not other.cached


def test_read_split_round_trip_and_manifest_json(tmp_path):
    raw = toy_raw()
    manifest = write_dataset(raw, tmp_path, seed=1, val_fraction=0.2, test_fraction=0.2, rows_per_shard=7)
    expected = split_dataset(raw, seed=1, val_fraction=0.2, test_fraction=0.2)
    for name in ("train", "val", "test"):
        got = read_split(manifest, name)
        np.testing.assert_array_equal(got.images, expected[name].images)
        np.testing.assert_array_equal(got.labels, expected[name].labels)
        assert got.images.dtype == np.uint8 and got.labels.dtype == np.int64

    loaded = Manifest.load(Path(manifest.root) / "manifest.json")
    assert loaded == manifest and not loaded.cached
    assert "cached" not in json.loads(manifest.to_json())
    with pytest.raises(DataError, match="no split 'holdout'"):
        read_split(manifest, "holdout")


def test_manifest_follows_a_moved_dataset(tmp_path):
    manifest = write_dataset(toy_raw(), tmp_path / "a", seed=0, val_fraction=0.1, test_fraction=0.1)
    moved = tmp_path / "moved"
    os.rename(manifest.root, moved)
    loaded = Manifest.load(moved)
    assert loaded.root == str(moved.resolve())
    assert len(read_split(loaded, "val")) == loaded.splits["val"]["rows"]


def test_official_test_split_and_quarantine_in_manifest(tmp_path, messy_folder):
    fake_fashion_dir(tmp_path / "fm", n_train=50, n_test=10)
    fm = fashion_mnist(tmp_path / "fm")
    m1 = write_dataset(fm, tmp_path / "out", seed=0, val_fraction=0.2, test_fraction=0.1)
    assert m1.splits["test"]["rows"] == 10 and m1.test_fraction is None
    # test_fraction is ignored with an official test split, so it does not change the version.
    m2 = write_dataset(fm, tmp_path / "out", seed=0, val_fraction=0.2, test_fraction=0.3)
    assert m2.cached and m2.version == m1.version

    folder = image_folder(messy_folder, image_size=8, channels=1)
    m3 = write_dataset(folder, tmp_path / "out", seed=0, val_fraction=0.0, test_fraction=0.0)
    assert {Path(q["path"]).name for q in m3.quarantine} == {"empty.png", "corrupt.png", "truncated.jpg"}
    assert m3.splits["val"]["rows"] == 0 and read_split(m3, "val").images.shape == (0, 8, 8, 1)


def test_interrupted_write_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    raw = toy_raw()
    real = shards._write_split

    def failing(split, directory, schema, rows_per_shard):
        if directory.name == "test":
            raise KeyboardInterrupt
        return real(split, directory, schema, rows_per_shard)

    monkeypatch.setattr(shards, "_write_split", failing)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(raw, tmp_path, seed=0, val_fraction=0.1, test_fraction=0.1)
    assert list((tmp_path / "toy").iterdir()) == []

    monkeypatch.setattr(shards, "_write_split", real)
    manifest = write_dataset(raw, tmp_path, seed=0, val_fraction=0.1, test_fraction=0.1)
    assert not manifest.cached
    # A damaged version folder (shard deleted) is rewritten rather than trusted.
    Path(manifest.root, manifest.splits["train"]["files"][0]).unlink()
    assert not write_dataset(raw, tmp_path, seed=0, val_fraction=0.1, test_fraction=0.1).cached


# --------------------------------------------------------------------------- decode_images


def test_decode_images_accepts_arrow_and_numpy_batches():
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (6, 2, 3, 1), dtype=np.uint8)
    blobs = [img.tobytes() for img in images]
    arrow = pa.array(blobs, pa.binary(6))
    shape = (2, 3, 1)

    out = decode_images(arrow, shape)
    np.testing.assert_array_equal(out, images)
    assert not out.flags.writeable  # zero-copy view of the Arrow buffer
    np.testing.assert_array_equal(decode_images(arrow.slice(2, 3), shape), images[2:5])  # non-zero offset
    np.testing.assert_array_equal(decode_images(pa.chunked_array([arrow[:2], arrow[2:]]), shape), images)
    np.testing.assert_array_equal(decode_images(pa.table({"image": arrow}), shape), images)
    np.testing.assert_array_equal(decode_images(pa.array(blobs, pa.binary()), shape), images)
    np.testing.assert_array_equal(decode_images(np.array(blobs, dtype=object), shape), images)
    np.testing.assert_array_equal(decode_images(np.array(blobs), shape), images)  # 'S6' dtype
    np.testing.assert_array_equal(decode_images(blobs, shape), images)
    np.testing.assert_array_equal(decode_images(images.reshape(6, -1), shape), images)
    assert decode_images(np.array([], dtype=object), shape).shape == (0, 2, 3, 1)

    with pytest.raises(DataError, match="6 bytes"):
        decode_images(pa.array([b"x" * 5], pa.binary(5)), shape)
    with pytest.raises(DataError):
        decode_images(np.array([b"short", b"x" * 6], dtype=object), shape)
