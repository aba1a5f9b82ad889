"""What stages hand on: small records of files and URIs, never live objects.

Each stage's ``run(cfg, …)`` returns one of these; the next stage (or a later run) reads the files
they name, so any stage can be re-run alone. This module sits below the stages and the registry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from components.data.shards import Manifest

PREPARED_FILE = "prepared.json"


@dataclass(frozen=True)
class Prepared:
    """What later stages need: where the shards and the fitted normaliser are."""

    manifest_path: str
    normalizer_path: str
    normalization: str
    num_classes: int
    shape: tuple[int, int, int]
    rows: dict[str, int]

    def manifest(self) -> Manifest:
        return Manifest.load(self.manifest_path)

    def normalizer(self) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.normalizer_path) as z:
            return z["mean"], z["std"]

    def save(self, directory: Path) -> Path:
        path = directory / PREPARED_FILE
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, path: Path) -> "Prepared":
        d = json.loads(Path(path).read_text())
        return cls(**{**d, "shape": tuple(d["shape"])})


@dataclass(frozen=True)
class TextPrepared:
    """A text corpus as token streams: ``<directory>/{train,val,test}.npy`` (ids) + ``vocab.json``; or
    captioned images as arrays: ``{split}.npz`` (images, caption ids, items) + the word vocabulary."""

    name: str  # the source, e.g. "austen"
    version: str  # content hash of the corpus and the split
    directory: str
    vocab: tuple[str, ...]  # id → character (id 0: never seen)
    tokens: dict[str, int]  # characters per split
    replaced: int = 0  # undecodable bytes replaced while reading
    cached: bool = False
    suffix: str = ".npy"  # ".npz": captioned images (images, ids, items), ``tokens`` then counts images

    def path(self, split: str) -> str:
        return str(Path(self.directory) / f"{split}{self.suffix}")

    def ids(self, split: str) -> np.ndarray:
        return np.load(self.path(split), mmap_mode="r")


@dataclass(frozen=True)
class Trained:
    best_checkpoint: str  # a model package directory
    best_epoch: int  # its number, from 1 like the metric steps
    history: dict[str, list[tuple[int, float]]]  # metric -> (epoch number from 1, value)
    last_checkpoint: str | None = None  # the final epoch's model package
    extras: str | None = None  # the final checkpoint's hook files: extras/<NN-HookClass>/...


@dataclass(frozen=True)
class Evaluation:
    """A model package scored on the test split, by its task's metrics (keys without ``test/``)."""

    model_dir: str
    metrics: dict[str, float]  # {"loss": ..., "accuracy": ...} for a classifier
    example: np.ndarray  # a few raw test inputs: the registered model's input example
    task: str = "classification"
    primary: str = "accuracy"  # the metric the champion gate compares
    higher_is_better: bool = True

    @classmethod
    def of_classifier(cls, model_dir: str, test_loss: float, test_accuracy: float,
                      example: np.ndarray) -> "Evaluation":
        return cls(model_dir, {"loss": float(test_loss), "accuracy": float(test_accuracy)}, example)

    @property
    def primary_value(self) -> float:
        return self.metrics[self.primary]

    @property
    def test_loss(self) -> float:
        return self.metrics["loss"]

    @property
    def test_accuracy(self) -> float:
        """A classifier's test accuracy (NaN for a task that has none)."""
        return self.metrics.get("accuracy", float("nan"))
