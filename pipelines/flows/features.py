"""The zoo's hand-made-features entry (§3.2): HOG + colour histogram into a linear SVM, via the one training loop.

    from pipelines.flows.features import features_baseline
    row = features_baseline(cfg, prepared, manifest)   # inside the zoo's MLflow run

It is ``model=hoglinear`` trained by ``train.run`` with the SVM loss and plain minibatch SGD (the
course's recipe), on the data and budget (epochs, batch) of ``cfg``; any pipeline can also train it
directly: ``visionray run train model=hoglinear train.loss=svm train.optimizer=sgd train.lr=0.01``.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from components.data.shards import Manifest
from components.models import count_parameters
from components.packaging import load_package
from pipelines.config import Config
from pipelines.records import Prepared
from pipelines.services import tracking

RECIPE = {"loss": "svm", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "label_smoothing": 0.0}


def features_baseline(cfg: Config, prepared: Prepared, manifest: Manifest | None = None) -> dict[str, Any]:
    """Train HOG+colour → linear SVM in the active MLflow run; ``test_accuracy``, ``params``, ``seconds``."""
    from pipelines.stages import evaluate, train

    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="hoglinear", dropout=0.0),
                              train=dataclasses.replace(cfg.train, **RECIPE))
    run_id = tracking.active_run_id()
    if run_id is None:
        raise RuntimeError("features_baseline logs into the caller's MLflow run; start one first.")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="visionray-hoglinear-") as tmp:
        trained = train.run(cfg, prepared, tracking.resolve_uri(cfg.tracking.uri), run_id,
                            f"hoglinear-{run_id}", Path(tmp))
        _, accuracy = evaluate.score_package(cfg, prepared, trained.best_checkpoint)
        model, _ = load_package(trained.best_checkpoint)
    return {"test_accuracy": accuracy, "params": count_parameters(model), "seconds": time.perf_counter() - started}
