"""The sweep's search space (conf → Tune domains → a trial's config), coarse to fine, the train command,
the CPU meter and the parallel-coordinates plot: fast, no Ray cluster, no MLflow store."""

from __future__ import annotations

import time

import pytest

from pipelines.config import ConfigError, load_config
from pipelines.flows import search_space


def sweep(*overrides: str):
    return load_config("sweep", ["data=digits", *overrides])


def test_the_sweep_conf_declares_a_space_every_trial_can_apply():
    cfg = sweep()
    assert cfg.kind == "sweep" and cfg.tune.space
    point = {"train.lr": 0.0123, "train.optimizer": "adamw", "model.width": 32, "model.dropout": 0.25}
    trial = search_space.apply(cfg, point)
    assert (trial.train.lr, trial.train.optimizer, trial.model.width, trial.model.dropout) == (0.0123, "adamw", 32, 0.25)
    assert trial.data.name == "digits" and trial.train.epochs == cfg.train.epochs  # the rest is the sweep's


def test_a_group_in_the_space_selects_its_file_before_dotted_keys_apply():
    cfg = sweep("tune.space={model: {choice: [convnet, resnet20]}, model.width: {choice: [8, 16]}}")
    trial = search_space.apply(cfg, {"model": "resnet20", "model.width": 8})
    assert trial.model.name == "resnet" and trial.model.depth == 20 and trial.model.width == 8


@pytest.mark.parametrize("space, names", [
    ("{train.lrr: {loguniform: [0.001, 1]}}", "train.lrr"),
    ("{train.lr: {logunif: [0.001, 1]}}", "logunif"),
    ("{train.lr: {loguniform: [0, 1]}}", "lo > 0"),
    ("{train.lr: {uniform: [1, 0.1]}}", "lo < hi"),
    ("{model: {choice: [convnet, nope]}}", "nope"),
    ("{model: {uniform: [1, 2]}}", "config group"),
])
def test_a_bad_space_is_a_config_error_naming_the_key(space, names):
    with pytest.raises(ConfigError, match=names):
        sweep(f"tune.space={space}")


def test_a_sampled_value_the_config_refuses_is_a_config_error():
    with pytest.raises(ConfigError, match="model.dropout"):
        search_space.apply(sweep(), {"model.dropout": 1.5})


def test_tune_domains_sample_inside_their_ranges():
    domains = search_space.tune_domains(sweep().tune.space)
    for _ in range(50):
        lr = domains["train.lr"].sample()
        assert 0.003 <= lr <= 0.5
        assert domains["train.optimizer"].sample() in ("nesterov", "adamw")


def test_refine_shrinks_ranges_around_the_best_points_and_keeps_their_choices():
    space = {"train.lr": {"loguniform": [1e-4, 1.0]}, "model.dropout": {"uniform": [0.0, 0.5]},
             "train.optimizer": {"choice": ["sgd", "adam", "adamw"]}, "model.width": {"randint": [8, 64]}}
    best = [{"train.lr": 0.01, "model.dropout": 0.1, "train.optimizer": "adam", "model.width": 20},
            {"train.lr": 0.03, "model.dropout": 0.2, "train.optimizer": "adamw", "model.width": 24}]
    fine = search_space.refine(space, best)
    lo, hi = fine["train.lr"]["loguniform"]
    assert 1e-4 <= lo < 0.01 and 0.03 < hi <= 1.0 and hi / lo < 1e4 / 10  # much narrower than 4 decades
    lo, hi = fine["model.dropout"]["uniform"]
    assert 0.0 <= lo < 0.1 and 0.2 < hi < 0.5
    assert fine["train.optimizer"] == {"choice": ["adam", "adamw"]}
    lo, hi = fine["model.width"]["randint"]
    assert 8 <= lo <= 20 and 24 < hi <= 64


def test_the_best_config_becomes_a_train_command_that_reproduces_it():
    winner = search_space.apply(sweep("train.epochs=3"), {"train.lr": 0.0123, "model.width": 32,
                                                           "train.optimizer": "adamw", "cluster.torch_threads": 1})
    tokens = search_space.train_overrides(winner)
    again = load_config("train", tokens)
    assert search_space._train_view(again) == search_space._train_view(winner)
    assert "train.lr=0.0123" in tokens and "data=digits" in tokens
    assert not any(t.startswith("cluster.torch_threads") for t in tokens)  # the sweep's, not the recipe's
    assert search_space.command(tokens).startswith("visionray run train data=digits")


