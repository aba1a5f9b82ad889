"""Every task family visionray trains, behind one small interface (:class:`Task`).

    from components.tasks import build_task
    task = build_task("classification", num_classes=10, loss="softmax")

A model package records its task's name (``arch.json``), so evaluation, the gate and serving rebuild
the same task from the package alone.
"""

from __future__ import annotations

from typing import Any, Callable

from components.tasks.base import (
    Meter,
    Report,
    Task,
    TensorSpec,
    is_better,
    select_best,
)
from components.tasks.captioning import Captioning
from components.tasks.classification import Classification
from components.tasks.generation import Generation
from components.tasks.language_model import LanguageModel

#: The one dispatch: task name → builder (keyword arguments: num_classes, loss, label_smoothing, ...).
TASKS: dict[str, Callable[..., Task]] = {
    "classification": Classification.build,
    "language_model": LanguageModel.build,
    "captioning": Captioning.build,
    "generation": Generation.build,
}


def build_task(name: str, **options: Any) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name](**options)


__all__ = ["TASKS", "Captioning", "Classification", "Generation", "LanguageModel", "Meter", "Report", "Task", "TensorSpec", "build_task", "is_better",
           "select_best"]
