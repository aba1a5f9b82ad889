"""Pure data-ingest building blocks: read a source, split it, write/read versioned Parquet.

No Ray or MLflow in here -- the pipelines wire these functions into Ray Data and MLflow.
Typical use::

    from pathlib import Path
    from components.data import load_source, write_dataset, read_split

    raw = load_source("fashion_mnist")                      # RawDataset, official train/test
    manifest = write_dataset(raw, Path("data"), seed=0, val_fraction=0.1, test_fraction=0.1)
    val = read_split(manifest, "val")                        # RawSplit (images NHWC uint8)

Errors a user can cause (bad path, corrupt file, empty class) raise ``DataError``.
"""

from components.data.errors import DataError
from components.data.shards import (
    Manifest,
    dataset_version,
    decode_images,
    read_split,
    shape_from_schema,
    split_dataset,
    stratified_split,
    write_dataset,
)
from components.data.sources import (
    KNOWN_SOURCES,
    cifar10,
    digits,
    download_fashion_mnist,
    fashion_mnist,
    image_folder,
    load_source,
    locate_fashion_mnist,
)
from components.data.types import Quarantined, RawDataset, RawSplit

__all__ = [
    "KNOWN_SOURCES",
    "DataError",
    "Manifest",
    "Quarantined",
    "RawDataset",
    "RawSplit",
    "cifar10",
    "dataset_version",
    "decode_images",
    "digits",
    "download_fashion_mnist",
    "fashion_mnist",
    "image_folder",
    "load_source",
    "locate_fashion_mnist",
    "read_split",
    "shape_from_schema",
    "split_dataset",
    "stratified_split",
    "write_dataset",
]
