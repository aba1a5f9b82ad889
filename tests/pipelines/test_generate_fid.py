"""The generate pipeline's implicit models end to end on digits at a tiny size: DCGAN, the conditional DCGAN
and the DDPM, on the session Ray and one MLflow store whose registered digits classifier (the session's
quickstart run: trained once) is the FID judge. Serving is checked from the same runs.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_generate_fid.py
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.services import names
from tests.conftest import shrunk_config, store_context

JUDGE = "generate.fid_model=models:/digits-classifier@champion"
TINY = ("model.width=8", "generate.fid_samples=200", "generate.fid_val_samples=100", "generate.class_samples=20",
        "generate.ddim_steps=10", "generate.gan_latent=16", JUDGE)
MODELS = ("dcgan", "cdcgan", "ddpm")


@pytest.fixture(scope="module")
def runs(quickstart_run, tmp_path_factory):
    """One tiny run of each model in a copy of the quickstart store (digits-classifier v1 is the judge)."""
    from pipelines.dispatch import run_pipeline

    store = quickstart_run.copy_store(tmp_path_factory.mktemp("generate-fid") / "store")
    out = {}
    with store_context(store):
        for model in MODELS:
            out[model] = run_pipeline(shrunk_config("generate", f"model={model}", *TINY), command="test")
        yield store, out


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_is_judged_by_fid_and_registers(runs, model):
    store, results = runs
    client = store.client()
    result = results[model]
    metrics = client.get_run(result.run_id).data.metrics
    fid = metrics[names.metric(names.TEST, names.FID)]
    floor = metrics[names.metric(names.TEST, names.reference_distance(names.FID, "real_train"))]
    noise = metrics[names.metric(names.TEST, names.reference_distance(names.FID, "noise"))]
    blurred = metrics[names.metric(names.TEST, names.reference_distance(names.FID, "blurred"))]
    assert 0 <= floor < min(noise, blurred) and fid > floor  # two tiny epochs do not reach the floor
    assert metrics[names.metric(names.TEST, names.FID_OVER_BLURRED)] == pytest.approx(fid / blurred)
    assert np.isfinite(metrics[names.metric(names.TEST, names.KID)])
    assert metrics[names.metric(names.TEST, names.NN_COPY_RATIO)] > 0
    assert names.metric(names.TEST, names.BASELINE_XZ_BITS) not in metrics  # no likelihood to set them beside
    runs_ = client.search_runs([client.get_run(result.run_id).info.experiment_id],
                               f"tags.mlflow.parentRunId = '{result.run_id}'")
    train = next(r for r in runs_ if r.data.tags.get(names.STAGE_TAG) == "train")
    history = client.get_metric_history(train.info.run_id, names.metric(names.VAL, names.FID))
    assert sorted(m.step for m in history) == [1, 2]  # the val FID after every epoch picks the best one
    best = metrics[names.best_val(names.FID)]
    assert best == pytest.approx(min(m.value for m in history))
    evaluate = next(r for r in runs_ if r.data.tags.get(names.STAGE_TAG) == "evaluate")
    artifacts = {a.path for a in client.list_artifacts(evaluate.info.run_id, "samples")}
    assert names.NEAREST_PLOT in artifacts
    assert result.outputs["decision"].name == f"digits-{model}"
    if model == "cdcgan":
        accuracy = metrics[names.metric(names.TEST, names.CLASS_ACCURACY)]
        assert 0.0 <= accuracy <= 1.0
        per_class = [k for k in client.get_run(evaluate.info.run_id).data.metrics
                     if k.startswith(names.per_class_accuracy(names.TEST, ""))]
        assert len(per_class) == 10
    if model == "dcgan":  # the GAN's own statistics, per epoch
        for key in ("train/d_loss", "train/g_loss", "val/d_real", "val/d_fake"):
            assert len(client.get_metric_history(train.info.run_id, key)) == 2, key


@pytest.mark.slow
@pytest.mark.parametrize("model", ("cdcgan", "ddpm"))
def test_a_served_generator_returns_the_count_asked_for_and_the_same_images_for_the_same_seeds(runs, model):
    import mlflow

    store, _ = runs
    with store_context(store):
        served = mlflow.pyfunc.load_model(f"models:/digits-{model}@champion")
        seeds = np.array([5, 6, 7], dtype=np.int64)
        params = {"label": 3} if model == "cdcgan" else None
        a = served.predict(seeds, params=params)["images"]
        b = served.predict(np.array([7, 5], dtype=np.int64), params=params)["images"]
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == (3, 8, 8) and a.dtype == np.uint8
    assert np.array_equal(a[0], b[1]) and np.array_equal(a[2], b[0])
    if model == "cdcgan":
        with store_context(store):
            other = np.asarray(served.predict(seeds, params={"label": 4})["images"])
        assert not np.array_equal(a, other)  # the label is honoured


@pytest.mark.slow
def test_a_judge_that_is_not_registered_stops_the_run_before_it_starts_naming_the_key(mlflow_store):
    from pipelines.config import ConfigError
    from pipelines.dispatch import run_pipeline

    for judge in ("models:/nope@champion", "models:/digits-classifier@champion"):  # an empty store
        with pytest.raises(ConfigError, match=f"generate.fid_model={judge} is not registered"):
            run_pipeline(shrunk_config("generate", "model=dcgan", f"generate.fid_model={judge}"), command="test")
    experiments = mlflow_store.client().search_experiments()
    assert not mlflow_store.client().search_runs([e.experiment_id for e in experiments])  # no run started
