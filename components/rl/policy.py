"""A trained RLModule frozen into a greedy policy: scores → argmax, as a ``torch.export`` program.

The exported program (``policy.pt2``) is what evaluation runs, what the GIF shows and what the
registered MLflow model serves: one artifact, no RLlib and no pickled Python objects needed to load
it (``torch.export.load`` rebuilds a graph of tensor ops, once :mod:`components.package_safety` has
checked that the archive holds nothing else)::

    export_policy(rl_module, obs_shape, "out/")              # writes out/policy.pt2 + policy.json
    policy = load_policy("out/")
    policy(np.zeros((3, 4), np.float32))                     # array of 3 greedy actions
    returns = run_episodes(policy, "CartPole-v1", episodes=100, seed=1)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from components.package_safety import load_program

PROGRAM_FILE = "policy.pt2"
META_FILE = "policy.json"


class GreedyPolicy(nn.Module):
    """Observations (N, *obs_shape) → greedy actions (N,) int64, for either kind of RLModule.

    Actor-critic modules expose ``greedy_logits``; RLlib's DQN module exposes ``compute_q_values``
    (argmax of Q, with dueling heads already combined).
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if hasattr(self.module, "greedy_logits"):
            scores = self.module.greedy_logits(obs)
        else:
            # "obs" is RLlib's Columns.OBS, spelt out: components/ imports no Ray.
            scores = self.module.compute_q_values({"obs": obs.float()})["qf_preds"]
        return scores.argmax(-1)


def export_policy(module: nn.Module, obs_shape: Sequence[int], out_dir: str | Path,
                  meta: dict[str, Any] | None = None) -> Path:
    """Write ``policy.pt2`` (dynamic batch size) and ``policy.json`` into ``out_dir``; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy = GreedyPolicy(module).eval()
    example = torch.zeros((2, *obs_shape), dtype=torch.float32)
    with torch.no_grad():
        program = torch.export.export(policy, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, out / PROGRAM_FILE)
    (out / META_FILE).write_text(json.dumps({"obs_shape": list(obs_shape), **(meta or {})}, indent=2))
    return out


@dataclass
class LoadedPolicy:
    """Callable: ``policy(obs)`` with obs (N, *obs_shape) or one observation → int64 actions."""

    program: Callable[[torch.Tensor], torch.Tensor]
    obs_shape: tuple[int, ...]
    meta: dict[str, Any]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        single = x.shape == self.obs_shape
        if single:
            x = x[None]
        if x.shape[1:] != self.obs_shape:
            raise ValueError(f"observations must have shape (N, {', '.join(map(str, self.obs_shape))}), "
                             f"got {x.shape}")
        with torch.no_grad():
            actions = self.program(torch.from_numpy(np.ascontiguousarray(x))).numpy().astype(np.int64)
        return actions[0] if single else actions


def load_policy(directory: str | Path) -> LoadedPolicy:
    d = Path(directory)
    meta = json.loads((d / META_FILE).read_text())
    program = load_program(d / PROGRAM_FILE).module()  # checked first: components.package_safety
    return LoadedPolicy(program, tuple(meta["obs_shape"]), meta)


def run_episodes(policy: Callable[[np.ndarray], Any], make_env: Callable[[], Any], episodes: int, seed: int,
                 max_steps: int = 0) -> np.ndarray:
    """Undiscounted returns of ``episodes`` greedy episodes (seeds ``seed``, ``seed+1``, ...)."""
    env = make_env()
    returns = np.zeros(episodes)
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            done, steps, total = False, 0, 0.0
            while not done:
                obs, reward, terminated, truncated, _ = env.step(int(policy(np.asarray(obs))))
                total += float(reward)
                steps += 1
                done = terminated or truncated or (max_steps > 0 and steps >= max_steps)
            returns[i] = total
    finally:
        env.close()
    return returns


def record_frames(policy: Callable[[np.ndarray], Any], make_env: Callable[[], Any], seed: int,
                  max_frames: int = 500) -> tuple[list[np.ndarray], float]:
    """RGB frames of one greedy episode (``make_env`` must render ``rgb_array``) and its return."""
    env = make_env()
    frames: list[np.ndarray] = []
    total = 0.0
    try:
        obs, _ = env.reset(seed=seed)
        frames.append(env.render())
        done = False
        while not done and len(frames) < max_frames:
            obs, reward, terminated, truncated, _ = env.step(int(policy(np.asarray(obs))))
            total += float(reward)
            frames.append(env.render())
            done = terminated or truncated
    finally:
        env.close()
    return frames, total


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: int = 30, max_side: int = 320) -> Path:
    """An animated GIF of RGB frames, downscaled so the longer side is at most ``max_side``."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames to save")
    images = []
    for f in frames:
        img = Image.fromarray(np.asarray(f, dtype=np.uint8))
        scale = max_side / max(img.size)
        if scale < 1:
            img = img.resize((int(img.width * scale), int(img.height * scale)))
        images.append(img)
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0,
                   optimize=True)
    return path
