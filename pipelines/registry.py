"""Stage ``register``: log the evaluated model as an MLflow pyfunc, register a version, run the gate.

The gate: ``champion`` moves to the new version only when its test accuracy beats the current
champion's; otherwise the new version becomes ``challenger``. Alias moves are the last step, after
every tag of the version is written, so nothing half-registered is ever served::

    mlflow models serve -m models:/fashion-mnist-classifier@champion --env-manager local
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines import names, tracking
from pipelines.config import Config
from pipelines.evaluate import Evaluation
from pipelines.progress import say

_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Decision:
    name: str
    version: int
    alias: str  # champion or challenger
    previous_champion: int | None
    previous_accuracy: float | None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def signature(example: np.ndarray, num_classes: int):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *example.shape[1:]))])
    outputs = Schema([TensorSpec(np.dtype(np.int64), (-1,), "class"),
                      TensorSpec(np.dtype(np.float32), (-1, num_classes), "probabilities")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def requirements() -> list[str]:
    import cloudpickle
    import mlflow
    import torch

    # Pinned explicitly: inferring them would load the model in a subprocess (slow) and guess.
    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={np.__version__}", f"cloudpickle=={cloudpickle.__version__}"]


def log_model(evaluation: Evaluation, num_classes: int):
    import mlflow

    return mlflow.pyfunc.log_model(
        name="model", python_model=str(_ROOT / "pipelines" / "serving_model.py"),
        artifacts={"package": evaluation.model_dir},
        code_paths=[str(_ROOT / "components"), str(_ROOT / "pipelines")],
        signature=signature(evaluation.example, num_classes), input_example=evaluation.example,
        pip_requirements=requirements())


def current_champion(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, names.CHAMPION)
    except MlflowException:
        return None


def run(cfg: Config, evaluation: Evaluation, num_classes: int, tags: dict[str, str]) -> Decision:
    import mlflow
    from mlflow import MlflowClient

    name = cfg.registered_model_name
    info = log_model(evaluation, num_classes)
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    client = MlflowClient()
    client.set_model_version_tag(name, version.version, names.TEST_ACCURACY_TAG, f"{evaluation.test_accuracy:.6f}")
    champion = current_champion(client, name)
    prev_acc = float(champion.tags.get(names.TEST_ACCURACY_TAG, "nan")) if champion else None
    promote = champion is None or not np.isfinite(prev_acc) or evaluation.test_accuracy > prev_acc
    alias = names.CHAMPION if promote else names.CHALLENGER
    client.set_registered_model_alias(name, alias, version.version)  # the last step
    decision = Decision(name, int(version.version), alias, int(champion.version) if champion else None, prev_acc)
    summary = (f"{name} v{decision.version} is the new champion"
               + (f" (test accuracy {evaluation.test_accuracy:.4f} > v{decision.previous_champion}'s "
                  f"{prev_acc:.4f})" if champion else " (first version)")
               if promote else
               f"{name} v{decision.version} is the challenger: test accuracy {evaluation.test_accuracy:.4f} "
               f"does not beat champion v{decision.previous_champion}'s {prev_acc:.4f}")
    tracking.set_tags({names.DECISION_TAG: summary})
    say(f"register: {summary}")
    return decision
