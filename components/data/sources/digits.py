"""scikit-learn's bundled handwritten digits: 1,797 greyscale 8x8 images of 0-9, no download.

    from components.data.sources import digits

    raw = digits()
    raw.splits["all"].images.shape  # (1797, 8, 8, 1), pixels stretched from 0..16 to 0..255

or from the command line: ``visionray run train data=digits``.  Tiny and offline, it is
what the tests and smoke runs use.  scikit-learn is imported only when it is called.
"""

from __future__ import annotations

import hashlib

import numpy as np

from components.data.types import RawDataset, RawSplit

__all__ = ["digits"]


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
