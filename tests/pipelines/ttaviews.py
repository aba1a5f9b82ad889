"""Test accuracy of trained classifier packages under each test-time augmentation, on the same weights.

    .venv/bin/python tests/pipelines/ttaviews.py STORE/checkpoints/recipe-RUNID/best [more packages ...]

The ablation of ``model.tta`` without retraining: each package (a train run's ``best`` or ``last``
directory, or a downloaded registered model) is scored on the test split of the Fashion-MNIST shards its
run wrote (``--data``, the store's ``data/fashion_mnist/VERSION``), once per entry of
``components.models.base.TTA_VIEWS`` and once without, channels-last as the evaluate stage runs it.
Prints one line per package: accuracy under none, flip and flip_shift.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from components.data.shards import MANIFEST_NAME, Manifest, read_split  # noqa: E402
from components.models import ImageClassifier  # noqa: E402
from components.models.base import TTA_VIEWS  # noqa: E402
from components.packaging import load_package  # noqa: E402


def accuracy(model: ImageClassifier, images: np.ndarray, labels: np.ndarray, tta: str | None) -> float:
    scored = ImageClassifier(model.normalize, model.net, tta=tta).eval().to(memory_format=torch.channels_last)
    x = torch.from_numpy(images.copy()).float().div(255)
    x = (x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        predicted = torch.cat([scored(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return float((predicted.numpy() == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the shards' version folder (has manifest.json)")
    args = parser.parse_args()
    manifest = Manifest.load(args.data / MANIFEST_NAME)
    test = read_split(manifest, "test")
    for package in args.packages:
        model, _ = load_package(package)
        scores = {tta or "none": accuracy(model, test.images, test.labels, tta) for tta in (None, *TTA_VIEWS)}
        print(f"{package}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)


if __name__ == "__main__":
    main()
