"""§6.2 babysitting inside the one training path (``pipelines.stages.train`` calls these three).

    visionray run train data=digits model=convnet train.overfit_rows=32 train.epochs=8   # must reach ~0 loss
    visionray run train model=softmax train.loss=svm                     # first loss checked: C - 1

- ``train.overfit_rows=N``: train on N train images only, repeated ``OVERFIT_PASSES`` times per
  epoch (Ray Train's per-epoch report costs more than a 32-image step), without regularisation
  (weight decay, dropout, augmentation, label smoothing all off). The run is tagged
  ``visionray.overfit=passed`` when the last epoch's training loss is below ``OVERFIT_LOSS``,
  and logs ``overfit/final_loss``; else ``failed``.
- Linear classifiers (``model=softmax``, ``hoglinear``) get :class:`components.babysit.LinearDiagnostics`:
  ``linear/initial_loss`` against ``linear/expected_initial_loss`` (ln C or C - 1), the tag
  ``visionray.initial_loss_check`` and the class templates ``plots/class_templates.png``.
- The loss-explosion guard is ``train.explode_factor`` (default 3: §6.2's rule), in the loop itself.
- Every epoch logs ``train/val_accuracy_gap`` (train minus val accuracy): a growing gap is overfitting.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from components.babysit import INITIAL_LOSS_FILE, TEMPLATES_FILE, LinearDiagnostics
from components.data.shards import Manifest
from components.hooks import HookSpec
from pipelines.config import AugmentConfig, Config
from pipelines.records import Prepared
from pipelines.services import names, tracking
from pipelines.services.progress import say
from pipelines.stages.preprocess import image_dataset

OVERFIT_PASSES = 25
OVERFIT_LOSS = 0.05  # "near zero": ~1/50 of ln 10; 32 images reach it in a few hundred steps
LINEAR_MODELS = ("softmax", "hoglinear")
INITIAL_LOSS_TOLERANCE = 0.05  # relative: tiny init weights put the scores within ~3% of zero-score loss
SAMPLE_FILE = "first_batch.npz"


def adjust(cfg: Config, prepared: Prepared) -> tuple[Config, Prepared]:
    """The overfit mode's config and row counts (unchanged when ``train.overfit_rows`` is 0)."""
    n = min(cfg.train.overfit_rows, prepared.rows["train"])
    if not n:
        return cfg, prepared
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, weight_decay=0.0, label_smoothing=0.0, overfit_rows=n,
                                       batch_size=min(cfg.train.batch_size, n)),
        model=dataclasses.replace(cfg.model, dropout=0.0),
        data=dataclasses.replace(cfg.data, augment=AugmentConfig()))
    say(f"train: overfit mode: {n} train images x {OVERFIT_PASSES} per epoch, no regularisation; the loss "
        f"must fall below {OVERFIT_LOSS}")
    return cfg, dataclasses.replace(prepared, rows={**prepared.rows, "train": n * OVERFIT_PASSES})


def overfit_dataset(manifest: Manifest, n: int):
    """The first ``n`` train rows, repeated ``OVERFIT_PASSES`` times, as a Ray Dataset."""
    import ray.data

    batch = image_dataset(manifest, "train", n).take_batch(n, batch_format="numpy")
    rows = [{k: v[i] for k, v in batch.items()} for i in range(n)]  # masks and boxes too, where the data have them
    return ray.data.from_items(rows * OVERFIT_PASSES)


def train_hooks(cfg: Config, prepared: Prepared, workdir: Path) -> list[HookSpec]:
    """The diagnostics hooks this model gets by default (linear classifiers: LinearDiagnostics)."""
    if cfg.model.name not in LINEAR_MODELS:
        return []
    manifest = prepared.manifest()
    batch = image_dataset(manifest, "train", min(256, prepared.rows["train"])).take_batch(256, batch_format="numpy")
    workdir.mkdir(parents=True, exist_ok=True)
    sample = workdir / SAMPLE_FILE
    np.savez(sample, image=batch["image"], label=batch["label"])
    return [(LinearDiagnostics,
             {"sample": str(sample), "loss": cfg.train.loss, "classes": list(manifest.classes),
              "keys": {"initial": names.INITIAL_LOSS, "expected": names.EXPECTED_INITIAL_LOSS}})]


def report(cfg: Config, history: dict, extras: str | None) -> dict[str, float]:
    """After training: the overfit verdict and the linear diagnostics, on the active (train) run."""
    out: dict[str, float] = {}
    if cfg.train.overfit_rows and history.get(names.TRAIN_LOSS):
        final = float(history[names.TRAIN_LOSS][-1][1])
        passed = final < OVERFIT_LOSS
        out[names.OVERFIT_FINAL_LOSS] = final
        accuracy = history.get(names.TRAIN_ACCURACY)  # a classifier's; a segmenter has none
        tracking.log_metrics({names.OVERFIT_FINAL_LOSS: final,
                              **({names.OVERFIT_FINAL_ACCURACY: float(accuracy[-1][1])} if accuracy else {})})
        tracking.set_tags({names.OVERFIT_TAG: "passed" if passed else "failed"})
        say(f"train: overfit check {'passed' if passed else 'FAILED'}: final training loss {final:.4f} "
            f"({'<' if passed else '>='} {OVERFIT_LOSS}) on {cfg.train.overfit_rows} images")
    for path in sorted(Path(extras).glob("*-LinearDiagnostics")) if extras else ():
        if (path / TEMPLATES_FILE).is_file():
            tracking.log_artifact(path / TEMPLATES_FILE, "plots")
        if (path / INITIAL_LOSS_FILE).is_file():
            d = json.loads((path / INITIAL_LOSS_FILE).read_text())
            off = abs(d["initial"] - d["expected"]) / d["expected"]
            verdict = "ok" if off <= INITIAL_LOSS_TOLERANCE else f"off by {off:.0%}"
            tracking.set_tags({names.INITIAL_LOSS_TAG: verdict})
            out[names.INITIAL_LOSS] = d["initial"]
            say(f"train: first-iteration {d['loss']} loss {d['initial']:.4f}, expected {d['expected']:.4f} "
                f"({'ln C' if d['loss'] == 'softmax' else 'C - 1'}, C = {d['classes']}): {verdict}")
    return out
