"""Gymnasium environments: classic control as is; Atari frames preprocessed as in the DQN paper.

``make_env("ALE/Pong-v5")`` gives 84x84 grey frames (uint8), 4 stacked, frame-skip 4 with max-pooling,
no-op starts: observations of shape (4, 84, 84). ale-py's wheel ships the ROMs, so this works offline.
The training env and the evaluation env are built by the same function, so a policy sees the same
observations in both. ``render_mode="rgb_array"`` keeps the full-colour screen for GIFs.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def make_env(env_id: str, *, frame_stack: int = 4, render_mode: str | None = None,
             max_episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
    if is_atari(env_id):
        import ale_py

        gym.register_envs(ale_py)
        # The wrapper skips frames itself (with max-pooling over the last two), so the ALE must not.
        env = gym.make(env_id, frameskip=1, render_mode=render_mode, max_episode_steps=max_episode_steps, **kwargs)
        env = gym.wrappers.AtariPreprocessing(env, frame_skip=4, screen_size=84, grayscale_obs=True, noop_max=30)
        return gym.wrappers.FrameStackObservation(env, frame_stack)
    return gym.make(env_id, render_mode=render_mode, max_episode_steps=max_episode_steps, **kwargs)


def reward_threshold(env_id: str) -> float | None:
    """Gymnasium's "solved" return for ``env_id`` (475 for CartPole-v1), None when it has none."""
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        return None
    return spec.reward_threshold


def check_env_id(env_id: str) -> None:
    """Raise ValueError naming ``env_id`` when Gymnasium (or ale-py) does not know it."""
    if is_atari(env_id):
        try:
            import ale_py
        except ImportError:
            raise ValueError(f"{env_id} needs ale-py (pip install 'ale-py>=0.10,<1')") from None
        gym.register_envs(ale_py)
    try:
        gym.spec(env_id)
    except gym.error.Error as e:
        raise ValueError(f"{env_id} is not a registered Gymnasium environment ({e})") from None
