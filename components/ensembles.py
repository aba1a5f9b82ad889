"""Ensembles (§7.1): average the class probabilities of several models; snapshots and an EMA of the
weights, both taken inside the one training loop by hooks.

    model, spec = load_package("ensemble/")          # arch.json {"format": "ensemble"}, members/*
    classes, probs = model.predict_uint8(images)     # probs = mean of the members' probabilities

    train.run(..., hooks=[(EMAHook, {"decay": 0.998, "spec": spec.to_dict()}),
                          (SnapshotHook, {"cycles": 3, "epochs": 9, "spec": spec.to_dict()})])

An ensemble package is a directory: ``arch.json`` (``"format": "ensemble"``, the member names) and one
ordinary model package per member under ``members/`` (the format and its loader:
:mod:`components.ensemble_package`, re-exported here). Each member keeps its own normalisation, so
members trained on different normalisers (or different architectures) combine. Pure PyTorch: no Ray,
no MLflow here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from components.ensemble_package import (
    FORMAT,
    MEMBERS_DIR,
    EnsembleClassifier,
    PackageLoader,
    ProbabilityAverage,
    check_compatible,
    member_names,
)
from components.ensemble_package import load_ensemble_package as _load_ensemble_package
from components.hooks import HookSpec, TrainHook
from components.models import ImageClassifier
from components.packaging import ARCH_FILE, ModelSpec, load_package, save_package

EMA_DIR = "ema"  # EMAHook's package inside its extras directory
SNAPSHOT_PREFIX = "snapshot-"  # SnapshotHook's packages: snapshot-1, snapshot-2, ...


# --------------------------------------------------------------------------- the ensemble model


def mean_probabilities(models: Iterable[ImageClassifier], images: Any) -> Tensor:
    """The reference the ensemble must equal: the plain mean of ``predict_uint8`` probabilities."""
    probs = [m.predict_uint8(images)[1] for m in models]
    return torch.stack(probs).mean(dim=0)


def greedy_selection(probs: Sequence[np.ndarray], labels: np.ndarray) -> list[int]:
    """Ensemble selection by forward steps (Caruana et al. 2004, without replacement), on held-out data.

    Start from the member whose probabilities have the lowest negative log-likelihood on ``labels``;
    then add, one at a time, the member that lowers the NLL of the averaged probabilities most; stop
    when no member lowers it. NLL, not accuracy: it moves with every example's confidence, so steps
    rarely tie, and a member that only repeats the others' answers is left out. Returns the chosen
    indices in the order chosen.
    """
    if not len(probs):
        raise ValueError("greedy_selection needs at least one member")
    rows = np.arange(len(labels))

    def nll(p: np.ndarray) -> float:
        return float(-np.log(np.clip(p[rows, labels], 1e-12, None)).mean())

    chosen = [min(range(len(probs)), key=lambda i: nll(probs[i]))]
    total, best = probs[chosen[0]].astype(np.float64), nll(probs[chosen[0]])
    while len(chosen) < len(probs):
        scores = {i: nll((total + probs[i]) / (len(chosen) + 1)) for i in range(len(probs)) if i not in chosen}
        candidate = min(scores, key=scores.get)
        if scores[candidate] >= best:
            break
        chosen.append(candidate)
        total, best = total + probs[candidate], scores[candidate]
    return chosen


def save_ensemble_package(directory: str | Path, members: Sequence[tuple[str, str | Path]]) -> Path:
    """Copy each member's package (``(name, package_dir)``) under ``members/`` and write ``arch.json``."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    (directory / MEMBERS_DIR).mkdir(parents=True)
    specs, entries = [], []
    for i, (name, src) in enumerate(members):
        _, spec = load_package(src)  # also proves each member loads before anything is registered
        specs.append(spec)
        sub = f"{i:02d}-{_safe(name)}"
        shutil.copytree(src, directory / MEMBERS_DIR / sub)
        entries.append({"name": name, "path": f"{MEMBERS_DIR}/{sub}", "model": spec.name})
    check_compatible(specs, [n for n, _ in members])
    first = specs[0]
    arch = {"format": FORMAT, "name": FORMAT, "in_channels": first.in_channels, "num_classes": first.num_classes,
            "image_size": first.image_size, "classes": list(first.classes), "members": entries}
    (directory / ARCH_FILE).write_text(json.dumps(arch, indent=2))
    return directory


def load_ensemble_package(directory: str | Path, load: PackageLoader = load_package
                          ) -> tuple[EnsembleClassifier, ModelSpec]:
    """An ensemble package; its members load through ``load`` (components.packaging.load_package: any
    format). The loader proper is components.ensemble_package's, which the dispatcher itself uses."""
    return _load_ensemble_package(directory, load=load)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# --------------------------------------------------------------------------- EMA of the weights (§7.1)


