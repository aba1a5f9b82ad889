"""Readers that turn an on-disk (or downloadable) image dataset into a ``RawDataset``, one file
per source, the way torchvision's datasets are laid out:

    fashion_mnist.py   Fashion-MNIST from its four IDX files (Debian package, a folder, or download)
    cifar10.py         CIFAR-10 from the official python tarball (a path or a URL)
    image_folder.py    your own PNG/JPEG images, one sub-folder per class
    digits.py          scikit-learn's bundled 8x8 digits
    austen.py          Jane Austen's six novels from Debian's r-cran-janeaustenr (text, for char LMs)
    text.py            your own UTF-8 text: a file or a folder of files (text, for char LMs)
    fashion_grid.py    captioned 2x2 grids of Fashion-MNIST items (images + captions, for captioning)
    coco_captions.py   a COCO-format caption file and its image folder (images + all their captions)
    shapes.py          procedural scenes of circles, squares, triangles (masks + boxes, for §11)
    common.py          what they share: the download cache and checksum-verified downloads

Every reader returns the same in-memory contract (see ``components.data.types``): uint8
images (N, H, W, C), int64 labels, class names, and a content fingerprint that the shard
writer uses as the dataset version.  Pick a source by name::

    from components.data.sources import load_source

    raw = load_source("fashion_mnist", path=None)          # Debian package / $VISIONRAY_DATA
    raw = load_source("cifar10", path="/data/cifar-10-python.tar.gz")
    raw = load_source("image_folder", path="/data/pets", image_size=64, channels=3)
    raw = load_source("digits")                              # bundled with scikit-learn
    raw = load_source("shapes", num_images=10_000, image_size=64, seed=0)   # generated, with masks + boxes
    raw.splits["train"].images.shape                         # (60000, 28, 28, 1)

or call a reader directly (``fashion_mnist``, ``cifar10``, ``image_folder``, ``digits``).
This package re-exports each file's public names, so ``from components.data.sources import X``
is the import to use; note that ``components.data.sources.fashion_mnist`` (and ``cifar10``,
``image_folder``, ``digits``, ``austen``, ``fashion_grid``, ``coco_captions``) is the reader
function, not its module.  A new source is a new file here, a name in ``KNOWN_SOURCES`` and a
branch in ``load_source``.

The two text readers return a ``TextCorpus`` (see ``components.data.text``) instead, and are
picked with ``load_text_source`` (``TEXT_SOURCES``)::

    corpus = load_text_source("austen")                     # Debian package / the cache
    corpus = load_text_source("text", path="~/books")       # a file or a folder of files
    corpus.characters                                        # about 4.0 M for Austen

The two caption readers return images with captions instead (``CaptionedImages``, ``CocoCaptions``)
and are called directly: ``fashion_grid("train", n=10_000)``, ``coco_captions(json, images_dir, 64)``.

Nothing here downloads unless asked: ``fashion_mnist(allow_download=True)`` or a URL
passed to ``cifar10``.  Downloads go to a temporary file, are checked against a known
checksum, and only then renamed into place, so a cache never holds a half file.

``image_size``/``channels`` only apply to ``image_folder``; the built-in datasets keep
their native shapes (28x28x1, 32x32x3, 8x8x1) and resizing is left to the model input.
"""

from __future__ import annotations

from pathlib import Path

from components.data.errors import DataError
from components.data.sources.austen import (
    DEBIAN_JANEAUSTENR_DIR,
    austen,
    locate_austen,
    read_rdb,
    unserialize,
)
from components.data.sources.cifar10 import (
    CIFAR10_CLASSES,
    CIFAR10_MD5,
    CIFAR10_URL,
    cifar10,
)
from components.data.sources.coco_captions import CocoCaptions, coco_captions
from components.data.sources.common import (
    default_cache_dir,
    download_verified,
    file_digest,
)
from components.data.sources.digits import digits
from components.data.sources.fashion_grid import (
    CaptionedImages,
    caption_for,
    fashion_grid,
)
from components.data.sources.fashion_mnist import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_URL,
    download_fashion_mnist,
    fashion_mnist,
    locate_fashion_mnist,
    parse_idx,
    read_idx,
)
from components.data.sources.image_folder import IMAGE_EXTENSIONS, image_folder
from components.data.sources.shapes import SHAPE_CLASSES, shapes
from components.data.sources.text import text_files
from components.data.text import TextCorpus
from components.data.types import RawDataset

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DEBIAN_FASHION_MNIST_DIR",
    "DEBIAN_JANEAUSTENR_DIR",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_URL",
    "IMAGE_EXTENSIONS",
    "SHAPE_CLASSES",
    "KNOWN_SOURCES",
    "TEXT_SOURCES",
    "CaptionedImages",
    "CocoCaptions",
    "austen",
    "caption_for",
    "cifar10",
    "coco_captions",
    "default_cache_dir",
    "digits",
    "download_fashion_mnist",
    "download_verified",
    "fashion_grid",
    "fashion_mnist",
    "file_digest",
    "image_folder",
    "load_source",
    "load_text_source",
    "locate_austen",
    "locate_fashion_mnist",
    "parse_idx",
    "read_idx",
    "read_rdb",
    "shapes",
    "text_files",
    "unserialize",
]

KNOWN_SOURCES = ("fashion_mnist", "cifar10", "image_folder", "digits", "shapes")
TEXT_SOURCES = ("austen", "text")


def load_source(
    name: str,
    *,
    path: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    allow_download: bool = False,
    num_images: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> RawDataset:
    """Read the source called ``name`` (one of ``KNOWN_SOURCES``; '-' and '_' are interchangeable).

    ``path`` is the folder/tarball/URL for the source; ``image_size`` and ``channels`` are
    required for ``image_folder`` and ignored by the fixed-shape built-in datasets. The generated
    sources (``shapes``) draw ``num_images`` scenes of ``image_size`` px from ``seed``, split by the
    two fractions.
    """
    key = name.strip().lower().replace("-", "_")
    if key == "fashion_mnist":
        return fashion_mnist(path, allow_download=allow_download)
    if key == "cifar10":
        return cifar10(path, allow_download=allow_download)
    if key == "digits":
        return digits()
    if key == "shapes":
        return shapes(num_images or 10_000, image_size or 64, seed, val_fraction, test_fraction)
    if key == "image_folder":
        if path is None:
            raise DataError("The image_folder source needs a path to a folder with one sub-folder per class.")
        if image_size is None or channels is None:
            raise DataError(f"The image_folder source at {path} needs both image_size and channels.")
        return image_folder(path, image_size, channels)
    raise DataError(f"Unknown data source {name!r}; known sources are {', '.join(KNOWN_SOURCES)}.")


def load_text_source(name: str, path: str | Path | None = None) -> TextCorpus:
    """Read the text source called ``name`` (one of ``TEXT_SOURCES``); ``path`` is required for "text"."""
    key = name.strip().lower()
    if key == "austen":
        return austen(path)
    if key == "text":
        if path is None:
            raise DataError("The text source needs a path to a UTF-8 file or a folder of files.")
        return text_files(path)
    raise DataError(f"Unknown text source {name!r}; known text sources are {', '.join(TEXT_SOURCES)}.")
