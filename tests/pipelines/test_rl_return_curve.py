"""An RL train run's learning curve, drawn from the metrics it logged (a hand-made run, no RLlib).

    .venv/bin/python -m pytest -q tests/pipelines/test_rl_return_curve.py
"""

from __future__ import annotations

import mlflow

from pipelines.flows.rl import log_return_curve
from pipelines.services import names, tracking
from tests.conftest import shrunk_config


def test_the_train_run_gets_its_return_curve_and_a_run_without_returns_none(mlflow_store):
    cfg = shrunk_config("rl")
    client = mlflow_store.client()
    exp = client.create_experiment(names.experiment_name("rl"))
    with mlflow.start_run(experiment_id=exp) as run:
        for i in range(1, 4):
            mlflow.log_metrics({names.RL_ENV_STEPS: 1000.0 * i, names.RL_EPISODE_RETURN_MEAN: 20.0 * i}, step=i)
        mlflow.log_metric(names.RL_GREEDY_CHECK_RETURN_MEAN, 150.0, step=3)
        log_return_curve(cfg, mlflow_store.uri, run.info.run_id)
    assert tracking.artifact_files(mlflow_store.uri, run.info.run_id, (".png",)) == [names.RL_RETURN_PLOT]
    with mlflow.start_run(experiment_id=exp) as empty:  # no iteration finished an episode: no figure
        mlflow.log_metric(names.RL_ENV_STEPS, 100.0, step=1)
        log_return_curve(cfg, mlflow_store.uri, empty.info.run_id)
    assert tracking.artifact_files(mlflow_store.uri, empty.info.run_id, (".png",)) == []
