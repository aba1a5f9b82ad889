"""Fast tests of the RL components: the REINFORCE loss by hand, encoders, policy export, GIFs, Atari frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.rl.encoders import FrameEncoder, build_encoder
from components.rl.losses import reinforce_loss, returns_to_go


def test_reinforce_loss_matches_hand_computation():
    logp = torch.tensor([math.log(0.5), math.log(0.25), math.log(0.8)], requires_grad=True)
    returns = torch.tensor([3.0, 2.0, 1.0])
    values = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    entropy = torch.tensor([0.6, 0.5, 0.4])
    total, parts = reinforce_loss(logp, returns, values, entropy, vf_coeff=0.5, entropy_coeff=0.1, normalize=False)
    # advantages G - b = [2, 1, 0]
    policy = -(math.log(0.5) * 2 + math.log(0.25) * 1 + math.log(0.8) * 0) / 3  # 0.924196
    vf = ((1 - 3) ** 2 + (1 - 2) ** 2 + 0) / 3  # 5/3
    assert parts["policy_loss"].item() == pytest.approx(policy, abs=1e-6)
    assert parts["vf_loss"].item() == pytest.approx(vf, abs=1e-6)
    assert total.item() == pytest.approx(policy + 0.5 * vf - 0.1 * 0.5, abs=1e-6)
    total.backward()
    # The baseline is not differentiated through the policy term: d/dv = vf_coeff * 2 (v - G) / N only.
    assert values.grad.tolist() == pytest.approx([0.5 * 2 * -2 / 3, 0.5 * 2 * -1 / 3, 0.0], abs=1e-6)
    # d/dlogp = -A / N
    assert logp.grad.tolist() == pytest.approx([-2 / 3, -1 / 3, 0.0], abs=1e-6)


def test_reinforce_loss_normalises_advantages():
    logp = torch.tensor([math.log(0.5), math.log(0.25), math.log(0.8)])
    total, parts = reinforce_loss(logp, torch.tensor([3.0, 2.0, 1.0]), torch.ones(3), vf_coeff=0.0)
    # [2, 1, 0] standardised (unbiased std 1) = [1, 0, -1]
    assert parts["policy_loss"].item() == pytest.approx(-(math.log(0.5) - math.log(0.8)) / 3, abs=1e-6)
    assert total.item() == pytest.approx(parts["policy_loss"].item(), abs=1e-6)


def test_returns_to_go_by_hand():
    assert returns_to_go(torch.tensor([1.0, 1.0, 1.0]), 0.5).tolist() == [1.75, 1.5, 1.0]


def test_encoders_shapes():
    mlp = build_encoder((4,), hidden=32, layers=2)
    assert mlp(torch.zeros(5, 4)).shape == (5, 32) and mlp.out_dim == 32
    cnn = build_encoder((4, 84, 84), hidden=64, width=8)
    assert isinstance(cnn, FrameEncoder)
    assert cnn(torch.zeros(2, 4, 84, 84)).shape == (2, 64)
    with pytest.raises(ValueError, match="image observations"):
        build_encoder((4,), kind="cnn")


class _TinyActor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 3)

    def greedy_logits(self, obs):
        return self.net(obs.float())


def test_exported_policy_matches_the_module(tmp_path):
    from components.rl.policy import export_policy, load_policy

    torch.manual_seed(0)
    actor = _TinyActor()
    export_policy(actor, (4,), tmp_path, meta={"env": "test"})
    policy = load_policy(tmp_path)
    obs = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    expected = actor.greedy_logits(torch.from_numpy(obs)).argmax(-1).numpy()
    actions = policy(obs)
    assert actions.dtype == np.int64 and actions.tolist() == expected.tolist()
    assert int(policy(obs[0])) == int(expected[0])  # one observation
    assert policy(obs[:1]).shape == (1,)  # batch of one: the batch dimension is dynamic
    with pytest.raises(ValueError, match="shape"):
        policy(np.zeros((2, 5), np.float32))


def test_gif_holds_every_frame(tmp_path):
    from PIL import Image

    from components.rl.policy import save_gif

    frames = [np.full((40, 60, 3), 40 * i, np.uint8) for i in range(5)]
    path = save_gif(frames, tmp_path / "e.gif")
    with Image.open(path) as img:
        assert img.n_frames == 5 and img.size == (60, 40)


def test_episodes_with_a_fixed_policy():
    from components.rl.envs import make_env
    from components.rl.policy import record_frames, run_episodes

    returns = run_episodes(lambda obs: 0, lambda: make_env("CartPole-v1"), episodes=3, seed=0)
    assert returns.shape == (3,) and (returns >= 8).all() and (returns < 30).all()  # always-left falls fast
    frames, ret = record_frames(lambda obs: 0, lambda: make_env("CartPole-v1", render_mode="rgb_array"), seed=0)
    assert len(frames) == ret + 1 and frames[0].ndim == 3 and frames[0].shape[2] == 3


def test_atari_cnn_policy_steps_on_real_frames(tmp_path):
    """Pong frames (ale-py's bundled ROM) through the CNN actor-critic, exported, stepping the real env."""
    pytest.importorskip("ale_py")
    from components.rl.envs import make_env
    from components.rl.policy import export_policy, load_policy, run_episodes
    from pipelines.rllib.modules import ActorCriticModule

    env = make_env("ALE/Pong-v5")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and obs.max() > 0  # real, non-blank frames
    module = ActorCriticModule(observation_space=env.observation_space, action_space=env.action_space,
                               model_config={"encoder": "auto", "hidden": 64, "width": 8})
    assert isinstance(module.pi_encoder, FrameEncoder) and module.shared
    batch = torch.from_numpy(np.stack([obs, obs]))
    values = module.compute_values({"obs": batch})
    assert values.shape == (2,) and torch.isfinite(values).all()
    export_policy(module, obs.shape, tmp_path)
    policy = load_policy(tmp_path)
    action = int(policy(obs))
    assert 0 <= action < env.action_space.n
    returns = run_episodes(policy, lambda: make_env("ALE/Pong-v5"), episodes=1, seed=0, max_steps=60)
    assert returns.shape == (1,) and -21 <= returns[0] <= 21
    env.close()


def test_rl_config_errors():
    from pipelines.config import ConfigError, load_config
    from pipelines.flows.rl import check, registered_name, stop_return

    with pytest.raises(ConfigError, match="rl.algo"):
        load_config("rl", ["rl.algo=a2c"])
    with pytest.raises(ConfigError, match="rl.env=Nope-v0"):
        check(load_config("rl", ["rl.env=Nope-v0"]))
    with pytest.raises(ConfigError, match="dqn"):
        check(load_config("rl", ["rl.algo=dqn", "rl.env=ALE/Pong-v5"]))
    cfg = load_config("rl", ["rl.algo=dqn"])
    assert registered_name(cfg) == "cartpole-v1-dqn" and stop_return(cfg) == 475.0
    assert registered_name(load_config("rl_atari")) == "ale-pong-v5-ppo"
    assert stop_return(load_config("rl", ["rl.stop_return=200"])) == 200.0


def test_greedy_checks_start_near_the_stop_return_for_positive_and_negative_targets():
    from pipelines.config import load_config
    from pipelines.flows.rl import _greedy_check_due, _reached
    from pipelines.services import names

    cfg = load_config("rl", [])  # greedy_check_from 0.9, 20 episodes
    due = lambda mean, target, c=cfg: _greedy_check_due(c, {names.RL_EPISODE_RETURN_MEAN: mean}, target)
    assert not due(427.0, 475.0) and due(427.5, 475.0) and due(500.0, 475.0)
    assert due(-105.0, -100.0) and not due(-115.0, -100.0)  # Acrobot: within 10% of |-100|
    assert not due(float("nan"), 475.0) and not due(500.0, None)
    assert not _greedy_check_due(cfg, {}, 475.0)
    assert not due(500.0, 475.0, load_config("rl", ["rl.greedy_check_episodes=0"]))
    assert _reached(475.0, 475.0) and not _reached(474.9, 475.0) and not _reached(None, 475.0)
    assert not _reached(float("nan"), 475.0) and not _reached(500.0, None)


def test_greedy_check_plays_the_current_module_greedily():
    """A stand-in module whose greedy action is always "left" falls within ~10 steps on every seed."""
    import gymnasium as gym
    import torch

    from pipelines.config import load_config
    from pipelines.flows.rl import greedy_check

    class AlwaysLeft(torch.nn.Module):
        observation_space = gym.spaces.Box(-1.0, 1.0, (4,))  # CartPole's, as an RLModule has it

        def greedy_logits(self, obs):
            return torch.tensor([[1.0, 0.0]]).expand(obs.shape[0], 2)

    class Algo:
        def get_module(self):
            return AlwaysLeft()

    cfg = load_config("rl", ["rl.greedy_check_episodes=5"])
    assert 8 <= greedy_check(cfg, Algo(), iteration=3) < 30


def test_rl_torch_threads_default_to_one_for_vector_observations():
    from pipelines.config import load_config
    from pipelines.flows.rl import torch_threads

    assert torch_threads(load_config("rl", [])) == 1
    assert torch_threads(load_config("rl_atari")) == 0  # torch's own default for the CNN
    assert torch_threads(load_config("rl", ["rl.torch_threads=3"])) == 3
