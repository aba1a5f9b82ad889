"""The sweep driver's closing of trial runs, on a real MLflow store.

A trial's last report can miss Tune: Ray Train hands it over through a queue the trial's function may
already have left. Rank 0 logged that epoch to the trial's run regardless, so the run's record counts.
"""

from __future__ import annotations

from types import SimpleNamespace

from pipelines.flows.sweep import _tune_callback
from pipelines.services import names, tracking


def _trial_run(store, trial_id: str) -> tuple[str, str, str]:
    client = store.client()
    experiment_id = client.create_experiment("visionray/sweep")
    parent = client.create_run(experiment_id).info.run_id
    run_id = tracking.trial_run(store.uri, experiment_id, parent, trial_id, "trial", {"train.lr": 0.1}, {})
    return experiment_id, parent, run_id


def test_a_last_report_tune_missed_still_counts_the_epoch_the_run_logged(mlflow_store):
    experiment_id, parent, run_id = _trial_run(mlflow_store, "t1")
    client = mlflow_store.client()
    for epoch, acc in ((1, 0.8), (2, 0.9)):  # what rank 0 logs, epoch by epoch
        client.log_metric(run_id, names.TRAIN_LOSS, 1.0 / epoch, step=epoch)
        client.log_metric(run_id, names.VAL_ACCURACY, acc, step=epoch)
    callback = _tune_callback(mlflow_store.uri, experiment_id, parent, names.VAL_ACCURACY, "max", epochs=2)
    first = {names.EPOCH: 1, names.VAL_ACCURACY: 0.8, names.TRAIN_LOSS: 1.0}
    trial = SimpleNamespace(trial_id="t1", last_result=dict(first))
    callback.on_trial_result(1, [trial], trial, dict(first))  # Tune saw epoch 1 only
    callback.on_trial_complete(2, [trial], trial)

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics[names.TRIAL_EPOCHS] == 2
    assert run.data.tags[names.TRIAL_STATUS_TAG] == "completed"  # not early_stopped: it ran every epoch
    assert [m.step for m in client.get_metric_history(run_id, names.VAL_ACCURACY)] == [1, 2]


def test_an_epoch_only_tune_saw_is_backfilled_and_counted(mlflow_store):
    experiment_id, parent, run_id = _trial_run(mlflow_store, "t2")
    client = mlflow_store.client()
    client.log_metric(run_id, names.TRAIN_LOSS, 1.0, step=1)
    client.log_metric(run_id, names.VAL_ACCURACY, 0.7, step=1)
    callback = _tune_callback(mlflow_store.uri, experiment_id, parent, names.VAL_ACCURACY, "max", epochs=3)
    trial = SimpleNamespace(trial_id="t2", last_result={})
    for epoch, acc in ((1, 0.7), (2, 0.75)):  # ASHA stopped it at epoch 2's report, before rank 0 logged it
        result = {names.EPOCH: epoch, names.VAL_ACCURACY: acc, names.TRAIN_LOSS: 1.0 / epoch}
        callback.on_trial_result(epoch, [trial], trial, result)
        trial.last_result = result
    callback.on_trial_complete(3, [trial], trial)

    run = client.get_run(run_id)
    assert run.data.metrics[names.TRIAL_EPOCHS] == 2
    assert run.data.tags[names.TRIAL_STATUS_TAG] == "early_stopped"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, names.VAL_ACCURACY)] == [(1, 0.7), (2, 0.75)]
