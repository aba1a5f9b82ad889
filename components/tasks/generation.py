"""Image generation as a task (§13): images in, a generative model's loss and statistics out; served: seeds in,
images out.

    task = Generation.build(num_classes=10, model="vae")           # primary: bits_per_dim, lower is better
    prep = task.batch_prep()                                        # uint8 NHWC rows → ((x, labels), labels)
    outputs, loss = task.forward(model, *prep(batch))               # the model's own loss (ELBO, NLL, ...)
    task.epoch_artifacts(model, epoch)                              # {grid_key: the 8×8 grid, uint8}
    task.predict(model, np.array([0, 1, 2]))                        # {"images": uint8 3×H×W}, same seeds → same

The model (components.models.generative) decides almost everything: its loss comes out of its forward
pass, ``stats`` are the per-example values the meter averages (bits_per_dim for a likelihood model), and
``primary`` ranks epochs and versions (bits/dim ↓ for likelihood models, FID ↓ for a GAN). A model that
owns its training step (a GAN's alternating discriminator and generator updates) defines ``train_step``,
and the task hands the engine that step instead of the one-loss-one-optimiser default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from components.tasks.base import Report, Task, TensorSpec

GRID_SIDE = 8  # an 8×8 grid of samples per epoch
GRID_SEEDS = tuple(range(GRID_SIDE * GRID_SIDE))  # the same seeds every epoch, so the grids compare


@dataclass
class GenStats:
    """Summed loss and per-example statistics (``keys``) over batches, as one vector for the all-reduce."""

    keys: tuple[str, ...]
    sums: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sums = self.sums or [0.0] * (2 + len(self.keys))

    def add(self, outputs: Mapping[str, Tensor], targets: Any, loss: float) -> None:
        n = len(outputs[self.keys[0]]) if self.keys else len(targets)
        self.sums[0] += float(loss) * n
        self.sums[1] += n
        for i, k in enumerate(self.keys):
            self.sums[2 + i] += float(outputs[k].detach().float().sum())

    def totals(self) -> list[float]:
        return list(self.sums)

    def with_totals(self, totals: Sequence[float]) -> "GenStats":
        return GenStats(self.keys, [float(t) for t in totals])

    def compute(self) -> dict[str, float]:
        n = max(self.sums[1], 1.0)
        return {"loss": self.sums[0] / n, **{k: self.sums[2 + i] / n for i, k in enumerate(self.keys)}}


def sample_grid(images: np.ndarray, side: int = GRID_SIDE, pad: int = 2) -> np.ndarray:
    """uint8 N×C×H×W (N ≤ side²) → one uint8 image H'×W' (grey) or H'×W'×3, tiles on a mid-grey ground."""
    n, c, h, w = images.shape
    rows = math.ceil(n / side)
    out = np.full((rows * (h + pad) + pad, side * (w + pad) + pad, c), 128, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, side)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = \
            img.transpose(1, 2, 0)
    return out[..., 0] if c == 1 else out


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


@dataclass
class Generation(Task):
    name: ClassVar[str] = "generation"
    primary: ClassVar[str] = "bits_per_dim"  # replaced per model in __post_init__ (a GAN's is fid)
    higher_is_better: ClassVar[bool] = False
    served_input: ClassVar[str] = "seeds"  # a 1-D int64 array: one image per seed

    model: str = "vae"
    classes: tuple[str, ...] = ()
    sample_every: int = 1  # log the sample grid every this many epochs (0: never)
    grid_key: str = ""  # the MLflow image key of the per-epoch grid (the pipeline's name for it; "": none)
    stats: tuple[str, ...] = ()
    #: Training options of a model that owns its step (a GAN's recipe: generate.gan_loss, d_steps, ...)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from components.models.generative import generator_class

        cls = generator_class(self.model)
        # instance attributes over the class defaults: what this model is judged by
        self.primary, self.higher_is_better = cls.primary, cls.higher_is_better  # type: ignore[misc]
        self.stats = self.stats or cls.stats
        self.conditional = cls.conditional
        if getattr(cls, "train_step", None) is not None:  # a model that owns its step (a GAN)
            self.train_step = self._model_step  # type: ignore[misc,assignment]

    @classmethod
    def build(cls, num_classes: int, classes: Sequence[str] = (), model: str = "vae", sample_every: int = 1,
              grid_key: str = "", options: Mapping[str, Any] | None = None, **_: Any) -> "Generation":
        return cls(model=model, classes=tuple(classes) or tuple(str(i) for i in range(num_classes)),
                   sample_every=sample_every, grid_key=grid_key, options=dict(options or {}))

    # -- training
    def batch_prep(self, *, augment: Any = None, seed: int = 0, epoch: int = 0, channels_last: bool = False,
                   pin_memory: bool = False):
        from components.batches import BatchPrep

        return _GenerationPrep(BatchPrep(augment=augment, seed=seed, epoch=epoch, channels_last=channels_last,
                                         pin_memory=pin_memory))

    def infer(self, model: nn.Module, inputs: Any) -> dict[str, Tensor]:
        x, labels = inputs
        return model(x, labels)

    def loss(self, outputs: Mapping[str, Tensor], targets: Any) -> Tensor:
        return outputs["loss"]

    def _model_step(self, model: nn.Module, inputs: Any, targets: Any, optimizer: torch.optim.Optimizer,
                    **kwargs: Any) -> tuple[Any, Tensor]:
        return _unwrap(model).train_step(model, inputs, targets, optimizer, task=self, **kwargs)

    def meter(self) -> GenStats:
        return GenStats(tuple(self.stats))

    def loss_floor(self) -> float:
        from components.models.generative import generator_class

        # bits/dim of a uniform guess over 2 levels: the smallest untrained loss of any likelihood model; a
        # GAN sets its own (its losses rise and fall as a game's do)
        return float(getattr(generator_class(self.model), "loss_floor", 1.0))

    def predictions(self, outputs: Mapping[str, Tensor]) -> Tensor:
        return outputs[self.stats[0]]

    def epoch_artifacts(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """The 8×8 grid of samples from the same 64 seeds after every ``sample_every``-th epoch (an image)."""
        if not self.grid_key or not self.sample_every or (epoch + 1) % self.sample_every:
            return {}
        net, was_training = _unwrap(model), model.training
        net.eval()
        try:
            images = self.generate(net, GRID_SEEDS)
        finally:
            model.train(was_training)
        return {self.grid_key: sample_grid(images)}

    def generate(self, net: nn.Module, seeds: Sequence[int], label: int | None = None) -> np.ndarray:
        """uint8 N×C×H×W; a conditional model draws class ``label``, or cycles through the classes."""
        labels = None
        if self.conditional:
            k = max(1, len(self.classes))
            labels = [int(label) % k if label is not None and label >= 0 else i % k for i in range(len(seeds))]
        with torch.no_grad():
            return _unwrap(net).generate([int(s) for s in seeds], labels).cpu().numpy()

    # -- serving
    def predict(self, model: nn.Module, raw: Any, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        seeds = np.asarray(raw).reshape(-1)
        if seeds.size and not np.issubdtype(seeds.dtype, np.integer):
            if not np.all(np.mod(seeds, 1) == 0):
                raise ValueError("seeds must be whole numbers (a 1-D int64 array)")
        label = (params or {}).get("label")
        model.eval()
        images = self.generate(model, seeds.astype(np.int64).tolist(), None if label is None else int(label))
        images = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
        return {"images": images}

    def served_params(self) -> dict[str, Any]:
        return {"label": -1} if self.conditional else {}  # -1: cycle through the classes

    def served_schema(self, example: np.ndarray, model_meta: Mapping[str, Any]) -> tuple[list[TensorSpec],
                                                                                          list[TensorSpec]]:
        shape = tuple(model_meta.get("image_shape") or (-1, -1))
        return [TensorSpec("int64", (-1,))], [TensorSpec("uint8", (-1, *shape), "images")]

    def report(self, predictions: np.ndarray, targets: np.ndarray, classes: Sequence[str],
               history: Mapping[str, Sequence[tuple[int, float]]], title: str) -> Report:
        from components.plots import curves_figure

        return Report(figures={"plots/curves.png": curves_figure(history, title)})


@dataclass(frozen=True)
class _GenerationPrep:
    """The image batch prep (uint8 NHWC → float NCHW in [0, 1]), shaped as ((images, labels), labels)."""

    prep: Any

    def __call__(self, batch: Mapping[str, Any]) -> tuple[tuple[Tensor, Tensor], Tensor]:
        x, y = self.prep(batch)
        return (x, y), y
