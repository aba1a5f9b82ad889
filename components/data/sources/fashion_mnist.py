"""Fashion-MNIST (Zalando, MIT licence) from its four IDX files: 60,000 train and 10,000 test
greyscale 28x28 images in 10 clothing classes.

    from components.data.sources import fashion_mnist, locate_fashion_mnist

    raw = fashion_mnist()                       # found in $VISIONRAY_DATA, Debian's package or the cache
    raw = fashion_mnist("/data/fashion-mnist")  # a folder with the four files, .gz or gunzipped
    raw = fashion_mnist(allow_download=True)    # download the official files if none are found
    raw.splits["train"].images.shape            # (60000, 28, 28, 1)

or from the command line: ``visionray run quickstart stages=[ingest]`` (add
``data.path=DIR`` or ``data.allow_download=true``).  The files come from Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``) or Zalando's
mirror; downloads are checked against the sha256 of the gunzipped IDX content, so the
Debian and the official copies are the same dataset version.  ``read_idx``/``parse_idx``
read any IDX file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from components.data.errors import DataError
from components.data.sources.common import default_cache_dir, download_verified
from components.data.types import RawDataset, RawSplit

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_URL",
    "download_fashion_mnist",
    "fashion_mnist",
    "locate_fashion_mnist",
    "parse_idx",
    "read_idx",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# sha256 and size of the *uncompressed* IDX payloads.  Computed from the Debian package
# dataset-fashion-mnist; they equal the payloads of Zalando's official .gz files (whose
# published md5s are for the .gz bytes and do NOT match the Debian re-compressed copies),
# which is why downloads are verified on content, not on the .gz bytes.
_FASHION_FILES: dict[str, tuple[str, str, str, int]] = {
    # stem: (split, kind, sha256 of gunzipped content, gunzipped size)
    "train-images-idx3-ubyte": (
        "train", "images", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016,
    ),
    "train-labels-idx1-ubyte": (
        "train", "labels", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008,
    ),
    "t10k-images-idx3-ubyte": (
        "test", "images", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016,
    ),
    "t10k-labels-idx1-ubyte": (
        "test", "labels", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008,
    ),
}

# IDX type codes (http://yann.lecun.com/exdb/mnist/); multi-byte types are big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes_maybe_gzip(path: Path) -> bytes:
    """File content, transparently gunzipped when it starts with the gzip magic."""
    try:
        with path.open("rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
        if gzipped:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"Compressed file {path} is truncated or corrupt ({err}).") from err
    except OSError as err:
        raise DataError(f"Could not read {path} ({err}).") from err


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (magic, dims, payload) into a read-only array; ``name`` is used in errors."""
    if len(data) < 4:
        raise DataError(f"IDX file {name} is truncated: it has only {len(data)} bytes.")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"File {name} is not an IDX file (bad magic number 0x{data[:4].hex()}).")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {name} is truncated inside its header.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    count = int(np.prod(dims, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"IDX file {name} {problem}: its header promises {expected} bytes but it has {len(data)}."
        )
    # frombuffer is zero-copy; the array is read-only, which is what a raw source should be.
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) with magic-number and size checks."""
    path = Path(path)
    return parse_idx(_read_bytes_maybe_gzip(path), name=str(path))


def _fashion_file(directory: Path, stem: str) -> Path | None:
    # Accept the official .gz name or an already-gunzipped copy.
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _fashion_files(directory: Path) -> dict[str, Path]:
    return {stem: p for stem in _FASHION_FILES if (p := _fashion_file(directory, stem)) is not None}


def locate_fashion_mnist(path: str | Path | None = None) -> Path | None:
    """Find a directory holding the four Fashion-MNIST IDX files, or None.

    Order: explicit ``path`` (must be complete, else DataError), ``$VISIONRAY_DATA`` or its
    ``fashion-mnist`` sub-folder, the Debian package dir ``/usr/share/datasets/fashion-mnist``,
    and the download cache ``<default_cache_dir()>/fashion-mnist``.
    """
    if path is not None:
        directory = Path(path).expanduser()
        if not directory.is_dir():
            raise DataError(f"Fashion-MNIST path {directory} is not a directory.")
        missing = sorted(set(_FASHION_FILES) - set(_fashion_files(directory)))
        if missing:
            names = ", ".join(f"{m}.gz" for m in missing)
            raise DataError(f"Fashion-MNIST folder {directory} is missing {names}.")
        return directory
    candidates: list[Path] = []
    env = os.environ.get("VISIONRAY_DATA")
    if env:
        candidates += [Path(env).expanduser(), Path(env).expanduser() / "fashion-mnist"]
    candidates += [DEBIAN_FASHION_MNIST_DIR, default_cache_dir() / "fashion-mnist"]
    for directory in candidates:
        # Implicit locations that are only partly filled (e.g. an interrupted download)
        # are skipped rather than fatal: the next candidate or a download may complete them.
        if directory.is_dir() and len(_fashion_files(directory)) == len(_FASHION_FILES):
            return directory
    return None


def download_fashion_mnist(dest_dir: str | Path, *, base_url: str = FASHION_MNIST_URL) -> Path:
    """Download the four official Fashion-MNIST .gz files into ``dest_dir``, verified.

    Each file is checked against the sha256 of its gunzipped IDX content (see
    ``_FASHION_FILES``); files already present and valid are not fetched again.
    """
    dest_dir = Path(dest_dir).expanduser()
    if not base_url.endswith("/"):
        base_url += "/"
    for stem, (_, _, sha256, _) in _FASHION_FILES.items():
        download_verified(base_url + f"{stem}.gz", dest_dir / f"{stem}.gz", digest=sha256, gunzip=True)
    return dest_dir


def fashion_mnist(
    path: str | Path | None = None,
    *,
    allow_download: bool = False,
    download_dir: str | Path | None = None,
) -> RawDataset:
    """Fashion-MNIST as ``{"train": 60000, "test": 10000}`` images of 28x28x1.

    Looks for the files with ``locate_fashion_mnist(path)``; downloads them into
    ``download_dir`` (default ``<default_cache_dir()>/fashion-mnist``) only when nothing
    is found and ``allow_download=True``.
    """
    directory = locate_fashion_mnist(path)
    if directory is None:
        if not allow_download:
            raise DataError(
                "Fashion-MNIST was not found in $VISIONRAY_DATA, "
                f"{DEBIAN_FASHION_MNIST_DIR} or {default_cache_dir() / 'fashion-mnist'}; "
                "pass its folder as the path or allow downloading it."
            )
        directory = download_fashion_mnist(download_dir or default_cache_dir() / "fashion-mnist")

    files = _fashion_files(directory)
    fingerprint = hashlib.sha256(b"fashion_mnist:")
    arrays: dict[tuple[str, str], np.ndarray] = {}
    for stem in sorted(_FASHION_FILES):
        split, kind, _, _ = _FASHION_FILES[stem]
        data = _read_bytes_maybe_gzip(files[stem])
        # Fingerprint the IDX content, not the .gz bytes: the same data re-compressed
        # (Debian vs. Zalando) must map to the same dataset version.
        fingerprint.update(stem.encode() + b"\0" + hashlib.sha256(data).digest())
        array = parse_idx(data, name=str(files[stem]))
        want_ndim = 3 if kind == "images" else 1
        if array.ndim != want_ndim or array.dtype != np.uint8:
            raise DataError(
                f"IDX file {files[stem]} holds {array.dtype} with shape {array.shape}, "
                f"expected uint8 {kind} with {want_ndim} dimension(s)."
            )
        arrays[(split, kind)] = array

    splits: dict[str, RawSplit] = {}
    for split in ("train", "test"):
        images, labels = arrays[(split, "images")], arrays[(split, "labels")]
        stem = "train" if split == "train" else "t10k"
        if len(images) != len(labels):
            raise DataError(
                f"Fashion-MNIST {split} files in {directory} disagree: "
                f"{len(images)} images but {len(labels)} labels."
            )
        if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(
                f"IDX file {files[f'{stem}-labels-idx1-ubyte']} has label {int(labels.max())}, "
                f"outside 0..{len(FASHION_MNIST_CLASSES) - 1}."
            )
        splits[split] = RawSplit(images=images[..., np.newaxis], labels=labels.astype(np.int64))
    return RawDataset(
        name="fashion_mnist",
        classes=FASHION_MNIST_CLASSES,
        splits=splits,
        source=str(directory),
        fingerprint=fingerprint.hexdigest(),
    )
