"""Pipeline ``rl``: train an RLlib agent (PPO, DQN or REINFORCE with a baseline), evaluate it greedily
with Gymnasium, register the policy in MLflow (§14)::

    visionray run rl                                   # PPO on CartPole-v1 until it is solved
    visionray run rl rl.algo=dqn                       # DQN: target net, double Q, dueling, PER, n-step
    visionray run rl rl.algo=reinforce rl.env=Acrobot-v1
    visionray run rl_atari                             # PPO on ALE/Pong-v5 with the CNN encoder (GPU cluster)

Stages: ``train`` (RLlib on the pipeline's Ray runtime; per-iteration ``rl/*`` metrics, the final
checkpoint as artifacts), ``evaluate`` (restore the RLModule from that checkpoint, export the greedy
policy, run ``rl.eval_episodes`` episodes, log ``rl/eval_return_mean``/``_std`` and a GIF),
``register`` (``<env id>-<algo>``, a pyfunc serving the exported policy; ``champion`` moves only on
a better evaluation). :func:`train_agent` is the reusable part (sweeps call it in Tune trials).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipelines.config import Config, ConfigError
from pipelines.flows import kit
from pipelines.services import names, tracking
from pipelines.services.progress import say

#: RLlib learner results logged per iteration (RLlib emits dozens; these say how learning goes).
LEARNER_KEYS = {
    "ppo": ("policy_loss", "vf_loss", "entropy", "mean_kl_loss"),
    "dqn": ("qf_loss", "qf_mean", "td_error_mean"),
    "reinforce": ("policy_loss", "vf_loss", "entropy"),
}


@dataclass
class AgentResult:
    checkpoint_dir: str  # an RLlib Algorithm checkpoint (Algorithm.from_checkpoint restores it)
    env_steps: int
    iterations: int
    seconds: float
    obs_shape: tuple[int, ...]
    metrics: dict[str, float] = field(default_factory=dict)  # the last iteration's, rl/... keys


@dataclass
class RLEvaluation:
    policy_dir: str  # exported greedy policy (components.rl.policy)
    returns: list[float]
    mean: float
    std: float
    example: Any  # a few observations, the registered model's input example


def env_name(env_id: str) -> str:
    """The name the env is registered under with Ray Tune (every env runner builds it the same way)."""
    return f"visionray/{env_id}"


def registered_name(cfg: Config) -> str:
    """``registry.name``, else ``<env id lowercased>-<algo>`` (Config.registered_model_name)."""
    return cfg.registered_model_name


def stop_return(cfg: Config) -> float | None:
    from components.rl.envs import reward_threshold

    return cfg.rl.stop_return if cfg.rl.stop_return is not None else reward_threshold(cfg.rl.env)


def check(cfg: Config) -> None:
    """User errors in the rl section, before Ray starts: an unknown env, DQN on frames."""
    from components.rl.envs import check_env_id, is_atari

    try:
        check_env_id(cfg.rl.env)
    except ValueError as e:
        raise ConfigError(f"rl.env={cfg.rl.env}: {e}.") from None
    if cfg.rl.algo == "dqn" and (is_atari(cfg.rl.env) or cfg.rl.encoder == "cnn"):
        raise ConfigError("rl.algo=dqn runs on vector observations only here (RLlib's DQN module has no "
                          "channels-first CNN); use rl.algo=ppo or rl.algo=reinforce for Atari frames.")


def algorithm_config(cfg: Config):
    """The RLlib AlgorithmConfig (new API stack) for ``cfg.rl``."""
    from ray.tune.registry import register_env

    from components.rl.envs import make_env
    from pipelines.rllib.modules import actor_critic_spec

    r = cfg.rl
    frame_stack = r.frame_stack
    env_id = r.env
    register_env(env_name(env_id), lambda _ctx: make_env(env_id, frame_stack=frame_stack))
    if r.algo == "ppo":
        from ray.rllib.algorithms.ppo import PPOConfig

        p = r.ppo
        config = PPOConfig().training(
            lr=p.lr, gamma=r.gamma, train_batch_size_per_learner=p.train_batch_size, minibatch_size=p.minibatch_size,
            num_epochs=p.num_epochs, clip_param=p.clip, lambda_=p.lambda_, vf_loss_coeff=p.vf_coeff,
            entropy_coeff=p.entropy_coeff,
            # RLlib clips the squared value error at 10 by default, which zeroes the critic's gradient
            # while returns are in the hundreds; the probability-ratio clip is PPO's trust region.
            vf_clip_param=float("inf"))
        config = config.rl_module(rl_module_spec=actor_critic_spec(
            p.hidden, p.layers, encoder=r.encoder, width=r.cnn_width))
    elif r.algo == "reinforce":
        from pipelines.rllib.reinforce import REINFORCEConfig

        q = r.reinforce
        config = REINFORCEConfig().training(
            lr=q.lr, gamma=r.gamma, episodes_per_batch=q.episodes_per_batch, vf_coeff=q.vf_coeff,
            entropy_coeff=q.entropy_coeff, normalize_advantages=q.normalize_advantages)
        config = config.rl_module(rl_module_spec=actor_critic_spec(
            q.hidden, q.layers, encoder=r.encoder, width=r.cnn_width))
    else:
        from ray.rllib.algorithms.dqn import DQNConfig
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

        d = r.dqn
        buffer = {"type": "PrioritizedEpisodeReplayBuffer", "alpha": 0.6, "beta": 0.4} if d.prioritized \
            else {"type": "EpisodeReplayBuffer"}
        config = DQNConfig().training(
            lr=d.lr, gamma=r.gamma, train_batch_size_per_learner=d.batch_size,
            target_network_update_freq=d.target_update_freq, double_q=d.double_q, dueling=d.dueling,
            n_step=d.n_step, epsilon=[[0, d.epsilon_start], [d.epsilon_steps, d.epsilon_end]],
            num_steps_sampled_before_learning_starts=d.learning_starts,
            replay_buffer_config={**buffer, "capacity": d.buffer_capacity},
            **({"training_intensity": d.training_intensity} if d.training_intensity > 0 else {}))
        config = config.rl_module(model_config=DefaultModelConfig(
            fcnet_hiddens=[d.hidden] * d.layers, fcnet_activation="relu", head_fcnet_hiddens=[d.hidden]))
    return (config.environment(env_name(env_id))
            .env_runners(num_env_runners=r.num_env_runners, num_envs_per_env_runner=envs_per_runner(cfg))
            .learners(num_learners=0, num_gpus_per_learner=1 if cfg.cluster.use_gpu else 0)
            .debugging(seed=cfg.seed, log_level="WARN"))


#: Vectorised envs per env runner when rl.num_envs_per_env_runner=0. DQN steps one env: with
#: several, each update would see n times more (correlated) transitions per exploration decision.
DEFAULT_ENVS = {"ppo": 8, "reinforce": 4, "dqn": 1}


def envs_per_runner(cfg: Config) -> int:
    return cfg.rl.num_envs_per_env_runner or DEFAULT_ENVS[cfg.rl.algo]


def iteration_metrics(result: dict[str, Any], algo: str) -> dict[str, float]:
    """The few numbers logged per iteration, under their contract names (rl/...)."""
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get("default_policy", {})
    out = {names.RL_ENV_STEPS: float(runners.get("num_env_steps_sampled_lifetime",
                                                 result.get("num_env_steps_sampled_lifetime", 0)))}
    if "episode_return_mean" in runners and not math.isnan(runners["episode_return_mean"]):
        out[names.RL_EPISODE_RETURN_MEAN] = float(runners["episode_return_mean"])
        out[names.RL_EPISODE_LEN_MEAN] = float(runners.get("episode_len_mean", float("nan")))
    for key in LEARNER_KEYS[algo]:
        if key in learner:
            out[names.rl_learner_metric(key)] = float(learner[key])
    return out


def latest_checkpoint(workdir: str | Path) -> tuple[Path, int] | None:
    """The newest periodic checkpoint (``checkpoint-NNNNN``, rl.checkpoint_every) in ``workdir`` and its
    iteration, or None."""
    found = sorted((int(p.name.rpartition("-")[2]), p) for p in Path(workdir).glob("checkpoint-[0-9]*")
                   if p.name.rpartition("-")[2].isdigit() and (p / "rllib_checkpoint.json").is_file())
    return (found[-1][1], found[-1][0]) if found else None


def train_agent(cfg: Config, on_iteration: Callable[[int, dict[str, float]], None] | None = None,
                run_id: str | None = None, workdir: str | Path | None = None, resume: bool = False) -> AgentResult:
    """Train ``cfg.rl.algo`` on ``cfg.rl.env`` until the stop return or the budget; save a checkpoint.

    Runs on the Ray runtime the caller started (never ``ray.init``): with ``rl.num_env_runners=0`` and
    no remote learners everything runs in the calling process, so it fits inside a Ray Tune trial::

        def trainable(params):
            cfg = dataclasses.replace(base_cfg, rl=dataclasses.replace(base_cfg.rl, gamma=params["gamma"]))
            agent = train_agent(cfg, on_iteration=lambda i, m: tune.report(m), run_id=trial_run_id)

    ``on_iteration(iteration, metrics)`` gets each iteration's ``rl/...`` metrics (1-based
    iteration). With ``run_id``, those metrics are also logged to that MLflow run (step =
    iteration) from this process, through ``tracking.RunLogger``, at ``tracking.resolve_uri(
    cfg.tracking.uri)``; set ``tracking.uri`` when the caller's working directory differs from the
    driver's. The checkpoint goes to ``workdir/checkpoint`` (default: ``cluster.storage_path/
    rl-<run_id or time>``). The returned ``metrics`` always holds ``rl/env_steps`` and, once an
    episode has finished, ``rl/episode_return_mean``.

    With ``resume`` (``visionray run rl resume=last``), training continues from the newest periodic
    checkpoint in ``workdir`` (``rl.checkpoint_every``): whatever RLlib checkpoints (weights, optimiser
    state, counters) and the iteration count, so the budget counts from the start of the first attempt.
    Without one it starts afresh and says so.
    """
    check(cfg)
    target = stop_return(cfg)
    logger = tracking.RunLogger(tracking.resolve_uri(cfg.tracking.uri), run_id) if run_id else None
    workdir = Path(workdir) if workdir else \
        Path(cfg.cluster.storage_path).resolve() / f"rl-{run_id or time.strftime('%Y%m%d-%H%M%S')}"
    threads = torch_threads(cfg)
    if threads:
        import torch

        torch.set_num_threads(threads)
    found = latest_checkpoint(workdir) if resume else None
    if resume and found is None:
        say(f"rl: no periodic checkpoint in {workdir} (rl.checkpoint_every={cfg.rl.checkpoint_every}); "
            "training from the start")
    algo = restore_algorithm(cfg, found[0]) if found else algorithm_config(cfg).build_algo()
    started = time.perf_counter()
    metrics: dict[str, float] = {}
    iteration = 0
    if found:
        iteration = algo.training_iteration
        say(f"rl: resumed from {found[0].name} (iteration {iteration})")
    best: tuple[float, int] | None = None  # (greedy check mean, iteration) of the weights saved in best/
    stopped_by = "budget"
    try:
        obs_shape = tuple(algo.get_module().observation_space.shape)
        while True:
            result = algo.train()
            iteration += 1
            metrics = iteration_metrics(result, cfg.rl.algo)
            metrics[names.RL_ENV_STEPS_PER_S] = metrics[names.RL_ENV_STEPS] / (time.perf_counter() - started)
            solved = _reached(metrics.get(names.RL_EPISODE_RETURN_MEAN), target)
            if _greedy_check_due(cfg, metrics, target):
                greedy = metrics[names.RL_GREEDY_CHECK_RETURN_MEAN] = greedy_check(cfg, algo, iteration)
                if best is None or greedy > best[0]:
                    best = (greedy, iteration)
                    algo.save(str(workdir / "best"))
                solved = _reached(greedy, target)
                say(f"rl: iteration {iteration}, greedy check {greedy:.1f} over {cfg.rl.greedy_check_episodes} "
                    f"episodes (best {best[0]:.1f} at iteration {best[1]})")
            if logger:
                logger.log_metrics(metrics, step=iteration)
            if on_iteration:
                on_iteration(iteration, metrics)
            if iteration == 1 or iteration % 10 == 0:
                say(f"rl: iteration {iteration}, {metrics[names.RL_ENV_STEPS]:.0f} env steps, return mean "
                    f"{metrics.get(names.RL_EPISODE_RETURN_MEAN, float('nan')):.1f}")
            if cfg.rl.checkpoint_every and iteration % cfg.rl.checkpoint_every == 0:
                previous = latest_checkpoint(workdir)
                algo.save(str(workdir / f"checkpoint-{iteration:05d}"))
                if previous is not None and previous[1] != iteration:  # keep only the newest one
                    shutil.rmtree(previous[0], ignore_errors=True)
            if solved:
                stopped_by = "return"
                break
            if _out_of_budget(cfg, iteration, metrics):
                break
        checkpoint = workdir / "checkpoint"
        algo.save(str(checkpoint))
    finally:
        algo.stop()
    seconds = time.perf_counter() - started
    say(f"rl: stopped ({'stop return reached' if stopped_by == 'return' else 'budget spent'}) after {iteration} "
        f"iterations, {metrics[names.RL_ENV_STEPS]:.0f} env steps, {seconds:.0f} s; training return mean "
        f"{metrics.get(names.RL_EPISODE_RETURN_MEAN, float('nan')):.1f}")
    if stopped_by == "budget" and best is not None and best[1] != iteration:
        # The last weights were never checked greedily, or checked worse: keep the best-checked ones
        # (the RL analogue of keeping the best-validation epoch).
        say(f"rl: keeping the weights of iteration {best[1]} (greedy check {best[0]:.1f}), not the last ones")
        checkpoint = workdir / "best"
    return AgentResult(str(checkpoint), int(metrics[names.RL_ENV_STEPS]), iteration, seconds, obs_shape, metrics)


def torch_threads(cfg: Config) -> int:
    """``rl.torch_threads``, or its automatic value (0 = leave torch's default alone)."""
    from components.rl.envs import is_atari

    if cfg.rl.torch_threads:
        return cfg.rl.torch_threads
    return 0 if is_atari(cfg.rl.env) or cfg.rl.encoder == "cnn" else 1


def _reached(value: float | None, target: float | None) -> bool:
    return target is not None and value is not None and not math.isnan(value) and value >= target


def _greedy_check_due(cfg: Config, metrics: dict[str, float], target: float | None) -> bool:
    """Checks start once the training mean is within ``greedy_check_from`` of the stop return."""
    mean = metrics.get(names.RL_EPISODE_RETURN_MEAN)
    if not cfg.rl.greedy_check_episodes or target is None or mean is None or math.isnan(mean):
        return False
    return mean >= target - (1 - cfg.rl.greedy_check_from) * abs(target)


def greedy_check(cfg: Config, algo, iteration: int) -> float:
    """Mean return of ``rl.greedy_check_episodes`` greedy episodes of the algorithm's current module.

    Seeds differ per iteration and from the final evaluation's, so selecting weights on these checks
    does not select them on the evaluation episodes.
    """
    from components.rl.envs import make_env
    from components.rl.policy import GreedyPolicy, LoadedPolicy, run_episodes

    module = algo.get_module()
    # The exported policy's calling convention (one observation or a batch, no grad), on the live module.
    act = LoadedPolicy(GreedyPolicy(module).eval(), tuple(module.observation_space.shape), {})
    r = cfg.rl
    n = r.greedy_check_episodes
    returns = run_episodes(act, lambda: make_env(r.env, frame_stack=r.frame_stack), n,
                           seed=cfg.seed + 1_000_000 + iteration * n, max_steps=r.eval_max_steps)
    return float(returns.mean())


def _out_of_budget(cfg: Config, iteration: int, metrics: dict[str, float]) -> bool:
    r = cfg.rl
    if r.max_env_steps and metrics[names.RL_ENV_STEPS] >= r.max_env_steps:
        return True
    return bool(r.max_iterations and iteration >= r.max_iterations)


def restore_algorithm(cfg: Config, checkpoint_dir: str | Path):
    """The whole RLlib Algorithm from a checkpoint of a run of ``cfg`` (to train on, or inspect).

    The env is registered first under the name the checkpoint refers to, so this works in a fresh
    process too.
    """
    from ray.rllib.algorithms.algorithm import Algorithm

    algorithm_config(cfg)  # registers the env creator with Ray Tune
    return Algorithm.from_checkpoint(str(checkpoint_dir))


def restore_module(checkpoint_dir: str | Path):
    """The trained RLModule from an Algorithm checkpoint (no env runners, no learners)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    return RLModule.from_checkpoint(Path(checkpoint_dir) / "learner_group" / "learner" / "rl_module" / "default_policy")


def evaluate(cfg: Config, checkpoint_dir: str | Path, out_dir: str | Path) -> RLEvaluation:
    """Restore, export the greedy policy to ``out_dir/policy``, run the greedy episodes, log them."""
    import numpy as np

    from components.rl.envs import make_env
    from components.rl.policy import (
        export_policy,
        load_policy,
        record_frames,
        run_episodes,
        save_gif,
    )

    module = restore_module(checkpoint_dir)
    obs_shape = tuple(module.observation_space.shape)
    policy_dir = export_policy(module, obs_shape, Path(out_dir) / "policy",
                               meta={"env": cfg.rl.env, "algo": cfg.rl.algo, "frame_stack": cfg.rl.frame_stack,
                                     "num_actions": int(module.action_space.n)})
    policy = load_policy(policy_dir)  # evaluate what will be served, not the live module
    r = cfg.rl
    started = time.perf_counter()
    returns = run_episodes(policy, lambda: make_env(r.env, frame_stack=r.frame_stack), r.eval_episodes,
                           seed=cfg.seed + 10_000, max_steps=r.eval_max_steps)
    mean, std = float(returns.mean()), float(returns.std())
    tracking.log_metrics({names.RL_EVAL_RETURN_MEAN: mean, names.RL_EVAL_RETURN_STD: std,
                          names.RL_EVAL_RETURN_MIN: float(returns.min()),
                          names.RL_EVAL_SECONDS: time.perf_counter() - started})
    tracking.log_json({"returns": returns.tolist()}, "eval/returns.json")
    say(f"evaluate: greedy return {mean:.1f} ± {std:.1f} over {r.eval_episodes} episodes "
        f"(min {returns.min():.0f}, max {returns.max():.0f})")
    if r.gif:
        # Classic-control envs draw with pygame, which otherwise probes for a sound card (ALSA noise).
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        frames, gif_return = record_frames(
            policy, lambda: make_env(r.env, frame_stack=r.frame_stack, render_mode="rgb_array"),
            seed=cfg.seed + 20_000, max_frames=r.gif_max_frames)
        gif = save_gif(frames, Path(out_dir) / "episode.gif")
        tracking.log_artifact(gif, "episode")
        say(f"evaluate: rendered {len(frames)} frames (return {gif_return:.0f}) to the artifact episode/episode.gif")
    env = make_env(r.env, frame_stack=r.frame_stack)
    example = np.stack([np.asarray(env.reset(seed=cfg.seed + i)[0], dtype=np.float32) for i in range(3)])
    env.close()
    return RLEvaluation(str(policy_dir), returns.tolist(), mean, std, example)


def log_return_curve(cfg: Config, uri: str, run_id: str) -> None:
    """The train run's learning curve (training return and greedy checks against env steps) as a figure."""
    from components.plots import return_curve_figure

    h = tracking.metric_histories(uri, run_id, (names.RL_EPISODE_RETURN_MEAN, names.RL_ENV_STEPS,
                                                names.RL_GREEDY_CHECK_RETURN_MEAN))
    steps = dict(h[names.RL_ENV_STEPS])  # iteration -> env steps so far
    if not steps or not (h[names.RL_EPISODE_RETURN_MEAN] or h[names.RL_GREEDY_CHECK_RETURN_MEAN]):
        return
    at = [(steps.get(i, float(i)), v) for i, v in h[names.RL_EPISODE_RETURN_MEAN]]
    greedy = [(steps.get(i, float(i)), v) for i, v in h[names.RL_GREEDY_CHECK_RETURN_MEAN]]
    tracking.log_figure(return_curve_figure(at, greedy, target=stop_return(cfg),
                                            title=f"{cfg.rl.algo} on {cfg.rl.env}"), names.RL_RETURN_PLOT)


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines.services import registry

    check(cfg)
    out: dict[str, Any] = {}
    workdir = kit.workdir_for(cfg, parent.run_id)
    with kit.stage("train", parent, cfg) as run_id:
        agent = out["agent"] = train_agent(cfg, run_id=run_id, workdir=workdir, resume=parent.resumed)
        tracking.log_metrics({names.RL_TRAIN_SECONDS: agent.seconds})
        tracking.log_artifact(agent.checkpoint_dir)  # a directory named checkpoint: artifacts checkpoint/...
        log_return_curve(cfg, parent.uri, run_id)
    tracking.log_metrics({k: v for k, v in agent.metrics.items()
                          if k in (names.RL_EPISODE_RETURN_MEAN, names.RL_ENV_STEPS)} | {
        names.RL_TRAIN_SECONDS: agent.seconds})
    if "evaluate" in cfg.stages:
        with kit.stage("evaluate", parent, cfg):
            evaluation = out["evaluation"] = evaluate(cfg, agent.checkpoint_dir, workdir)
        tracking.log_metrics({names.RL_EVAL_RETURN_MEAN: evaluation.mean, names.RL_EVAL_RETURN_STD: evaluation.std})
    if "register" in cfg.stages and cfg.registry.enabled:
        with kit.stage("register", parent, cfg):
            tags = {names.GIT_SHA: parent.tags[names.GIT_SHA], names.RUN_ID: parent.run_id,
                    names.RL_ENV_TAG: cfg.rl.env, names.RL_ALGO_TAG: cfg.rl.algo,
                    names.RL_ENV_STEPS_TAG: str(agent.env_steps)}
            out["decision"] = registry.register_policy(registered_name(cfg), evaluation.policy_dir, evaluation.mean,
                                                       evaluation.example, tags)
        parent.set_tags({names.DECISION_TAG: f"{out['decision'].alias}: {out['decision'].model_uri}"})
    return out
