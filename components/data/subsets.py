"""A class subset of a ``RawDataset``: the transfer-learning demo's "classes 0-4" and "classes 5-9".

    raw = load_source("fashion_mnist")
    first_half = subset_classes(raw, ["0", "1", "2", "3", "4"])      # or class names
    first_half.classes   # ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat'), labels 0..4

The subset's fingerprint hashes the source fingerprint with the kept classes, so it is a dataset
version of its own (write_dataset versions it like any source) and the full set keeps its version.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Sequence

import numpy as np

from components.data.errors import DataError
from components.data.types import RawDataset, RawSplit


def class_indices(classes: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """``wanted`` (indices as text, or class names) → source class indices, in the given order."""
    out = []
    for w in wanted:
        w = str(w).strip()
        if w.isdigit() and int(w) < len(classes):
            out.append(int(w))
        elif w in classes:
            out.append(classes.index(w))
        else:
            raise DataError(f"data.classes names {w!r}, which is neither an index below {len(classes)} nor one "
                            f"of the classes {', '.join(classes)}.")
    if len(set(out)) != len(out):
        raise DataError(f"data.classes names a class twice: {list(wanted)}.")
    return out


def subset_classes(raw: RawDataset, wanted: Sequence[str]) -> RawDataset:
    """Only the rows of the ``wanted`` classes, relabelled 0..k-1 in the order given."""
    if raw.targets:  # masks and boxes would keep naming the dropped classes
        raise DataError(f"data.classes picks classes of a classification dataset; {raw.name} carries "
                        f"{' and '.join(raw.targets)} targets of every class, so it cannot be subset.")
    keep = class_indices(list(raw.classes), wanted)
    lookup = np.full(len(raw.classes), -1, dtype=np.int64)
    lookup[keep] = np.arange(len(keep))
    splits = {}
    for name, split in raw.splits.items():
        mask = lookup[split.labels] >= 0
        splits[name] = RawSplit(images=split.images[mask], labels=lookup[split.labels[mask]])
    fingerprint = hashlib.sha256(f"{raw.fingerprint}\nclasses={keep}".encode()).hexdigest()
    return replace(raw, classes=tuple(raw.classes[i] for i in keep), splits=splits, fingerprint=fingerprint)