def test_the_train_command_starts_from_a_file_of_the_winners_own_model():
    # the quickstart-sized sweep's winner: a convnet whose width and dropout moved; a detector's file once
    # differed in fewer keys and the command read "model=centernet ... model.name=convnet"
    winner = search_space.apply(sweep("data=fashion_mnist", "data.max_train_rows=10000"),
                                {"model.width": 16, "model.dropout": 0.008, "train.lr": 0.078})
    tokens = search_space.train_overrides(winner)
    assert not any(t.startswith("model.name=") for t in tokens), tokens
    assert search_space._train_view(load_config("train", tokens)) == search_space._train_view(winner)


def test_the_cpu_meter_counts_this_process_cpu_time():
    from pipelines.flows.sweep import CpuMeter

    with CpuMeter(interval_s=0.05, cores=1) as meter:
        start = time.process_time()
        while time.process_time() - start < 0.3:
            sum(i * i for i in range(1000))
    assert meter.cpu_seconds() >= 0.25
    assert meter.utilization() > 0


def test_parallel_coordinates_draws_one_line_per_trial():
    from components.plots import parallel_coordinates_figure

    rows = [{"train.lr": 0.01, "opt": "adam", "acc": 0.9}, {"train.lr": 0.1, "opt": "sgd", "acc": 0.8},
            {"train.lr": 0.3, "opt": "sgd", "acc": None}]
    fig = parallel_coordinates_figure(rows, ["train.lr", "opt"], "acc", log_axes=["train.lr"])
    assert len(fig.axes[0].lines) == 3 + 3  # three trials, three axis lines


def test_the_summary_logs_the_table_the_plot_and_the_winner_as_a_train_command(mlflow_store):
    """The parent run's part of a sweep, on a real MLflow store (no Ray needed)."""
    import mlflow

    from pipelines.flows.sweep import _summarise
    from pipelines.services import names

    cfg = sweep("tune.space={train.lr: {loguniform: [0.001, 1]}, train.optimizer: {choice: [sgd, adam]}}")
    rows = [{"trial_id": "t0", "run_id": "r0", "train.lr": 0.01, "train.optimizer": "adam", "status": "completed",
             "epochs": 6, "best val/accuracy": 0.91, "last val/accuracy": 0.9},
            {"trial_id": "t1", "run_id": "r1", "train.lr": 0.5, "train.optimizer": "sgd", "status": "early_stopped",
             "epochs": 1, "best val/accuracy": 0.6, "last val/accuracy": 0.6},
            {"trial_id": "t2", "run_id": "r2", "train.lr": 0.9, "train.optimizer": "sgd", "status": "stopped_loss",
             "epochs": 0, "best val/accuracy": None, "last val/accuracy": None}]
    with mlflow.start_run() as run:
        best = _summarise(cfg, rows, {names.SWEEP_CPU_UTILIZATION: 0.5})
    assert best["trial_id"] == "t0"
    client = mlflow_store.client()
    data = client.get_run(run.info.run_id).data
    assert data.metrics[names.SWEEP_TRIALS] == 3 and data.metrics[names.SWEEP_TRIAL_EPOCHS] == 7
    assert data.metrics[names.SWEEP_BEST_METRIC] == 0.91 and data.metrics["sweep/trials_stopped_loss"] == 1
    assert "r0" in data.tags[names.BEST_TRIAL_TAG]
    overrides = open(client.download_artifacts(run.info.run_id, names.BEST_OVERRIDES_ARTIFACT)).read().split()
    assert "train.lr=0.01" in overrides and "train.optimizer=adam" in overrides
    assert search_space._train_view(load_config("train", overrides)) == search_space._train_view(
        search_space.apply(cfg, {"train.lr": 0.01, "train.optimizer": "adam"}))
    table = {a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "sweep")}
    assert {"trials.json", "trials.csv"} <= table
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/parallel_coordinates.png"]
