"""The explain and style pipelines end to end on tiny configs: a real local Ray, a real MLflow store.

    .venv/bin/python -m pytest -q -m slow tests/pipelines/test_explain.py

``explain`` explains the session's shrunk quickstart model (digits-classifier v1, ``quickstart_run``) in that
run's store; ``style`` runs its three modes at 32 px. One run each, checked through module-scoped fixtures.
"""

from __future__ import annotations

import json

import pytest

from pipelines.config import ConfigError
from pipelines.services import names
from tests.conftest import shrunk_config, store_context

TINY_EXPLAIN = ("explain.images=12", "explain.grid=4", "explain.patch=2", "explain.stride=2",
                "explain.smoothgrad_samples=3", "explain.ig_steps=6", "explain.curve_steps=6", "explain.eps=[0.05,0.1]",
                "explain.pgd_steps=3", "explain.adv_images=96", "explain.fool_classes=[0,7]", "explain.class_steps=15",
                "explain.tsne_points=150", "explain.umap=false", "explain.queries=2")
TINY_STYLE = ("style.size=32", "style.steps=8", "style.dream_steps=4", "style.log_every=4", "style.filters=8",
              "style.scales=[1,2]", "style.content_scale=2", "style.lr=0.05")


@pytest.fixture(scope="module")
def explained(quickstart_run):
    from pipelines.dispatch import run_pipeline

    with store_context(quickstart_run.store) as store:
        result = run_pipeline(shrunk_config("explain", *TINY_EXPLAIN), command="test")
        client = store.client()
        parent = client.get_run(result.run_id)
        runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
        stage = next(r for r in runs if r.data.tags.get(names.STAGE_TAG) == "explain")
        yield result, client, parent, stage


@pytest.mark.slow
def test_explain_is_linked_to_the_version_it_explains(explained):
    result, _, parent, stage = explained
    assert parent.data.tags[names.EXPLAINS_TAG] == "digits-classifier/1"
    assert stage.data.tags[names.EXPLAINS_TAG] == "digits-classifier/1"
    assert result.outputs["result"]["model"] == "digits-classifier/1"


@pytest.mark.slow
def test_explain_ranks_the_attribution_methods_by_deletion_auc(explained):
    _, client, _, stage = explained
    path = client.download_artifacts(stage.info.run_id, names.EXPLAIN_FAITHFULNESS_TABLE)
    table = json.load(open(path))
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert {r["method"] for r in rows} == {"gradients", "smoothgrad", "integrated_gradients", "occlusion", "random"}
    assert [r["deletion_auc"] for r in rows] == sorted(r["deletion_auc"] for r in rows)
    metrics = stage.data.metrics
    for method in ("gradients", "occlusion", "random"):
        assert 0 <= metrics[names.explain_method_metric("deletion_auc", method)] <= 1
        assert 0 <= metrics[names.explain_method_metric("insertion_auc", method)] <= 1
    assert stage.data.tags[names.EXPLAIN_BEST_METHOD_TAG] in {r["method"] for r in rows} - {"random"}


@pytest.mark.slow
def test_explain_attacks_lower_accuracy_per_eps_as_steps(explained):
    _, client, _, stage = explained
    history = {m.step: m.value for m in client.get_metric_history(stage.info.run_id, names.EXPLAIN_ADV_ACCURACY)}
    assert sorted(history) == [0, 50, 100]  # step = 1000·ε; 0 is the clean accuracy
    assert history[0] == stage.data.metrics[names.EXPLAIN_CLEAN_ACCURACY]
    assert history[100] <= history[0]
    pgd = {m.step: m.value for m in client.get_metric_history(stage.info.run_id, names.EXPLAIN_PGD_ACCURACY)}
    assert pgd[100] <= history[100] + 0.05  # PGD is at least about as strong as FGSM
    assert stage.data.metrics[names.EXPLAIN_LOSS_FGSM] > stage.data.metrics[names.EXPLAIN_LOSS_CLEAN]
    assert stage.data.metrics[names.EXPLAIN_FOOLING_CONFIDENCE_MIN] >= 0.99


