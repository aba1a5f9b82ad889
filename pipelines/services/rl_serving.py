"""The served form of an RL policy: an MLflow pyfunc around an exported greedy policy (``components.rl.policy``)."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np


class PolicyModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from components.rl.policy import load_policy

        self.policy = load_policy(context.artifacts["policy"])

    # np.ndarray: a hint MLflow derives no schema from (without one it warns); the logged signature is the schema.
    def predict(self, context, model_input: np.ndarray, params=None):
        if hasattr(model_input, "to_numpy"):  # a DataFrame: one observation per row
            model_input = model_input.to_numpy()
        obs = np.asarray(model_input, dtype=np.float32)
        if obs.ndim == len(self.policy.obs_shape):  # one observation
            obs = obs[None]
        return self.policy(obs)
