"""Plain in-memory containers that every data source returns.

A source (``components.data.sources``) reads some on-disk format and hands back a
``RawDataset``; the shard writer (``components.data.shards``) turns it into versioned
Parquet.  Keeping this contract small and strict means the writer never has to care where
the pixels came from::

    import numpy as np
    from components.data.types import RawDataset, RawSplit

    split = RawSplit(images=np.zeros((2, 8, 8, 1), np.uint8), labels=np.array([0, 1]))
    raw = RawDataset(name="toy", classes=("a", "b"), splits={"all": split},
                     source="memory", fingerprint="0" * 64)
    raw.shape        # (8, 8, 1)

Invariants (checked on construction, so a buggy source fails loudly and early):

* ``images`` is uint8 with shape (N, H, W, C) -- always a channel axis, C=1 for grey;
* ``labels`` is int64 with shape (N,), each in ``range(len(classes))``;
* ``splits`` is either ``{"train", "test"}`` (the source ships an official test split)
  or ``{"all"}`` (the splitter carves train/val/test out of it);
* every split has the same (H, W, C).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.data.errors import DataError

# The two split layouts a source may return; anything else is a bug in the source.
OFFICIAL_SPLITS = frozenset({"train", "test"})
UNSPLIT = frozenset({"all"})


@dataclass(frozen=True)
class RawSplit:
    """One split held in memory: images (N, H, W, C) uint8 and labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"RawSplit images must be uint8 with shape (N, H, W, C), "
                f"got {self.images.dtype} with shape {self.images.shape}."
            )
        if self.labels.dtype != np.int64 or self.labels.ndim != 1:
            raise DataError(
                f"RawSplit labels must be int64 with shape (N,), "
                f"got {self.labels.dtype} with shape {self.labels.shape}."
            )
        if len(self.images) != len(self.labels):
            raise DataError(
                f"RawSplit has {len(self.images)} images but {len(self.labels)} labels."
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image shape (H, W, C)."""
        h, w, c = self.images.shape[1:]
        return int(h), int(w), int(c)


@dataclass(frozen=True)
class Quarantined:
    """An input file that was skipped, and why; kept so nothing disappears silently."""

    path: str
    reason: str


@dataclass(frozen=True)
class RawDataset:
    """A whole source dataset in memory, plus what is needed to version it.

    ``fingerprint`` is a sha256 hex digest of the source *content* (not paths or mtimes),
    so re-reading identical data from a different location yields the same dataset
    version, and any change to the data yields a new one.
    """

    name: str
    classes: tuple[str, ...]
    splits: dict[str, RawSplit]
    source: str
    fingerprint: str
    quarantine: tuple[Quarantined, ...] = ()
    #: entries found but not read (other formats, hidden files, symlinks leaving the folder), each with why
    skipped: tuple[Quarantined, ...] = ()

    def __post_init__(self) -> None:
        keys = frozenset(self.splits)
        if keys not in (OFFICIAL_SPLITS, UNSPLIT):
            raise DataError(
                f"RawDataset {self.name!r} must have splits {{'train', 'test'}} or {{'all'}}, "
                f"got {sorted(keys)}."
            )
        shapes = {split.shape for split in self.splits.values()}
        if len(shapes) != 1:
            raise DataError(
                f"RawDataset {self.name!r} has splits with different image shapes {sorted(shapes)}."
            )
        n_classes = len(self.classes)
        for split_name, split in self.splits.items():
            if len(split) and (split.labels.min() < 0 or split.labels.max() >= n_classes):
                raise DataError(
                    f"RawDataset {self.name!r} split {split_name!r} has labels outside "
                    f"0..{n_classes - 1} for its {n_classes} classes."
                )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image shape (H, W, C), shared by all splits."""
        return next(iter(self.splits.values())).shape

    @property
    def has_official_test(self) -> bool:
        """True when the source ships its own test split (then only val is carved out)."""
        return "test" in self.splits
