"""End-to-end rl pipeline on a real local Ray and a real MLflow store: short real runs of each algorithm.

Each run trains a couple of iterations (not to convergence: the targets are measured separately, see
the rl section of the README), then evaluates greedily, logs a GIF and registers a pyfunc policy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Store, shrunk_config, store_context

pytestmark = pytest.mark.slow

#: Shrunk budgets: a few iterations, a few evaluation episodes, a short GIF.
RL_SHRINK = ("rl.eval_episodes=3", "rl.gif_max_frames=40", "rl.num_envs_per_env_runner=2")
PER_ALGO = {
    "ppo": ("rl.max_iterations=2", "rl.ppo.train_batch_size=256", "rl.ppo.minibatch_size=64", "rl.ppo.num_epochs=2"),
    "reinforce": ("rl.max_iterations=2", "rl.reinforce.episodes_per_batch=4"),
    "dqn": ("rl.max_iterations=1", "rl.dqn.learning_starts=64", "rl.dqn.batch_size=32",
            "rl.dqn.training_intensity=1"),
}
LEARNER_METRIC = {"ppo": "rl/policy_loss", "reinforce": "rl/policy_loss", "dqn": "rl/qf_loss"}


def _run(algo: str, *extra: str):
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("rl", f"rl.algo={algo}", *RL_SHRINK, *PER_ALGO[algo], *extra)
    return cfg, run_pipeline(cfg, command=f"test rl {algo}")


def _child(client, parent_id: str, stage: str):
    exp = client.get_experiment_by_name("visionray/rl")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                                                                 f"tags.`visionray.stage` = '{stage}'")
    assert len(runs) == 1
    return runs[0]


@pytest.fixture(scope="module")
def ppo_run(ray_local, tmp_path_factory) -> tuple[Store, object, object]:
    """One ppo pipeline run in a store of its own: the pipeline test and the checkpoint test both read it."""
    store = Store(tmp_path_factory.mktemp("rl-ppo"))
    with store_context(store):
        cfg, result = _run("ppo")
    return store, cfg, result


@pytest.mark.parametrize("algo", ["ppo", "dqn", "reinforce"])
def test_rl_pipeline_trains_evaluates_registers(ray_local, request, tmp_path, algo):
    if algo == "ppo":
        store, cfg, result = request.getfixturevalue("ppo_run")
    else:
        store, cfg, result = Store(tmp_path), None, None
    with store_context(store):
        if result is None:
            cfg, result = _run(algo)
        _check_pipeline_run(store, cfg, result, algo)


def _check_pipeline_run(store: Store, cfg, result, algo: str) -> None:
    import mlflow.pyfunc

    client = store.client()
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["rl/env_steps"] > 0 and "rl/eval_return_mean" in parent.data.metrics

    train = _child(client, result.run_id, "train")
    steps = client.get_metric_history(train.info.run_id, "rl/env_steps")
    assert [m.step for m in steps] == list(range(1, cfg.rl.max_iterations + 1))
    assert steps[-1].value == result.outputs["agent"].env_steps
    assert LEARNER_METRIC[algo] in train.data.metrics and "rl/episode_return_mean" in train.data.metrics
    assert "rllib_checkpoint.json" in {Path(f.path).name for f in client.list_artifacts(train.info.run_id, "checkpoint")}

    evaluate = _child(client, result.run_id, "evaluate")
    returns = result.outputs["evaluation"].returns
    assert len(returns) == 3 and evaluate.data.metrics["rl/eval_return_mean"] == pytest.approx(np.mean(returns))
    assert "episode/episode.gif" in {f.path for f in client.list_artifacts(evaluate.info.run_id, "episode")}

    name = f"cartpole-v1-{algo}"
    version = client.get_model_version_by_alias(name, "champion")
    assert version.tags["run_id"] == result.run_id and float(version.tags["eval_return_mean"]) == pytest.approx(
        np.mean(returns), abs=1e-5)
    # The policy explains itself, and MLflow's source run is the run its run_id tag names.
    assert version.run_id == result.run_id
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.name == f"{algo}-policy" and logged.source_run_id == result.run_id
    assert {m.key: m.value for m in logged.metrics} == {"rl/eval_return_mean": pytest.approx(np.mean(returns))}
    assert "reinforcement-learning policy" in version.description and "environment: CartPole-v1" in version.description
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    obs = np.random.default_rng(0).uniform(-0.05, 0.05, size=(6, 4)).astype(np.float32)
    actions = np.asarray(model.predict(obs))
    assert actions.shape == (6,) and actions.dtype == np.int64 and set(actions.tolist()) <= {0, 1}


def test_rl_checkpoint_restores_and_gate_keeps_the_better_policy(ppo_run):
    store, cfg, result = ppo_run
    with store_context(store):
        _check_restore_and_gate(store, cfg, result)


def _check_restore_and_gate(store: Store, cfg, result) -> None:
    from pipelines.flows.rl import restore_algorithm, restore_module
    from pipelines.services import registry

    agent = result.outputs["agent"]
    # The checkpoint restores the whole algorithm (and it trains on) and the module alone.
    algo = restore_algorithm(cfg, agent.checkpoint_dir)
    try:
        before = algo.get_module().get_state()
        algo.train()
        assert algo.training_iteration == cfg.rl.max_iterations + 1
    finally:
        algo.stop()
    module = restore_module(agent.checkpoint_dir)
    assert all(np.allclose(module.get_state()[k], v) for k, v in before.items())

    # The champion moves only on a better greedy return.
    ev = result.outputs["evaluation"]
    name = "cartpole-v1-ppo"
    worse = registry.register_policy(name, ev.policy_dir, ev.mean - 1, ev.example, {"run_id": "worse"})
    assert worse.alias == "challenger" and worse.previous_champion == 1
    better = registry.register_policy(name, ev.policy_dir, ev.mean + 1, ev.example, {"run_id": "better"})
    assert better.alias == "champion" and better.previous_accuracy == pytest.approx(ev.mean, abs=1e-5)
    assert int(store.client().get_model_version_by_alias(name, "champion").version) == better.version


def test_atari_smoke_run(ray_local, mlflow_store):
    """The GPU-cluster Atari config, shrunk to one tiny PPO iteration on real Pong frames, on CPU."""
    pytest.importorskip("ale_py")
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("rl_atari", "cluster=local", "rl.max_iterations=1", "rl.num_env_runners=0",
                        "rl.num_envs_per_env_runner=1", "rl.ppo.train_batch_size=64", "rl.ppo.minibatch_size=32",
                        "rl.ppo.num_epochs=1", "rl.cnn_width=8", "rl.ppo.hidden=64", "rl.eval_episodes=1",
                        "rl.eval_max_steps=50", "rl.gif_max_frames=10")
    result = run_pipeline(cfg, command="test rl_atari")
    assert result.outputs["agent"].obs_shape == (4, 84, 84)
    assert result.outputs["agent"].env_steps >= 64
    version = mlflow_store.client().get_model_version_by_alias("ale-pong-v5-ppo", "champion")
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/ale-pong-v5-ppo/{version.version}")
    frames = result.outputs["evaluation"].example
    actions = np.asarray(model.predict(frames))
    assert frames.shape == (3, 4, 84, 84) and actions.shape == (3,) and ((0 <= actions) & (actions < 6)).all()


def test_train_agent_runs_inside_a_tune_trial(ray_local, mlflow_store):
    """What the sweep helper does: train_agent in a Ray Tune function trial, reporting each iteration."""
    import dataclasses

    from ray import tune

    from pipelines.flows.rl import train_agent

    base = shrunk_config("rl", "rl.algo=reinforce", *RL_SHRINK, *PER_ALGO["reinforce"])

    def trainable(params):
        cfg = dataclasses.replace(base, rl=dataclasses.replace(
            base.rl, reinforce=dataclasses.replace(base.rl.reinforce, lr=params["lr"])))
        train_agent(cfg, on_iteration=lambda i, m: tune.report({**m, "iteration": i}),
                    workdir=mlflow_store.root / f"trial-{params['lr']}")

    tuner = tune.Tuner(trainable, param_space={"lr": tune.grid_search([1e-3])},
                       run_config=tune.RunConfig(storage_path=str(mlflow_store.root / "tune"), verbose=0))
    results = tuner.fit()
    assert not results.errors
    best = results.get_best_result(metric="rl/env_steps", mode="max")
    assert best.metrics["iteration"] == 2 and best.metrics["rl/env_steps"] > 0


def test_train_agent_reports_each_iteration_and_resumes_from_its_newest_periodic_checkpoint(ray_local, mlflow_store):
    from pipelines.flows.rl import latest_checkpoint, train_agent

    base = ("rl.algo=reinforce", *RL_SHRINK, *PER_ALGO["reinforce"], "rl.checkpoint_every=1")
    workdir = mlflow_store.root / "agent"
    reported: list[tuple[int, dict]] = []
    first = train_agent(shrunk_config("rl", *base, "rl.max_iterations=2"),
                        on_iteration=lambda i, m: reported.append((i, m)), workdir=workdir)
    # Each iteration is reported, with growing step counts and the learner's metrics.
    assert [i for i, _ in reported] == [1, 2] and first.iterations == 2
    assert reported[-1][1]["rl/env_steps"] == first.env_steps > reported[0][1]["rl/env_steps"] > 0
    assert "rl/episode_return_mean" in first.metrics and "rl/policy_loss" in first.metrics
    assert (Path(first.checkpoint_dir) / "rllib_checkpoint.json").is_file()
    assert latest_checkpoint(workdir)[1] == 2
    assert sorted(p.name for p in workdir.glob("checkpoint-*")) == ["checkpoint-00002"]  # only the newest kept

    seen: list[int] = []
    resumed = train_agent(shrunk_config("rl", *base, "rl.max_iterations=4"), on_iteration=lambda i, m: seen.append(i),
                          workdir=workdir, resume=True)
    assert seen == [3, 4] and resumed.iterations == 4  # iterations 1-2 are not trained again
    assert resumed.env_steps > first.env_steps  # the step counter carries on from the checkpoint
    assert latest_checkpoint(workdir)[1] == 4

    fresh = train_agent(shrunk_config("rl", *base, "rl.max_iterations=1"), workdir=mlflow_store.root / "empty",
                        resume=True)  # nothing to resume from: starts afresh
    assert fresh.iterations == 1
