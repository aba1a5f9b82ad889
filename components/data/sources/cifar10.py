"""CIFAR-10 from the official python tarball ``cifar-10-python.tar.gz``: 50,000 train and
10,000 test colour 32x32 images in 10 classes.

    from components.data.sources import cifar10

    raw = cifar10("/data/cifar-10-python.tar.gz")   # the tarball, or a folder holding it
    raw = cifar10("https://mirror/cifar-10-python.tar.gz")  # downloaded, checked against the md5
    raw = cifar10(allow_download=True)              # $VISIONRAY_DATA, the cache, else the official URL
    raw.splits["train"].images.shape                # (50000, 32, 32, 3)

or from the command line: ``visionray run train data=cifar10 data.path=/data/cifar-10-python.tar.gz``.
The batches are read straight from the tar stream (nothing is extracted to disk) and
unpickled with an allow-list of numpy types, so a hostile tarball cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import posixpath
import tarfile
import urllib.parse
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from components.data.errors import DataError
from components.data.sources.common import default_cache_dir, download_verified
from components.data.types import RawDataset, RawSplit

__all__ = ["CIFAR10_CLASSES", "CIFAR10_MD5", "CIFAR10_URL", "cifar10"]

def _is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https", "ftp", "file")


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"{_CIFAR_DIR}/data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = f"{_CIFAR_DIR}/test_batch"
_CIFAR_META = f"{_CIFAR_DIR}/batches.meta"
_CIFAR_TARBALL = "cifar-10-python.tar.gz"


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only builds the few types a CIFAR batch contains.

    The official format is a pickle, and unpickling arbitrary data runs arbitrary code;
    allow-listing numpy's array reconstructors keeps a hostile tarball from doing that.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol < 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        with warnings.catch_warnings():
            # numpy 2 warns when old pickles reference numpy.core; the data is fine.
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _unpickle_member(data: bytes, member: str, tarball: Path) -> dict:
    try:
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means a bad member, whatever its type
        raise DataError(f"Member {member} of {tarball} is not a valid CIFAR-10 pickle ({err}).") from err
    if not isinstance(obj, dict):
        raise DataError(f"Member {member} of {tarball} is not a pickled dict.")
    return obj


def _cifar_batch(data: bytes, member: str, tarball: Path) -> RawSplit:
    batch = _unpickle_member(data, member, tarball)
    pixels, labels = batch.get(b"data"), batch.get(b"labels")
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.shape[1:] == (3072,)):
        raise DataError(f"Member {member} of {tarball} has no uint8 N x 3072 b'data' array.")
    if labels is None or len(labels) != len(pixels):
        raise DataError(f"Member {member} of {tarball} has {len(pixels)} images but a different number of labels.")
    # Rows are channel-planar (1024 R, then G, then B, each 32x32 row-major) -> NHWC.
    images = np.ascontiguousarray(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return RawSplit(images=images, labels=np.asarray(labels, dtype=np.int64))


def _resolve_cifar(
    path_or_url: str | Path | None, allow_download: bool, cache_dir: str | Path | None, md5: str | None
) -> Path:
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if path_or_url is None:
        candidates = [cache / _CIFAR_TARBALL]
        env = os.environ.get("VISIONRAY_DATA")
        if env:
            candidates.insert(0, Path(env).expanduser() / _CIFAR_TARBALL)
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        if not allow_download:
            raise DataError(
                f"CIFAR-10 tarball {_CIFAR_TARBALL} was not found in $VISIONRAY_DATA or {cache}; "
                "pass its path or URL, or allow downloading it."
            )
        path_or_url = CIFAR10_URL
    text = str(path_or_url)
    if _is_url(text):
        name = posixpath.basename(urllib.parse.urlparse(text).path) or _CIFAR_TARBALL
        dest = cache / name
        if md5 is None:
            raise DataError(f"Refusing to download {text} without an md5 checksum to verify it against.")
        return download_verified(text, dest, digest=md5, algorithm="md5")
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / _CIFAR_TARBALL
    if not path.is_file():
        raise DataError(f"CIFAR-10 tarball {path} does not exist.")
    return path


def cifar10(
    path_or_url: str | Path | None = None,
    *,
    allow_download: bool = False,
    cache_dir: str | Path | None = None,
    md5: str | None = CIFAR10_MD5,
) -> RawDataset:
    """CIFAR-10 from the official python tarball as ``{"train": 50000, "test": 10000}`` 32x32x3.

    ``path_or_url`` is the tarball, a folder holding ``cifar-10-python.tar.gz``, or a URL;
    a URL is downloaded into ``cache_dir`` (default ``default_cache_dir()``) and verified
    against ``md5`` (the official sum by default).  ``None`` looks in ``$VISIONRAY_DATA``
    and the cache, and downloads the official tarball only with ``allow_download=True``.
    Members are read straight from the tar stream; nothing is extracted to disk.
    """
    tarball = _resolve_cifar(path_or_url, allow_download, cache_dir, md5)
    wanted = {*_CIFAR_TRAIN, _CIFAR_TEST, _CIFAR_META}
    found: dict[str, bytes] = {}
    try:
        # One sequential pass: random access into a .gz tar would re-decompress from the start.
        with tarfile.open(tarball, "r:*") as tar:
            for member in tar:
                name = posixpath.normpath(member.name)
                if member.isfile() and name in wanted:
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        found[name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"CIFAR-10 tarball {tarball} is unreadable or truncated ({err}).") from err
    missing = sorted(wanted - set(found) - {_CIFAR_META})
    if missing:
        raise DataError(f"CIFAR-10 tarball {tarball} has no member {missing[0]}.")

    fingerprint = hashlib.sha256(b"cifar10:")
    for name in sorted(found):
        fingerprint.update(name.encode() + b"\0" + hashlib.sha256(found[name]).digest())

    classes = CIFAR10_CLASSES
    if _CIFAR_META in found:
        meta = _unpickle_member(found[_CIFAR_META], _CIFAR_META, tarball)
        names = meta.get(b"label_names")
        if names:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)

    train_parts = [_cifar_batch(found[m], m, tarball) for m in _CIFAR_TRAIN]
    train = RawSplit(
        images=np.concatenate([p.images for p in train_parts]),
        labels=np.concatenate([p.labels for p in train_parts]),
    )
    test = _cifar_batch(found[_CIFAR_TEST], _CIFAR_TEST, tarball)
    return RawDataset(
        name="cifar10",
        classes=classes,
        splits={"train": train, "test": test},
        source=str(path_or_url) if path_or_url is not None else str(tarball),
        fingerprint=fingerprint.hexdigest(),
    )
