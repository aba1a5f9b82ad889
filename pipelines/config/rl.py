"""The ``rl.*`` section: an RLlib agent on a Gymnasium env, and each algorithm's options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelines.config.base import _check, _doc

RLAlgo = Literal["ppo", "dqn", "reinforce"]


@dataclass(frozen=True)
class PPOOptions:  # rl.ppo.* (tuned on CartPole-v1)
    lr: float = _doc("Adam learning rate", 1e-3)
    train_batch_size: int = _doc("env steps sampled per iteration (one PPO update)", 512)
    minibatch_size: int = _doc("SGD minibatch size", 128)
    num_epochs: int = _doc("passes over each sampled batch", 10)
    clip: float = _doc("clip range of the probability ratio", 0.2)
    lambda_: float = _doc("GAE lambda (0.8: less variance, CartPole's short credit horizon allows it)", 0.8)
    vf_coeff: float = _doc("weight of the value loss", 0.5)
    entropy_coeff: float = _doc("weight of the entropy bonus", 0.0)
    hidden: int = _doc("units per hidden layer (policy and value towers)", 64)
    layers: int = _doc("hidden layers per tower", 2)

    def __post_init__(self) -> None:
        _check(self.lr > 0, "rl.ppo.lr", "must be > 0")
        _check(self.minibatch_size <= self.train_batch_size, "rl.ppo.minibatch_size",
               "must be <= rl.ppo.train_batch_size")


@dataclass(frozen=True)
class DQNOptions:  # rl.dqn.* (CartPole-v1; close to rl-baselines3-zoo's tuned DQN)
    lr: float = _doc("Adam learning rate", 2.3e-3)
    batch_size: int = _doc("transitions per gradient step, sampled from the replay buffer", 64)
    target_update_freq: int = _doc("env steps between target-network syncs", 256)
    double_q: bool = _doc("double Q-learning: the online net picks the next action, the target net scores it", True)
    dueling: bool = _doc("dueling heads: Q = V + A - mean(A)", True)
    prioritized: bool = _doc("prioritised experience replay (alpha 0.6, beta 0.4) instead of uniform", True)
    buffer_capacity: int = _doc("replay buffer size in transitions", 50000)
    n_step: int = _doc("n-step returns", 3)
    epsilon_start: float = _doc("epsilon-greedy exploration at step 0", 1.0)
    epsilon_end: float = _doc("epsilon after the schedule", 0.04)
    epsilon_steps: int = _doc("env steps of the linear epsilon decay", 8000)
    learning_starts: int = _doc("env steps collected before the first update", 1000)
    training_intensity: float = _doc(
        "replayed / sampled transitions ratio (0: RLlib's native train_batch_size / rollout fragment)", 32.0)
    hidden: int = _doc("units per hidden layer", 256)
    layers: int = _doc("hidden layers of the encoder", 2)

    def __post_init__(self) -> None:
        _check(self.lr > 0, "rl.dqn.lr", "must be > 0")
        _check(self.n_step >= 1, "rl.dqn.n_step", "must be >= 1")
        _check(0 <= self.epsilon_end <= self.epsilon_start <= 1, "rl.dqn.epsilon_start",
               "and rl.dqn.epsilon_end must satisfy 0 <= end <= start <= 1")
        _check(self.training_intensity >= 0, "rl.dqn.training_intensity", "must be >= 0")


@dataclass(frozen=True)
class ReinforceOptions:  # rl.reinforce.* (tuned on CartPole-v1)
    lr: float = _doc("Adam learning rate (policy and baseline)", 2e-3)
    episodes_per_batch: int = _doc("complete episodes per update (one gradient step, §14)", 8)
    vf_coeff: float = _doc("weight of the baseline's squared error", 0.5)
    entropy_coeff: float = _doc("weight of the entropy bonus", 0.0)
    normalize_advantages: bool = _doc("standardise G_t - b(s_t) within each batch", True)
    hidden: int = _doc("units per hidden layer (policy and baseline towers)", 64)
    layers: int = _doc("hidden layers per tower", 2)

    def __post_init__(self) -> None:
        _check(self.lr > 0, "rl.reinforce.lr", "must be > 0")
        _check(self.episodes_per_batch >= 1, "rl.reinforce.episodes_per_batch", "must be >= 1")


@dataclass(frozen=True)
class RLConfig:
    algo: RLAlgo = _doc("RLlib algorithm: ppo, dqn or reinforce (REINFORCE with a learned baseline)", "ppo")
    env: str = _doc("Gymnasium environment id (CartPole-v1, Acrobot-v1, LunarLander-v3, ALE/Pong-v5, ...)",
                    "CartPole-v1")
    max_env_steps: int = _doc("stop training after this many env steps (0: no limit)", 200000)
    max_iterations: int = _doc("stop training after this many iterations (0: no limit)", 0)
    stop_return: float | None = _doc(
        "stop when the training return mean (last 100 episodes) reaches this (None: the env's "
        "reward_threshold, e.g. 475 on CartPole-v1; no threshold: train to the budget)", None)
    num_env_runners: int = _doc("remote env-runner actors (0: sample in the driver's process)", 0)
    num_envs_per_env_runner: int = _doc(
        "vectorised envs per env runner (0: the algorithm's default: ppo 8, reinforce 4, dqn 1)", 0)
    gamma: float = _doc("discount factor", 0.99)
    torch_threads: int = _doc(
        "torch threads of the process that samples and learns (0: 1 for vector observations, whose tiny MLP "
        "updates only lose time to thread hand-offs (3.6x slower DQN at 2 threads here); torch's default "
        "for image observations)", 0)
    encoder: Literal["auto", "mlp", "cnn"] = _doc(
        "auto: the CNN of components.rl.encoders for image observations, else an MLP", "auto")
    cnn_width: int = _doc("cnn encoder: channels of its first block", 16)
    frame_stack: int = _doc("Atari: stacked 84x84 grey frames per observation", 4)
    eval_episodes: int = _doc("greedy evaluation episodes (Gymnasium, after training)", 100)
    eval_max_steps: int = _doc("cap on the steps of one evaluation episode (0: the env's own limit)", 0)
    gif: bool = _doc("render one greedy episode of the final policy to a GIF artifact", True)
    gif_max_frames: int = _doc("frames of that GIF at most", 500)
    checkpoint_every: int = _doc(
        "save a checkpoint every this many iterations, keeping the newest; `resume=` continues from it "
        "(0: only the final one)", 10)
    greedy_check_episodes: int = _doc(
        "once the training return mean reaches greedy_check_from x the stop return, play this many greedy "
        "episodes with the current weights after each iteration; training stops when their mean reaches the "
        "stop return, and the best-checked weights are kept (0: stop on the training mean alone)", 20)
    greedy_check_from: float = _doc("fraction of the stop return the training mean must reach before checks start",
                                    0.9)
    ppo: PPOOptions = _doc("PPO options", default_factory=PPOOptions)
    dqn: DQNOptions = _doc("DQN options (§14: target net, double Q, dueling, PER, n-step, epsilon)",
                           default_factory=DQNOptions)
    reinforce: ReinforceOptions = _doc("REINFORCE-with-baseline options", default_factory=ReinforceOptions)

    def __post_init__(self) -> None:
        _check(bool(self.env.strip()), "rl.env", "must name a Gymnasium environment")
        _check(self.max_env_steps >= 0 and self.max_iterations >= 0, "rl.max_env_steps",
               "and rl.max_iterations must be >= 0")
        _check(self.greedy_check_episodes >= 0, "rl.greedy_check_episodes", "must be >= 0")
        _check(self.torch_threads >= 0, "rl.torch_threads", "must be >= 0")
        _check(0 < self.greedy_check_from <= 1.5, "rl.greedy_check_from", "must be in (0, 1.5]")
        _check(self.max_env_steps > 0 or self.max_iterations > 0 or self.stop_return is not None,
               "rl.max_env_steps", "must be > 0 unless rl.max_iterations or rl.stop_return bounds training")
        _check(self.num_env_runners >= 0, "rl.num_env_runners", "must be >= 0")
        _check(self.num_envs_per_env_runner >= 0, "rl.num_envs_per_env_runner", "must be >= 0")
        _check(0 < self.gamma <= 1, "rl.gamma", "must be in (0, 1]")
        _check(self.eval_episodes >= 1, "rl.eval_episodes", "must be >= 1")
        _check(self.frame_stack >= 1 and self.cnn_width >= 1, "rl.frame_stack", "and rl.cnn_width must be >= 1")