class EMAHook(TrainHook):
    """An exponential moving average of the weights: ``shadow = d * shadow + (1 - d) * weights`` after
    every optimiser step; saved as a model package (``<extras>/ema``) at the end of each epoch.

    With ``warmup`` the decay starts low, ``d_t = min(decay, (1 + t) / (10 + t))`` for update ``t``
    (0-based), as TensorFlow's ExponentialMovingAverage does: otherwise, on a short CPU budget, the
    average would mostly remember the random initialisation.

    BatchNorm buffers: floating-point buffers (running mean/var) are averaged like the weights (as
    timm's ModelEmaV2 does), integer ones (``num_batches_tracked``) are copied. Statistics averaged
    this way are an approximation for the averaged weights; :func:`recompute_batchnorm` replaces them
    with exact ones from a pass over training images (the ensemble pipeline does, see
    ``ensemble.bn_rows``).
    """

    def __init__(self, decay: float, spec: dict[str, Any], warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.spec = ModelSpec.from_dict(spec)
        self.shadow: dict[str, Tensor] = {}
        self.updates = 0

    def setup(self, model: nn.Module) -> None:
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        d = self.current_decay()
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(d).add_(v.detach().to(s.dtype), alpha=1.0 - d)
            else:
                s.copy_(v)
        self.updates += 1

    def averaged_model(self) -> ImageClassifier:
        model = self.spec.build()
        model.load_state_dict(self.shadow)
        return model.eval()

    def end_epoch(self, model: nn.Module, epoch: int, out_dir: Path | None) -> dict[str, float]:
        if out_dir is not None:
            save_package(out_dir / EMA_DIR, self.averaged_model(), self.spec)
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": {k: v.clone() for k, v in self.shadow.items()}, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self.updates = int(state["updates"])


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Replace every BatchNorm's running statistics by statistics over ``batches`` (float NCHW images in
    [0, 1]) under the model's current weights, like ``torch.optim.swa_utils.update_bn``: each batch
    weighs by its size, so the running mean is the exact mean over all images (the variance is the
    size-weighted mean of the batch variances). Returns the number of images seen (0: no BatchNorm)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
    was_training = model.training
    model.train()
    seen = 0
    try:
        for x in batches:
            n = int(x.shape[0])
            for m in norms:  # new = old + n/(seen+n) (batch - old): a running mean weighted by batch size
                m.momentum = n / (seen + n)
            model(x)
            seen += n
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        model.train(was_training)
    return seen


# --------------------------------------------------------------------------- snapshot ensembles


def cycle_length(epochs: int, cycles: int) -> int:
    if cycles < 1 or epochs % cycles:
        raise ValueError(f"{epochs} epochs do not split into {cycles} equal learning-rate cycles")
    return epochs // cycles


class SnapshotHook(TrainHook):
    """Snapshot ensembles (Huang et al. 2017): with a cyclic cosine schedule of ``cycles`` cycles over
    ``epochs`` epochs, keep the weights at the end of each cycle, where the learning rate is ~0 and the
    model sits in a local minimum. Every checkpoint's extras hold all snapshots taken so far
    (``snapshot-1``, ``snapshot-2``, ...), so the final checkpoint has them all."""

    def __init__(self, cycles: int, epochs: int, spec: dict[str, Any], metric: str = ""):
        self.every = cycle_length(epochs, cycles)
        self.metric = metric  # the name the count of snapshots is reported under (none when empty)
        self.spec = ModelSpec.from_dict(spec)
        self.snapshots: list[dict[str, Tensor]] = []

    def end_epoch(self, model: nn.Module, epoch: int, out_dir: Path | None) -> dict[str, float]:
        if (epoch + 1) % self.every == 0:
            self.snapshots.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        if out_dir is not None:
            for i, state in enumerate(self.snapshots):
                net = self.spec.build()
                net.load_state_dict(state)
                save_package(out_dir / f"{SNAPSHOT_PREFIX}{i + 1}", net, self.spec)
        return {self.metric: float(len(self.snapshots))} if self.metric else {}

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": [dict(s) for s in self.snapshots]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots = [dict(s) for s in state["snapshots"]]


def config_hooks(ema_decay: float, snapshots: int, epochs: int, spec: ModelSpec,
                 snapshots_metric: str = "") -> list[HookSpec]:
    """The hooks ``train.ema_decay`` and ``train.snapshots`` switch on (none when both are 0);
    ``snapshots_metric`` names the per-epoch count of snapshots taken."""
    hooks: list[HookSpec] = []
    if ema_decay > 0:
        hooks.append((EMAHook, {"decay": ema_decay, "spec": spec.to_dict()}))
    if snapshots > 0:
        hooks.append((SnapshotHook, {"cycles": snapshots, "epochs": epochs, "spec": spec.to_dict(),
                                     "metric": snapshots_metric}))
    return hooks


def hook_outputs(extras: str | Path | None) -> dict[str, Any]:
    """What the hooks left in a run's final extras: ``{"ema": Path | None, "snapshots": [Path, ...]}``."""
    found: dict[str, Any] = {"ema": None, "snapshots": []}
    if extras is None or not Path(extras).is_dir():
        return found
    for sub in sorted(Path(extras).iterdir()):
        if sub.name.endswith(EMAHook.__name__) and (sub / EMA_DIR / ARCH_FILE).is_file():
            found["ema"] = sub / EMA_DIR
        if sub.name.endswith(SnapshotHook.__name__):
            found["snapshots"] = sorted((p for p in sub.glob(f"{SNAPSHOT_PREFIX}*") if (p / ARCH_FILE).is_file()),
                                        key=lambda p: int(p.name[len(SNAPSHOT_PREFIX):]))
    return found


__all__ = ["EnsembleClassifier", "ProbabilityAverage", "EMAHook", "SnapshotHook", "check_compatible",
           "config_hooks", "hook_outputs", "load_ensemble_package", "mean_probabilities", "member_names",
           "recompute_batchnorm", "save_ensemble_package"]
