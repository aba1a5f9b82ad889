"""Fashion-FID of a generator at the end of every epoch, on the val split: the metric that picks its best epoch.

    hooks = [(FidHook, {"classifier": "work/fid_model", "images": "work/fid_val.npy", "samples": 1000,
                        "keys": {"fid": "val/fid", "kid": "val/kid"}})]
    train.run(cfg, prepared, uri, run_id, name, workdir, hooks=hooks, spec=spec)

A GAN's or a diffusion model's losses say little about its samples, so the train stage's checkpoint choice
(the best ``val/<primary>``) reads this FID instead: ``samples`` images drawn from fixed seeds (a
conditional model cycles through the classes) against the first ``samples`` val images, in the feature
space of the classifier package at ``classifier`` (components.fidelity). Rank 0 measures it (the only rank
whose metrics Ray Train keeps), after validation, before the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from components.hooks import TrainHook

#: Far from the grid's seeds (0-63) and the test samples' (from 0): val samples are other images.
VAL_SEED = 1_000_000


class FidHook(TrainHook):
    def __init__(self, classifier: str, images: str, samples: int, keys: Mapping[str, str], subset_size: int = 1000):
        self.classifier_dir, self.images_path, self.samples = classifier, images, samples
        self.keys, self.subset_size = dict(keys), subset_size
        self.features: Any = None

    def setup(self, model: nn.Module) -> None:
        from components.fidelity import ClassifierFeatures
        from components.packaging import load_package

        classifier, spec = load_package(self.classifier_dir)
        self.features = ClassifierFeatures(classifier, image_size=spec.image_size)
        self.real = np.load(self.images_path, mmap_mode="r")[:self.samples]

    def end_epoch(self, model: nn.Module, epoch: int, out_dir: Path | None) -> dict[str, float]:
        from components.fidelity import distances

        if out_dir is None:  # not rank 0: Ray Train keeps rank 0's metrics only
            return {}
        n = len(self.real)
        k = max(1, getattr(model, "num_classes", 0))
        labels = [i % k for i in range(n)] if getattr(model, "conditional", False) else None
        with torch.no_grad():
            images = model.generate(list(range(VAL_SEED, VAL_SEED + n)), labels).cpu().numpy()
        images = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
        d = distances(self.features, np.asarray(self.real), {"samples": images}, self.subset_size, subsets=20)
        return {self.keys["fid"]: d["samples"]["fid"], self.keys["kid"]: d["samples"]["kid"]}
