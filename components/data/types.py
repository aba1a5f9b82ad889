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
* ``splits`` is either ``{"train", "test"}`` (the source ships an official test split),
  ``{"all"}`` (the splitter carves train/val/test out of it) or ``{"train", "val", "test"}``
  (a generated source that drew each split from its own seeds: kept as it is);
* every split has the same (H, W, C).

Dense targets (segmentation and detection sources: ``shapes``, ``fashion_scenes``,
``mask_folder``, ``coco``) ride along in the same split, all or nothing per dataset:

* ``masks`` uint8 (N, H, W): 0 background, ``k`` the class ``classes[k - 1]``, 255 ignored;
* ``boxes`` float32 (N, K, 4): ``x1, y1, x2, y2`` in pixels, continuous coordinates (a box
  covering pixel columns a..b has x1 = a and x2 = b + 1), rows past an image's objects zero;
* ``box_labels`` int64 (N, K): ``classes`` index of each box, -1 on the padding rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.data.errors import DataError

# The two split layouts a source may return; anything else is a bug in the source.
OFFICIAL_SPLITS = frozenset({"train", "test"})
UNSPLIT = frozenset({"all"})
PREMADE_SPLITS = frozenset({"train", "val", "test"})
#: Mask value a loss and the metrics skip (Pascal VOC's "void" border).
IGNORE_INDEX = 255


@dataclass(frozen=True)
class RawSplit:
    """One split held in memory: images (N, H, W, C) uint8 and labels (N,) int64; dense sources add
    ``masks`` (N, H, W) uint8 and/or ``boxes`` (N, K, 4) float32 with ``box_labels`` (N, K) int64."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    boxes: np.ndarray | None = None
    box_labels: np.ndarray | None = None

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
        self._check_targets()

    def _check_targets(self) -> None:
        n, h, w = self.images.shape[:3]
        if self.masks is not None and (self.masks.dtype != np.uint8 or self.masks.shape != (n, h, w)):
            raise DataError(f"RawSplit masks must be uint8 with shape {(n, h, w)}, "
                            f"got {self.masks.dtype} with shape {self.masks.shape}.")
        if (self.boxes is None) != (self.box_labels is None):
            raise DataError("RawSplit needs boxes and box_labels together.")
        if self.boxes is not None and self.box_labels is not None:
            if self.boxes.dtype != np.float32 or self.boxes.ndim != 3 or self.boxes.shape[::2] != (n, 4):
                raise DataError(f"RawSplit boxes must be float32 with shape ({n}, K, 4), "
                                f"got {self.boxes.dtype} with shape {self.boxes.shape}.")
            if self.box_labels.dtype != np.int64 or self.box_labels.shape != self.boxes.shape[:2]:
                raise DataError(f"RawSplit box_labels must be int64 with shape {self.boxes.shape[:2]}, "
                                f"got {self.box_labels.dtype} with shape {self.box_labels.shape}.")

    def take(self, idx: np.ndarray) -> "RawSplit":
        """The rows ``idx``, targets included."""
        return RawSplit(self.images[idx], self.labels[idx], *(None if a is None else a[idx] for a in
                                                              (self.masks, self.boxes, self.box_labels)))

    @property
    def targets(self) -> tuple[str, ...]:
        """Which dense targets this split carries: ("mask",), ("boxes",), both, or ()."""
        return (("mask",) if self.masks is not None else ()) + (("boxes",) if self.boxes is not None else ())

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

    def __post_init__(self) -> None:
        keys = frozenset(self.splits)
        if keys not in (OFFICIAL_SPLITS, UNSPLIT, PREMADE_SPLITS):
            raise DataError(
                f"RawDataset {self.name!r} must have splits {{'train', 'test'}}, {{'all'}} or "
                f"{{'train', 'val', 'test'}}, "
                f"got {sorted(keys)}."
            )
        shapes = {split.shape for split in self.splits.values()}
        if len(shapes) != 1:
            raise DataError(
                f"RawDataset {self.name!r} has splits with different image shapes {sorted(shapes)}."
            )
        if len({split.targets for split in self.splits.values()}) != 1:
            raise DataError(f"RawDataset {self.name!r} has splits with different dense targets.")
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
        """True when the source ships its own test split (then at most val is carved out)."""
        return "test" in self.splits

    @property
    def premade(self) -> bool:
        """True when the source made all three splits itself (nothing is carved out)."""
        return frozenset(self.splits) == PREMADE_SPLITS

    @property
    def targets(self) -> tuple[str, ...]:
        """The dense targets every split carries (see :attr:`RawSplit.targets`)."""
        return next(iter(self.splits.values())).targets
