"""An actor-critic RLModule for RLlib's new API stack, built from :mod:`components.rl.encoders`.

PPO and REINFORCE-with-baseline both use it (``rl_module(rl_module_spec=actor_critic_spec(...))``):
a policy head giving categorical logits and a value head (PPO's critic, REINFORCE's baseline), on
separate MLP towers for vector observations (as RLlib's default) or on one shared CNN for frames,
whose cost dominates. ``uint8`` frames are scaled to [0, 1] inside the module, so callers (env
runners, the exported greedy policy, serving) pass observations as the env emits them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from components.rl.encoders import build_encoder, is_image


class ActorCriticModule(TorchRLModule, ValueFunctionAPI):
    """``model_config``: hidden, layers, activation (tanh|relu), encoder (auto|mlp|cnn), width."""

    def setup(self) -> None:
        mc: dict[str, Any] = {"hidden": 64, "layers": 2, "activation": "tanh", "encoder": "auto", "width": 16,
                              **(self.model_config or {})}
        shape = tuple(self.observation_space.shape)
        self.scale = 1.0 / 255 if self.observation_space.dtype == np.uint8 else 1.0
        kwargs = dict(kind=mc["encoder"], hidden=mc["hidden"], layers=mc["layers"], activation=mc["activation"],
                      width=mc["width"])
        self.pi_encoder = build_encoder(shape, **kwargs)
        # Frames: one shared CNN (the expensive part); vectors: separate towers, as RLlib's default.
        self.shared = mc["encoder"] == "cnn" or (mc["encoder"] == "auto" and is_image(shape))
        self.vf_encoder = None if self.shared else build_encoder(shape, **kwargs)
        width = self.pi_encoder.out_dim
        self.pi = nn.Linear(width, int(self.action_space.n))
        self.vf = nn.Linear(width, 1)
        # Small initial logits: a near-uniform first policy explores evenly (as CleanRL's std=0.01 init).
        nn.init.orthogonal_(self.pi.weight, 0.01)
        nn.init.zeros_(self.pi.bias)

    def _obs(self, batch: dict[str, Any]) -> torch.Tensor:
        obs = batch[Columns.OBS]
        return obs.float() * self.scale if self.scale != 1.0 else obs.float()

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(self.pi_encoder(self._obs(batch)))}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features = self.pi_encoder(self._obs(batch))
        out = {Columns.ACTION_DIST_INPUTS: self.pi(features)}
        if self.shared:  # reuse the CNN pass for the value head
            out[Columns.EMBEDDINGS] = features
        return out

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is None:
            encoder = self.pi_encoder if self.shared else self.vf_encoder
            embeddings = encoder(self._obs(batch))
        return self.vf(embeddings).squeeze(-1)

    def greedy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of raw observations; what the exported greedy policy calls."""
        return self.pi(self.pi_encoder(obs.float() * self.scale))


def actor_critic_spec(hidden: int, layers: int, *, activation: str = "tanh", encoder: str = "auto",
                      width: int = 16) -> RLModuleSpec:
    return RLModuleSpec(module_class=ActorCriticModule,
                        model_config={"hidden": hidden, "layers": layers, "activation": activation,
                                      "encoder": encoder, "width": width})
