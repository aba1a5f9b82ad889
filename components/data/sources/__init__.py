"""Readers that turn an on-disk (or downloadable) image dataset into a ``RawDataset``.

Every reader returns the same in-memory contract (see ``components.data.types``): uint8
images (N, H, W, C), int64 labels, class names, and a content fingerprint that the shard
writer uses as the dataset version.  Pick a source by name::

    from components.data.sources import load_source

    raw = load_source("fashion_mnist", path=None)          # Debian package / $VISIONRAY_DATA
    raw = load_source("cifar10", path="/data/cifar-10-python.tar.gz")
    raw = load_source("image_folder", path="/data/pets", image_size=64, channels=3)
    raw = load_source("digits")                              # bundled with scikit-learn
    raw.splits["train"].images.shape                         # (60000, 28, 28, 1)

or call a reader directly (``fashion_mnist``, ``cifar10``, ``image_folder``, ``digits``).

Nothing here downloads unless asked: ``fashion_mnist(allow_download=True)`` or a URL
passed to ``cifar10``.  Downloads go to a temporary file, are checked against a known
checksum, and only then renamed into place, so a cache never holds a half file.

``image_size``/``channels`` only apply to ``image_folder``; the built-in datasets keep
their native shapes (28x28x1, 32x32x3, 8x8x1) and resizing is left to the model input.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import posixpath
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageFile, ImageOps

from components.data.errors import DataError
from components.data.types import Quarantined, RawDataset, RawSplit

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_URL",
    "IMAGE_EXTENSIONS",
    "KNOWN_SOURCES",
    "cifar10",
    "default_cache_dir",
    "digits",
    "download_fashion_mnist",
    "download_verified",
    "fashion_mnist",
    "file_digest",
    "image_folder",
    "load_source",
    "locate_fashion_mnist",
    "parse_idx",
    "read_idx",
]

KNOWN_SOURCES = ("fashion_mnist", "cifar10", "image_folder", "digits")

_CHUNK = 1 << 20


# --------------------------------------------------------------------------- helpers


def default_cache_dir() -> Path:
    """Where downloads land when no directory is given: ``$VISIONRAY_DATA`` or ``~/.cache/visionray``."""
    env = os.environ.get("VISIONRAY_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "visionray"


def file_digest(path: str | Path, algorithm: str = "sha256", *, gunzip: bool = False) -> str:
    """Hex digest of a file's bytes, or of its gunzipped payload when ``gunzip=True``.

    Hashing the payload rather than the .gz bytes matters for Fashion-MNIST: the Debian
    package re-compressed the official files, so the .gz bytes differ while the IDX
    content is identical.
    """
    digest = hashlib.new(algorithm)
    path = Path(path)
    try:
        opener: Callable[[], Any] = (lambda: gzip.open(path, "rb")) if gunzip else (lambda: path.open("rb"))
        with opener() as stream:
            for block in iter(lambda: stream.read(_CHUNK), b""):
                digest.update(block)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"Could not read {path} to check its {algorithm} checksum ({err}).") from err
    return digest.hexdigest()


def download_verified(
    url: str,
    dest: str | Path,
    *,
    digest: str,
    algorithm: str = "sha256",
    gunzip: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` and keep it only if its checksum equals ``digest``.

    The bytes go to a hidden temp file next to ``dest`` and are renamed into place only
    after the hash matches, so an interrupted or tampered download never leaves a file
    that later looks valid.  An existing ``dest`` that already verifies is reused.
    ``file://`` URLs work too (handy for mirrors and tests).
    """
    dest = Path(dest)
    if dest.is_file() and file_digest(dest, algorithm, gunzip=gunzip) == digest:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    shutil.copyfileobj(response, out, _CHUNK)
            except (urllib.error.URLError, OSError, ValueError) as err:
                raise DataError(f"Could not download {url} ({err}).") from err
            out.flush()
            os.fsync(out.fileno())
        try:
            actual = file_digest(tmp, algorithm, gunzip=gunzip)
        except DataError as err:
            raise DataError(f"Download of {url} is not a valid gzip file ({err.__cause__}).") from err
        if actual != digest:
            what = f"{algorithm} of the gunzipped content" if gunzip else algorithm
            raise DataError(
                f"Download of {url} failed verification: expected {what} {digest}, got {actual}."
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https", "ftp", "file")


# --------------------------------------------------------------------------- IDX / Fashion-MNIST

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


# --------------------------------------------------------------------------- CIFAR-10

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


# --------------------------------------------------------------------------- image folder

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000
# Only these decoders are ever run on user files: smaller attack surface than "anything
# Pillow can open" (some formats shell out to external programs).
_DECODERS = ("PNG", "JPEG")


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to L (channels=1) or RGB (channels=3)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: Pillow's convert("L") clips at 255 (mostly white); keep the top byte.
        arr = np.asarray(img).astype(np.int64).clip(0, 65535) >> 8
        img = Image.fromarray(arr.astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.asarray(img).clip(0, 255).astype(np.uint8), "L")
    # Alpha is dropped (Pillow's default), not composited.
    return img.convert("L" if channels == 1 else "RGB")


def _load_image(data: bytes, image_size: int, channels: int, max_pixels: int) -> np.ndarray | str:
    """Decoded, converted, resized HxWxC uint8 array, or the reason the file is unusable."""
    # Truncated files must fail, not be padded with grey; set here so an import elsewhere
    # that flips the global cannot make us accept them.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            # We enforce our own (lower) pixel limit below; Pillow's warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_DECODERS) as img:
                width, height = img.size  # header only: nothing decoded yet
                if width * height > max_pixels:
                    pixels = width * height
                    return f"image is {width}x{height} = {pixels} pixels, over the {max_pixels}-pixel limit"
                img.load()
                out = ImageOps.exif_transpose(img) or img  # honour camera rotation
                out = _to_mode(out, channels)
                out = out.resize((image_size, image_size), Image.Resampling.BILINEAR)
                arr = np.asarray(out, dtype=np.uint8)
    except Image.DecompressionBombError as err:
        return f"image exceeds Pillow's decompression-bomb limit ({err})"
    except Image.UnidentifiedImageError:
        return "not a decodable PNG or JPEG image"
    except Exception as err:  # decoders raise many types; none of them may kill the run
        return f"cannot decode image ({type(err).__name__}: {err})"
    return arr[..., np.newaxis] if arr.ndim == 2 else arr


def image_folder(
    root: str | Path,
    image_size: int,
    channels: int,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> RawDataset:
    """Images in ``root/<class>/...`` resized to ``image_size`` squared with ``channels`` (1 or 3).

    Classes are the sorted sub-folder names (hidden folders skipped); files with a
    .png/.jpg/.jpeg extension are read recursively, other files are ignored.  Unusable
    files (empty, undecodable, truncated, over ``max_bytes`` or ``max_pixels``) are not
    fatal: they are listed in ``quarantine`` with a reason.  Returns ``{"all": ...}``.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}.")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a directory.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"Image folder {root} has no class sub-folders (expected one folder per class).")

    # The output depends on the resize settings as well as the bytes, so they are part of
    # the fingerprint: changing image_size must produce a new dataset version.
    fingerprint = hashlib.sha256(f"image_folder:v1:{image_size}:{channels}:bilinear:".encode())
    images: list[np.ndarray] = []
    labels: list[int] = []
    quarantine: list[Quarantined] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
            and p.is_file()
        )
        usable = 0
        first_reason = ""
        for file in files:
            fingerprint.update(file.relative_to(root).as_posix().encode() + b"\0")
            result = _read_and_decode(file, image_size, channels, max_bytes, max_pixels, fingerprint)
            if isinstance(result, str):
                quarantine.append(Quarantined(path=str(file), reason=result))
                first_reason = first_reason or result
            else:
                images.append(result)
                labels.append(label)
                usable += 1
        if usable == 0:
            detail = (
                f"all {len(files)} image files were quarantined, e.g. {first_reason}"
                if files
                else "it contains no .png/.jpg/.jpeg files"
            )
            raise DataError(f"Class {class_dir.name!r} in {root} has no usable images: {detail}.")
    split = RawSplit(images=np.stack(images), labels=np.asarray(labels, dtype=np.int64))
    return RawDataset(
        name="image_folder",
        classes=tuple(p.name for p in class_dirs),
        splits={"all": split},
        source=str(root.resolve()),
        fingerprint=fingerprint.hexdigest(),
        quarantine=tuple(quarantine),
    )


def _read_and_decode(
    file: Path, image_size: int, channels: int, max_bytes: int, max_pixels: int, fingerprint: Any
) -> np.ndarray | str:
    try:
        size = file.stat().st_size
    except OSError as err:
        return f"cannot read file ({err})"
    fingerprint.update(str(size).encode() + b"\0")
    if size == 0:
        return "empty file (0 bytes)"
    if size > max_bytes:
        # Not read at all: the size check protects memory, so the size stands in for content.
        return f"file is {size} bytes, over the {max_bytes}-byte limit"
    try:
        data = file.read_bytes()
    except OSError as err:
        return f"cannot read file ({err})"
    fingerprint.update(hashlib.sha256(data).digest())
    return _load_image(data, image_size, channels, max_pixels)


# --------------------------------------------------------------------------- digits


def digits() -> RawDataset:
    """scikit-learn's bundled 8x8 digits (1797 images, no download) as ``{"all": ...}``."""
    from sklearn import (
        __version__ as sklearn_version,  # imported lazily: sklearn is slow to import
    )
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16 intensities; stretch them to the usual 0..255 byte range.
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., np.newaxis]
    labels = bunch.target.astype(np.int64)
    fingerprint = hashlib.sha256(b"digits:" + images.tobytes() + labels.tobytes()).hexdigest()
    return RawDataset(
        name="digits",
        classes=tuple(str(d) for d in range(10)),
        splits={"all": RawSplit(images=images, labels=labels)},
        source=f"sklearn.datasets.load_digits (scikit-learn {sklearn_version})",
        fingerprint=fingerprint,
    )


# --------------------------------------------------------------------------- dispatch


def load_source(
    name: str,
    *,
    path: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    allow_download: bool = False,
) -> RawDataset:
    """Read the source called ``name`` (one of ``KNOWN_SOURCES``; '-' and '_' are interchangeable).

    ``path`` is the folder/tarball/URL for the source; ``image_size`` and ``channels`` are
    required for ``image_folder`` and ignored by the fixed-shape built-in datasets.
    """
    key = name.strip().lower().replace("-", "_")
    if key == "fashion_mnist":
        return fashion_mnist(path, allow_download=allow_download)
    if key == "cifar10":
        return cifar10(path, allow_download=allow_download)
    if key == "digits":
        return digits()
    if key == "image_folder":
        if path is None:
            raise DataError("The image_folder source needs a path to a folder with one sub-folder per class.")
        if image_size is None or channels is None:
            raise DataError(f"The image_folder source at {path} needs both image_size and channels.")
        return image_folder(path, image_size, channels)
    raise DataError(f"Unknown data source {name!r}; known sources are {', '.join(KNOWN_SOURCES)}.")
