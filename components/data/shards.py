"""Split a ``RawDataset`` into train/val/test and store it as versioned Parquet shards.

Layout written by ``write_dataset``::

    <out_root>/<name>/<version>/manifest.json
    <out_root>/<name>/<version>/train/part-00000.parquet ...
    <out_root>/<name>/<version>/val/part-00000.parquet ...
    <out_root>/<name>/<version>/test/part-00000.parquet ...

``version`` is derived from the source content fingerprint, the split parameters and the
schema version, so the same inputs always land in the same folder and a second ingest is
a no-op::

    from pathlib import Path
    from components.data.sources import load_source
    from components.data.shards import read_split, write_dataset, Manifest

    raw = load_source("digits")
    manifest = write_dataset(raw, Path("data"), seed=0, val_fraction=0.1, test_fraction=0.1)
    manifest.cached                      # False the first time, True afterwards
    train = read_split(manifest, "train")  # RawSplit, images (N, 8, 8, 1) uint8
    same = Manifest.load(Path(manifest.root) / "manifest.json")

Parquet schema: ``image: fixed_size_binary(H*W*C)`` (uint8 HWC, row-major), ``label:
int64``, ``idx: int64`` (row number within the split); the schema metadata carries
``visionray.shape`` (json [H, W, C]) and ``visionray.classes``.  ``decode_images`` turns an
image column (Arrow or numpy batch, e.g. inside a Ray Data ``map_batches``) back into an
(N, H, W, C) uint8 array without copying when it can.

Dense sources (``components.data.types``: masks, boxes) add columns, listed in the manifest's
``targets``: ``mask: fixed_size_binary(H*W)`` (uint8 class ids), ``boxes: list<float32>``
(x1, y1, x2, y2 of each object, flattened) and ``box_labels: list<int64>``; ``decode_targets``
turns them into (N, H, W) masks and boxes padded to the dataset's most objects per image
(``targets["max_boxes"]``), so every batch of a dataset has the same shapes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.data.errors import DataError
from components.data.types import RawDataset, RawSplit

__all__ = [
    "CLASSES_KEY",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "SHAPE_KEY",
    "SPLIT_NAMES",
    "Manifest",
    "dataset_version",
    "decode_images",
    "decode_targets",
    "image_schema",
    "target_columns",
    "read_split",
    "shape_from_schema",
    "split_dataset",
    "split_params",
    "stratified_split",
    "write_dataset",
]

SCHEMA_VERSION = 1
SHAPE_KEY = b"visionray.shape"
CLASSES_KEY = b"visionray.classes"
SPLIT_NAMES = ("train", "val", "test")
MANIFEST_NAME = "manifest.json"
_SCHEMA_DESCRIPTION = (
    f"visionray-images/v{SCHEMA_VERSION}: image fixed_size_binary(H*W*C) uint8 HWC row-major, "
    "label int64, idx int64 (row within split); metadata visionray.shape=[H,W,C], visionray.classes"
)
_TARGETS_DESCRIPTION = {
    "mask": "mask fixed_size_binary(H*W) uint8 class ids (0 background, k classes[k-1], 255 ignored)",
    "boxes": "boxes list<float32> x1,y1,x2,y2 pixels per object, box_labels list<int64> class index",
}
# Extra stream id so the final per-split shuffle never reuses a per-class stream.
_SHUFFLE_STREAM = 2**32 - 1


# --------------------------------------------------------------------------- splitting


def _check_split_args(seed: int, val_fraction: float, test_fraction: float) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise DataError(f"The split seed must be a non-negative integer, got {seed!r}.")
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{label} must be in [0, 1), got {value!r}.")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"val_fraction + test_fraction must be below 1 to leave training data, "
            f"got {val_fraction} + {test_fraction}."
        )


def _round_half_up(x: float) -> int:
    # Python's round() is banker's rounding, which makes counts jump oddly between classes.
    return int(math.floor(x + 0.5))


def stratified_split(
    labels: np.ndarray | Sequence[int], *, seed: int, val_fraction: float, test_fraction: float
) -> dict[str, np.ndarray]:
    """Indices for ``{"train", "val", "test"}``, carved per class in the given proportions.

    Deterministic for a given seed.  Each class draws from its own stream seeded by
    (seed, class), so adding a class does not reshuffle the others.  Every class keeps at
    least one training example.  The returned index arrays are shuffled (not sorted) so
    that shards written in this order mix classes -- a class-sorted source (image folders
    are) would otherwise give one-class batches to any streaming reader.
    """
    _check_split_args(seed, val_fraction, test_fraction)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"Labels must be one-dimensional, got shape {labels.shape}.")
    order = np.argsort(labels, kind="stable")  # group indices by class in one pass
    classes, starts = np.unique(labels[order], return_index=True)
    bounds = list(starts) + [len(labels)]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for i, cls in enumerate(classes):
        members = order[bounds[i] : bounds[i + 1]]
        rng = np.random.default_rng([int(seed), int(cls)])
        members = rng.permutation(members)
        n = len(members)
        n_test = _round_half_up(n * test_fraction)
        n_val = _round_half_up(n * val_fraction)
        excess = n_test + n_val - (n - 1)
        if excess > 0:  # tiny class: give back to train, taking from val first
            take_val = min(excess, n_val)
            n_val -= take_val
            n_test -= excess - take_val
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    out: dict[str, np.ndarray] = {}
    for name in SPLIT_NAMES:
        joined = np.concatenate(parts[name]) if parts[name] else np.empty(0, np.int64)
        rng = np.random.default_rng([int(seed), _SHUFFLE_STREAM, SPLIT_NAMES.index(name)])
        out[name] = rng.permutation(joined).astype(np.int64)
    return out


def _take(split: RawSplit, idx: np.ndarray) -> RawSplit:
    return split.take(idx)


def split_dataset(
    raw: RawDataset, *, seed: int, val_fraction: float, test_fraction: float
) -> dict[str, RawSplit]:
    """``{"train", "val", "test"}`` RawSplits for ``raw``.

    With an official test split only val is carved out of train and ``test_fraction`` is
    ignored; a source that made all three splits (``raw.premade``) keeps them; otherwise all
    three are carved out of ``"all"``.
    """
    if raw.premade:
        return dict(raw.splits)
    if raw.has_official_test:
        train = raw.splits["train"]
        idx = stratified_split(train.labels, seed=seed, val_fraction=val_fraction, test_fraction=0.0)
        return {"train": _take(train, idx["train"]), "val": _take(train, idx["val"]), "test": raw.splits["test"]}
    everything = raw.splits["all"]
    idx = stratified_split(everything.labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    return {name: _take(everything, idx[name]) for name in SPLIT_NAMES}


def split_params(raw: RawDataset, *, seed: int, val_fraction: float, test_fraction: float) -> dict[str, Any]:
    """The split parameters as recorded and hashed; ``test_fraction`` is None with an official test split.

    Normalising (ints, floats, None when ignored) keeps the version stable: 0 vs 0.0, or a
    test_fraction that has no effect, must not create a new dataset version.
    """
    _check_split_args(seed, val_fraction, test_fraction)
    return {
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": None if raw.has_official_test else float(test_fraction),
    }


def dataset_version(raw: RawDataset, *, seed: int, val_fraction: float, test_fraction: float) -> str:
    """First 16 hex digits of sha256(fingerprint + split params + schema version)."""
    params = split_params(raw, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    payload = f"{raw.fingerprint}\n{json.dumps(params, sort_keys=True)}\nschema-v{SCHEMA_VERSION}"
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Manifest:
    """What ``write_dataset`` wrote, stored as ``manifest.json`` next to the shards.

    ``splits[split]`` is ``{"rows": n, "files": [paths relative to root], "class_counts":
    {class: n}}``.  ``root`` is the absolute version folder; on ``load`` it is taken from
    where the file actually is, so a moved dataset still resolves.  ``cached`` says whether
    the last ``write_dataset`` call found it already on disk; it is not persisted.
    """

    name: str
    version: str
    source: str
    fingerprint: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    splits: dict[str, dict[str, Any]]
    quarantine: tuple[dict[str, str], ...]
    created_at: str
    schema: str
    seed: int
    val_fraction: float
    test_fraction: float | None
    root: str
    cached: bool = field(default=False, compare=False)
    # Dense targets the shards carry: {"mask": true, "boxes": true, "max_boxes": K}; {} for images only.
    targets: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of everything except ``cached``."""
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "classes": list(self.classes),
            "shape": list(self.shape),
            "splits": self.splits,
            "quarantine": [dict(q) for q in self.quarantine],
            "created_at": self.created_at,
            "schema": self.schema,
            "split_params": {
                "seed": self.seed,
                "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction,
            },
            "root": self.root,
            **({"targets": self.targets} if self.targets else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, root: str | None = None) -> "Manifest":
        params = data["split_params"]
        return cls(
            name=data["name"],
            version=data["version"],
            source=data["source"],
            fingerprint=data["fingerprint"],
            classes=tuple(data["classes"]),
            shape=tuple(int(x) for x in data["shape"]),  # type: ignore[arg-type]
            splits=data["splits"],
            quarantine=tuple(dict(q) for q in data["quarantine"]),
            created_at=data["created_at"],
            schema=data["schema"],
            seed=int(params["seed"]),
            val_fraction=float(params["val_fraction"]),
            test_fraction=None if params["test_fraction"] is None else float(params["test_fraction"]),
            root=root if root is not None else data["root"],
            targets=dict(data.get("targets", {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        """Read ``manifest.json`` (or the version folder that contains it)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
            return cls.from_dict(data, root=str(path.parent.resolve()))
        except FileNotFoundError as err:
            raise DataError(f"Dataset manifest {path} does not exist.") from err
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"Dataset manifest {path} is unreadable or incomplete ({err!r}).") from err

    def files(self, split: str) -> list[Path]:
        """Absolute shard paths of ``split``, in row order."""
        if split not in self.splits:
            raise DataError(
                f"Dataset {self.name}/{self.version} has no split {split!r}; it has {sorted(self.splits)}."
            )
        return [Path(self.root) / rel for rel in self.splits[split]["files"]]


def _load_complete(version_dir: Path) -> Manifest | None:
    """The manifest in ``version_dir`` if it and every shard it lists exist, else None."""
    if not (version_dir / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = Manifest.load(version_dir / MANIFEST_NAME)
    except DataError:
        return None
    if set(manifest.splits) != set(SPLIT_NAMES):
        return None
    if not all(p.is_file() for split in SPLIT_NAMES for p in manifest.files(split)):
        return None
    return manifest


# --------------------------------------------------------------------------- writing


def image_schema(shape: tuple[int, int, int], classes: Sequence[str], targets: Sequence[str] = ()) -> pa.Schema:
    """The Arrow schema of every shard for images of ``shape`` (H, W, C), with the columns of
    ``targets`` ("mask", "boxes") after the three every shard has."""
    h, w, c = shape
    columns = [("image", pa.binary(h * w * c)), ("label", pa.int64()), ("idx", pa.int64())]
    if "mask" in targets:
        columns.append(("mask", pa.binary(h * w)))
    if "boxes" in targets:
        columns += [("boxes", pa.list_(pa.float32())), ("box_labels", pa.list_(pa.int64()))]
    return pa.schema(
        columns,
        metadata={SHAPE_KEY: json.dumps([h, w, c]).encode(), CLASSES_KEY: json.dumps(list(classes)).encode()},
    )


def target_columns(targets: dict[str, Any] | Sequence[str]) -> list[str]:
    """The Parquet columns that hold ``targets`` (a manifest's ``targets``, or target names)."""
    names = [k for k in ("mask", "boxes") if (targets.get(k) if isinstance(targets, dict) else k in targets)]
    return (["mask"] if "mask" in names else []) + (["boxes", "box_labels"] if "boxes" in names else [])


def shape_from_schema(schema: pa.Schema) -> tuple[int, int, int]:
    """(H, W, C) stored in a shard schema's metadata."""
    raw = (schema.metadata or {}).get(SHAPE_KEY)
    if raw is None:
        raise DataError("The Parquet schema has no visionray.shape metadata; it was not written by write_dataset.")
    h, w, c = json.loads(raw)
    return int(h), int(w), int(c)


def _write_split(split: RawSplit, directory: Path, schema: pa.Schema, rows_per_shard: int) -> list[Path]:
    directory.mkdir(parents=True)
    n = len(split)
    width = schema.field("image").type.byte_width
    flat = np.ascontiguousarray(split.images).reshape(n, width)
    labels = np.ascontiguousarray(split.labels)
    masks = None if split.masks is None else np.ascontiguousarray(split.masks).reshape(n, -1)
    paths = []
    # Always at least one file, so an empty split still has a readable schema.
    for shard in range(max(1, math.ceil(n / rows_per_shard))):
        lo, hi = shard * rows_per_shard, min(n, (shard + 1) * rows_per_shard)
        # Zero-copy: the contiguous uint8 rows *are* the fixed_size_binary data buffer.
        images = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), hi - lo, [None, pa.py_buffer(flat[lo:hi])])
        columns = [images, pa.array(labels[lo:hi], pa.int64()), pa.array(np.arange(lo, hi, dtype=np.int64))]
        if masks is not None:
            columns.append(pa.FixedSizeBinaryArray.from_buffers(pa.binary(masks.shape[1]), hi - lo,
                                                                [None, pa.py_buffer(masks[lo:hi])]))
        if split.boxes is not None and split.box_labels is not None:
            columns += _box_columns(split.boxes[lo:hi], split.box_labels[lo:hi])
        table = pa.Table.from_arrays(columns, schema=schema)
        path = directory / f"part-{shard:05d}.parquet"
        pq.write_table(
            table,
            path,
            compression="zstd",
            # Dictionary-encoding or min/max stats on ~KB image blobs only bloat the file.
            use_dictionary=["label"],
            write_statistics=["label", "idx"],
        )
        paths.append(path)
    return paths


def _box_columns(boxes: np.ndarray, box_labels: np.ndarray) -> list[pa.Array]:
    """Padded (n, K, 4) boxes and (n, K) labels (-1 padding) → two list columns of each image's objects."""
    keep = box_labels >= 0
    counts = keep.sum(1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    flat_boxes = pa.array(np.ascontiguousarray(boxes[keep], dtype=np.float32).reshape(-1))
    return [pa.ListArray.from_arrays(pa.array(offsets * 4), flat_boxes),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(box_labels[keep].astype(np.int64)))]


def write_dataset(
    raw: RawDataset,
    out_root: str | Path,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    rows_per_shard: int = 10_000,
) -> Manifest:
    """Split ``raw`` and write ``out_root/<name>/<version>/``; a no-op if already complete.

    Returns the manifest with ``cached=True`` when the version folder already held a
    complete dataset (nothing is written then).  Shards and manifest are written into a
    hidden temp folder beside the target and renamed into place in one step, so an
    interrupted ingest never leaves a half-written folder that looks complete; if a
    concurrent writer wins that rename, its result is returned.
    """
    if rows_per_shard < 1:
        raise DataError(f"rows_per_shard must be at least 1, got {rows_per_shard}.")
    params = split_params(raw, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    version = dataset_version(raw, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    final = Path(out_root).expanduser().resolve() / raw.name / version
    existing = _load_complete(final)
    if existing is not None:
        return replace(existing, cached=True)

    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # Only a rename creates this folder, so an incomplete one was damaged afterwards;
        # move it aside first so readers never see it half-deleted.
        trash = Path(tempfile.mkdtemp(prefix=f".trash-{version}-", dir=final.parent))
        os.replace(final, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=final.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the dataset should be shareable
        shape = raw.shape
        schema = image_schema(shape, raw.classes, raw.targets)
        splits = split_dataset(raw, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
        targets: dict[str, Any] = {t: True for t in raw.targets}
        if "boxes" in targets:  # batches pad to the most objects of any image, so they all have one shape
            targets["max_boxes"] = max(int((s.box_labels >= 0).sum(1).max(initial=0)) for s in splits.values()
                                       if s.box_labels is not None)
        entries: dict[str, dict[str, Any]] = {}
        for name in SPLIT_NAMES:
            paths = _write_split(splits[name], tmp / name, schema, rows_per_shard)
            counts = np.bincount(splits[name].labels, minlength=len(raw.classes))
            entries[name] = {
                "rows": len(splits[name]),
                "files": [p.relative_to(tmp).as_posix() for p in paths],
                "class_counts": {cls: int(n) for cls, n in zip(raw.classes, counts)},
            }
        manifest = Manifest(
            name=raw.name,
            version=version,
            source=raw.source,
            fingerprint=raw.fingerprint,
            classes=tuple(raw.classes),
            shape=shape,
            splits=entries,
            quarantine=tuple({"path": q.path, "reason": q.reason} for q in raw.quarantine),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            schema="; ".join([_SCHEMA_DESCRIPTION, *(_TARGETS_DESCRIPTION[t] for t in raw.targets)]),
            seed=params["seed"],
            val_fraction=params["val_fraction"],
            test_fraction=params["test_fraction"],
            root=str(final),
            targets=targets,
        )
        # The manifest is written last: its presence is what marks the folder complete.
        (tmp / MANIFEST_NAME).write_text(manifest.to_json())
        try:
            os.rename(tmp, final)
        except OSError:
            winner = _load_complete(final)
            if winner is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return replace(winner, cached=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# --------------------------------------------------------------------------- reading


def _read_only(view: np.ndarray) -> np.ndarray:
    # np.frombuffer on an Arrow buffer comes back writeable, but Arrow memory is immutable
    # and may be shared (other tables, Ray's object store): writing into it must fail loudly.
    view.flags.writeable = False
    return view


def _decode_arrow(array: pa.Array, shape: tuple[int, int, int]) -> np.ndarray:
    h, w, c = shape
    width = h * w * c
    n = len(array)
    if array.null_count:
        raise DataError(f"The image column has {array.null_count} null values; every row needs an image.")
    if n == 0:
        return np.empty((0, h, w, c), np.uint8)
    kind = array.type
    if pa.types.is_fixed_size_binary(kind):
        if kind.byte_width != width:
            raise DataError(
                f"The image column holds {kind.byte_width}-byte images "
                f"but shape {list(shape)} needs {width} bytes."
            )
        data = array.buffers()[1]
        flat = np.frombuffer(data, dtype=np.uint8, count=n * width, offset=array.offset * width)
        return _read_only(flat.reshape(n, h, w, c))
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        offset_type = np.int32 if pa.types.is_binary(kind) else np.int64
        itemsize = np.dtype(offset_type).itemsize
        offsets = np.frombuffer(array.buffers()[1], dtype=offset_type, count=n + 1, offset=array.offset * itemsize)
        if np.any(np.diff(offsets) != width):
            raise DataError(
                f"The image column has values whose length is not {width} bytes for shape {list(shape)}."
            )
        data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
        return _read_only(data[offsets[0] : offsets[-1]].reshape(n, h, w, c))
    raise DataError(f"The image column has Arrow type {kind}, expected fixed_size_binary({width}).")


def decode_images(column: Any, shape: Sequence[int]) -> np.ndarray:
    """(N, H, W, C) uint8 images from an image column, zero-copy where the input allows.

    Accepts what the shards or a Ray Data batch may hold: a ``pa.Table`` (its ``image``
    column), a ``pa.ChunkedArray`` / ``pa.FixedSizeBinaryArray`` (or plain binary), a
    numpy array of ``bytes`` objects (object or ``S`` dtype), a list of bytes, or uint8
    pixels already laid out as (N, H*W*C) or (N, H, W, C).  Arrow inputs come back as
    read-only views of the Arrow buffer; copy before writing into them.
    """
    h, w, c = (int(x) for x in shape)
    width = h * w * c
    if isinstance(column, pa.Table):
        column = column.column("image")
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 0:
            return np.empty((0, h, w, c), np.uint8)
        # A single chunk stays zero-copy; several need one concatenation.
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if isinstance(column, pa.Array):
        return _decode_arrow(column, (h, w, c))

    arr = np.asarray(column) if not isinstance(column, np.ndarray) else column
    if arr.dtype == np.uint8:
        if arr.size % width or (arr.ndim > 1 and len(arr) and arr[0].size != width):
            raise DataError(f"A uint8 image batch of shape {arr.shape} does not match image shape {[h, w, c]}.")
        return arr.reshape(-1, h, w, c)
    if arr.dtype.kind == "S":  # fixed-width numpy bytes: the buffer already is the pixels
        if arr.dtype.itemsize != width:
            raise DataError(
                f"The image batch holds {arr.dtype.itemsize}-byte values but shape {[h, w, c]} needs {width}."
            )
        return np.ascontiguousarray(arr).reshape(-1).view(np.uint8).reshape(-1, h, w, c)
    if arr.dtype == object:
        values = arr.reshape(-1)
        if len(values) == 0:
            return np.empty((0, h, w, c), np.uint8)
        for value in values:
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise DataError(f"The image batch holds a {type(value).__name__} where {width} bytes were expected.")
            if len(value) != width:
                raise DataError(f"The image batch holds a {len(value)}-byte value where {width} bytes were expected.")
        return np.frombuffer(b"".join(values), dtype=np.uint8).reshape(-1, h, w, c)
    raise DataError(f"Cannot decode an image batch of dtype {arr.dtype}; expected Arrow binary or bytes.")


def _padded(column: Any, width: int, rows: int, fill: float | int, dtype: Any) -> np.ndarray:
    """A list column (each row a list of ``width``-tuples) → (N, rows, width) array, ``fill`` past each row's end."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    n = len(column)
    out = np.full((n, rows, width), fill, dtype=dtype)
    if n == 0:
        return out
    offsets = column.offsets.to_numpy()  # a sliced list array's offsets start where its slice does
    values = column.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]].astype(dtype, copy=False)
    counts = np.diff(offsets) // width
    if counts.max(initial=0) > rows:
        raise DataError(f"A row holds {int(counts.max())} objects, more than the dataset's max_boxes {rows}.")
    row = np.repeat(np.arange(n), counts)
    slot = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[row, slot] = values.reshape(-1, width)
    return out


def decode_targets(table: Any, shape: Sequence[int], targets: dict[str, Any]) -> dict[str, np.ndarray]:
    """The dense targets of a batch (``pa.Table`` or a dict of Arrow columns): ``mask`` (N, H, W) uint8,
    ``boxes`` (N, K, 4) float32 and ``box_labels`` (N, K) int64 (-1: no object) with K
    ``targets["max_boxes"]``; only those the manifest's ``targets`` names."""
    h, w, _ = (int(x) for x in shape)
    get = table.column if isinstance(table, pa.Table) else table.__getitem__
    out: dict[str, np.ndarray] = {}
    if targets.get("mask"):
        out["mask"] = decode_images(get("mask"), (h, w, 1))[..., 0]
    if targets.get("boxes"):
        k = int(targets.get("max_boxes", 0))
        out["boxes"] = _padded(get("boxes"), 4, k, 0.0, np.float32)
        out["box_labels"] = _padded(get("box_labels"), 1, k, -1, np.int64)[..., 0]
    return out


def read_split(manifest: Manifest, split: str) -> RawSplit:
    """Read every shard of ``split`` back into memory as a RawSplit (rows in written order, targets included)."""
    paths = manifest.files(split)
    tables = []
    for path in paths:
        if not path.is_file():
            raise DataError(
                f"Shard {path} listed in the manifest of {manifest.name}/{manifest.version} is missing."
            )
        try:
            tables.append(pq.read_table(path, columns=["image", "label", *target_columns(manifest.targets)]))
        except (OSError, pa.ArrowException) as err:
            raise DataError(f"Shard {path} is unreadable ({err}).") from err
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    images = decode_images(table.column("image"), manifest.shape)
    labels = table.column("label").to_numpy()
    expected = manifest.splits[split]["rows"]
    if len(labels) != expected:
        raise DataError(
            f"Split {split!r} of {manifest.root} has {len(labels)} rows but its manifest says {expected}."
        )
    dense = decode_targets(table, manifest.shape, manifest.targets)
    return RawSplit(images=images, labels=labels.astype(np.int64, copy=False), masks=dense.get("mask"),
                    boxes=dense.get("boxes"), box_labels=dense.get("box_labels"))