@pytest.mark.slow
def test_explain_embeds_the_features_and_logs_every_figure(explained):
    _, client, _, stage = explained
    metrics = stage.data.metrics
    assert metrics[names.EXPLAIN_EMBEDDED_POINTS] == 150
    for key in (names.explain_embedding_metric("tsne", "knn_accuracy"), names.EXPLAIN_FEATURE_KNN,
                names.explain_embedding_metric("tsne", "trustworthiness")):
        assert 0 <= metrics[key] <= 1
    assert metrics[names.EXPLAIN_FEATURE_KNN] > 0.3  # chance is 0.1 on ten digits
    assert names.explain_embedding_metric("umap", "knn_accuracy") not in metrics  # explain.umap=false
    logged = {f.path for f in client.list_artifacts(stage.info.run_id, "explain")}
    for plot in (names.EXPLAIN_ATTRIBUTION_PLOT, names.EXPLAIN_FAITHFULNESS_PLOT, names.EXPLAIN_ADVERSARIAL_PLOT,
                 names.EXPLAIN_ADV_CURVE_PLOT, names.EXPLAIN_FOOLING_PLOT, names.EXPLAIN_CLASS_MODELS_PLOT,
                 names.EXPLAIN_NEIGHBOURS_PLOT, names.explain_embedding_plot("tsne"), names.EXPLAIN_SUMMARY):
        assert plot in logged, plot


def test_a_missing_model_is_one_sentence_before_anything_starts(mlflow_store):
    from pipelines.dispatch import preflight

    with pytest.raises(ConfigError, match=r"explain.model=models:/nope@champion: no registered model 'nope'"):
        preflight(shrunk_config("explain", "explain.model=models:/nope@champion"))
    with pytest.raises(ConfigError, match="explain.model"):
        shrunk_config("explain", "explain.model=runs:/abc/convnet")
    with pytest.raises(ConfigError, match="style.style=nowhere.png"):
        preflight(shrunk_config("style", "style.style=nowhere.png"))


@pytest.fixture(scope="module")
def styled(ray_local, tmp_path_factory):
    from pipelines.dispatch import run_pipeline
    from tests.conftest import Store

    with store_context(Store(tmp_path_factory.mktemp("style"))) as store:
        result = run_pipeline(shrunk_config("style", *TINY_STYLE), command="test")
        client = store.client()
        parent = client.get_run(result.run_id)
        runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
        stage = next(r for r in runs if r.data.tags.get(names.STAGE_TAG) == "style")
        modes = {r.data.tags[names.STYLE_MODE_TAG]: r for r in client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{stage.info.run_id}'")}
        yield result, client, stage, modes


@pytest.mark.slow
def test_style_logs_each_mode_step_by_step_with_its_images(styled):
    result, client, stage, modes = styled
    assert set(modes) == {"transfer", "texture", "dream"}
    for mode in ("transfer", "texture"):
        history = client.get_metric_history(modes[mode].info.run_id, names.STYLE_LOSS)
        assert sorted(m.step for m in history) == list(range(1, 9))
        values = [m.value for m in sorted(history, key=lambda m: m.step)]
        assert values[-1] < values[0], mode
        assert modes[mode].data.metrics[names.STYLE_LOSS_REDUCTION] > 1
    assert len(client.get_metric_history(modes["transfer"].info.run_id, names.STYLE_CONTENT_LOSS)) == 8
    dream = [m.value for m in client.get_metric_history(modes["dream"].info.run_id, names.STYLE_DREAM_OBJECTIVE)]
    assert len(dream) == 4
    for run in modes.values():
        files = {f.path for f in client.list_artifacts(run.info.run_id, "style")}
        assert names.STYLE_RESULT in files
        assert any(f.path.startswith("images") for f in client.list_artifacts(run.info.run_id))  # step-wise images
    stage_files = {f.path for f in client.list_artifacts(stage.info.run_id, "style")}
    assert {names.style_result(m) for m in modes} <= stage_files
    assert result.outputs["summary"]["transfer"]["content_loss_ratio"] >= 0


@pytest.mark.slow
def test_a_missing_alias_or_version_is_named(quickstart_run):
    from pipelines.dispatch import preflight

    with store_context(quickstart_run.store):
        # the shared quickstart store: other tests may give the model more aliases than champion
        with pytest.raises(ConfigError, match="digits-classifier has no alias 'nope' \\(it has: [^)]*champion"):
            preflight(shrunk_config("explain", "explain.model=models:/digits-classifier@nope"))
        with pytest.raises(ConfigError, match="digits-classifier has no version 99"):
            preflight(shrunk_config("explain", "explain.model=models:/digits-classifier/99"))
