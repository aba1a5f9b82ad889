"""Image batches: uint8 NHWC rows from Parquet shards or Ray Data → float NCHW tensors in [0, 1].

    x, y = BatchPrep(augment=Augment(flip=True), seed=0, epoch=3)({"image": uint8, "label": ids, "idx": rows})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from components.augment import Augment, generator_for

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class BatchPrep:
    """uint8 NHWC images (+ labels, row ids) → float NCHW in [0, 1], augmented when training.

    The augmentation seed derives from (seed, epoch, first row id of the batch), so a batch is
    augmented the same way whichever thread or worker prepares it.
    """

    augment: Augment | None = None
    seed: int = 0
    epoch: int = 0
    channels_last: bool = False
    pin_memory: bool = False  # GPU training: page-locked batches let .to(device, non_blocking) overlap

    def __call__(self, batch: Mapping[str, Any]) -> Batch:
        images = torch.from_numpy(_writable(batch["image"]))
        if images.ndim == 3:  # N×H×W grey
            images = images.unsqueeze(-1)
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        if self.augment is not None and self.augment.enabled:
            first = int(batch["idx"][0]) if "idx" in batch and len(batch["idx"]) else 0
            x = self.augment(x, generator_for(self.seed, self.epoch, 0, first))
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
        y = torch.from_numpy(_writable(batch["label"])).long()
        return (x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y)


def _writable(a: Any) -> np.ndarray:
    """Arrow-backed batches are read-only views; torch wants memory it may write (a cheap copy)."""
    a = np.asarray(a)
    return a if a.flags.writeable and a.flags.c_contiguous else np.array(a, order="C")
