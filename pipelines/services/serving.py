"""The served form of a vision model: an MLflow pyfunc wrapping a model package and its task.

The task (components.tasks) decides input and output. An image classifier takes raw uint8 images,
N×H×W (grey) or N×H×W×C, and returns ``class`` (N,) and ``probabilities`` (N, classes); a character
language model takes a column ``prompt`` of strings and the params of ``LanguageModel.served_params``; a
generator takes a 1-D int64 array of seeds and returns ``images``, uint8 N×H×W, one per seed.
Normalisation is inside the model, so a client sends pixels as they are::

    mlflow models serve -m models:/fashion-mnist-classifier@champion --env-manager local -p 5001
    curl -s localhost:5001/invocations -H 'Content-Type: application/json' \
         -d '{"inputs": [[[0, 0, ...], ...]]}'
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np


class TaskModel(mlflow.pyfunc.PythonModel):
    """Any model package, served in its task's form (components.tasks: ``Task.predict``)."""

    def load_context(self, context):
        import torch

        from components.packaging import load_package
        from components.tasks import build_task

        torch.set_num_threads(max(1, torch.get_num_threads()))
        self.model, self.spec = load_package(context.artifacts["package"])
        self.task = build_task(self.spec.task, num_classes=self.spec.num_classes, classes=self.spec.classes,
                               model=self.spec.name)

    # np.ndarray is a hint MLflow derives no schema from and validates nothing against (without a hint it
    # warns at every import): the signature logged with the model stays the schema. Images arrive as an
    # array; text, under its column signature, as a DataFrame.
    def predict(self, context, model_input: np.ndarray, params=None):
        if self.task.served_input == "text":  # text in: a column of strings (a DataFrame, a dict of columns, a list)
            if isinstance(model_input, dict):
                model_input = model_input.get("prompt", next(iter(model_input.values()), []))
            elif hasattr(model_input, "iloc"):
                model_input = model_input.iloc[:, 0]
            texts = [str(t) for t in np.asarray(model_input, dtype=object).reshape(-1)]
            return self.task.predict(self.model, texts, params)
        if self.task.served_input == "seeds":  # a generator: a 1-D array of int64 seeds, one image each
            seeds = model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input
            return self.task.predict(self.model, np.asarray(seeds).reshape(-1), params)
        if hasattr(model_input, "to_numpy"):  # a DataFrame of flattened pixels
            model_input = np.stack([np.asarray(v, dtype=np.uint8) for v in model_input.to_numpy()[:, 0]])
        images = np.asarray(model_input)
        if images.dtype != np.uint8:
            if images.size and (images.min() < 0 or images.max() > 255):
                raise ValueError("images must be raw pixels in 0..255 (uint8)")
            images = images.astype(np.uint8)
        return self.task.predict(self.model, images, params)
