"""A registered version explains itself: named after its architecture, its metrics and test split linked
to the logged model, a description that says how to make it again, one run id (a real SQLite store)."""

from __future__ import annotations

import numpy as np
from mlflow import MlflowClient

from pipelines.records import Evaluation
from pipelines.services import names, registry, tracking
from tests.conftest import shrunk_config


def _evaluation(tmp_path) -> Evaluation:
    from components.packaging import ModelSpec, save_package

    spec = ModelSpec(name="softmax", in_channels=1, num_classes=10, image_size=8,
                     classes=tuple(str(i) for i in range(10)))
    package = save_package(tmp_path / "package", spec.build(), spec)
    return Evaluation.of_classifier(str(package), test_loss=2.25, test_accuracy=0.125,
                                    example=np.zeros((2, 8, 8), dtype=np.uint8))


def test_a_version_is_logged_from_the_pipeline_run_with_its_metrics_dataset_and_description(mlflow_store, tmp_path):
    cfg = shrunk_config("quickstart")
    evaluation = _evaluation(tmp_path)
    (tmp_path / "shards").mkdir()
    command = "visionray run quickstart data=digits train.epochs=1"
    with tracking.pipeline_run(cfg, command) as parent:
        with tracking.stage_run("ingest", parent):
            for split in ("train", "test"):
                tracking.log_dataset(f"digits-{split}", "v" * 40, tmp_path / "shards", split, "x")
        tracking.log_metrics({names.TEST_ACCURACY: 0.125, names.TEST_LOSS: 2.25})  # as the flows do
        with tracking.stage_run("register", parent) as register_run:
            decision = registry.run(cfg, evaluation, 10, {names.RUN_ID: parent.run_id, names.GIT_SHA: "abc",
                                                          names.DATASET_VERSION: "v" * 16})
    client = MlflowClient(mlflow_store.uri)
    version = client.get_model_version(decision.name, str(decision.version))
    # One run id: MLflow's source run, the logged model's and the run_id tag are all the pipeline run.
    assert version.run_id == version.tags[names.RUN_ID] == parent.run_id != register_run
    assert version.source.startswith("models:/m-")  # the logged model itself, not a run's artifact path
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    assert model.name == "softmax" and model.source_run_id == parent.run_id and model.model_type == "classification"
    assert model.params["num_classes"] == "10"
    linked = {m.key: (m.value, m.dataset_name, m.dataset_digest) for m in model.metrics}
    assert linked == {names.TEST_ACCURACY: (0.125, "digits-test", "v" * 36),
                      names.TEST_LOSS: (2.25, "digits-test", "v" * 36)}
    # Linked without a second point in the run's own history.
    assert len(client.get_metric_history(parent.run_id, names.TEST_ACCURACY)) == 1
    assert model.model_id in [o.model_id for o in client.get_run(parent.run_id).outputs.model_outputs]
    for part in ("**softmax** image classifier", f"data: digits-test version {'v' * 16}", "test/accuracy 0.1250",
                 "test/loss 2.2500", f"run: {parent.run_id} (git abc)", f"reproduce: `{command}`"):
        assert part in version.description, part
    assert version.description.index("test/accuracy") < version.description.index("test/loss")  # primary first
    assert model.tags[names.RUN_NOTE_TAG] == version.description  # the logged model's page says the same
    assert "@champion" in client.get_registered_model(decision.name).description


def test_a_policy_card_names_the_algorithm_and_its_greedy_return():
    card = registry.policy_card(187.5, {names.RL_ALGO_TAG: "ppo", names.RL_ENV_TAG: "CartPole-v1"})
    assert card.model_name == "ppo-policy" and card.metrics == {names.RL_EVAL_RETURN_MEAN: 187.5}
    text = registry.describe_version(card, {names.RL_ENV_TAG: "CartPole-v1"}, "r1", "visionray run rl")
    assert text.splitlines() == ["**ppo-policy** reinforcement-learning policy  ", "environment: CartPole-v1  ",
                                 "rl/eval_return_mean 187.5000  ", "run: r1  ", "reproduce: `visionray run rl`"]


def test_a_compressed_variant_comes_from_its_method_run_and_still_finds_the_pipelines_test_split(mlflow_store,
                                                                                                  tmp_path):
    cfg = shrunk_config("quickstart")
    evaluation = _evaluation(tmp_path)
    (tmp_path / "shards").mkdir()
    with tracking.pipeline_run(cfg, "visionray run compress") as parent:
        with tracking.stage_run("ingest", parent):
            tracking.log_dataset("digits-test", "w" * 40, tmp_path / "shards", "test", "x")
        with tracking.stage_run("compress", parent) as stage_id:
            with tracking.method_run("compress-int8", parent, stage_id, {}) as method_id:
                tracking.log_metrics({names.TEST_ACCURACY: 0.125, names.TEST_LOSS: 2.25})
                version = registry.register_version(cfg, evaluation, 10, {
                    names.RUN_ID: method_id, names.COMPRESSION: "int8", names.DATASET_VERSION: "w" * 16})
    client = MlflowClient(mlflow_store.uri)
    v = client.get_model_version(cfg.registered_model_name, str(version))
    assert v.run_id == v.tags[names.RUN_ID] == method_id
    model = client.get_logged_model(v.source.removeprefix("models:/"))
    assert model.name == "softmax-int8"
    # The method run was the active run: MLflow linked its metrics itself, once each.
    assert sorted(m.key for m in model.metrics) == [names.TEST_ACCURACY, names.TEST_LOSS]
    assert len(client.get_metric_history(method_id, names.TEST_ACCURACY)) == 1
    assert "compressed: int8" in v.description
    assert f"data: digits-test version {'w' * 16}" in v.description  # found through the method run's parents


def test_every_task_has_words_for_its_registered_models_description():
    from components.tasks import TASKS

    assert set(TASKS) <= set(registry.TASK_WORDS), set(TASKS) - set(registry.TASK_WORDS)
