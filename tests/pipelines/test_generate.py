"""The generate pipeline end to end on sklearn's 8×8 digits: a VAE and a PixelCNN, each trained for two
epochs on the session's real local Ray and logged to one real MLflow store, registered, and served back
as the MLflow pyfunc that ``mlflow models serve`` runs (seeds in, images out).

    .venv/bin/python -m pytest -m slow tests/pipelines/test_generate.py
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from pipelines.services import names
from tests.conftest import Store, shrunk_config, store_context
from tests.scoring import post, serve_in_thread

TINY = ("data.max_train_rows=512", "data.max_eval_rows=128", "generate.iw_samples=8", "generate.iw_rows=32",
        "generate.interpolations=2", "model.width=8")
MODELS = {"vae": ("generate.latent=4",), "pixelcnn": ("model.depth=1",)}


@dataclass(frozen=True)
class GenerateRuns:
    store: Store
    results: dict  # model -> PipelineResult


@pytest.fixture(scope="module")
def generate_runs(ray_local, tmp_path_factory) -> GenerateRuns:
    from pipelines.dispatch import run_pipeline

    store = Store(tmp_path_factory.mktemp("generate"))
    with store_context(store):
        results = {m: run_pipeline(shrunk_config("generate", f"model={m}", *TINY, *extra), command="test")
                   for m, extra in MODELS.items()}
    return GenerateRuns(store, results)


def _stage(client, parent, stage: str):
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return next(r for r in runs if r.data.tags.get(names.STAGE_TAG) == stage)


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_generate_trains_scores_in_bits_per_dim_beside_the_baselines(generate_runs, model):
    client = generate_runs.store.client()
    parent = client.get_run(generate_runs.results[model].run_id)
    m = parent.data.metrics
    test = {k: m[names.metric(names.TEST, k)] for k in (names.BITS_PER_DIM, names.BASELINE_CATEGORICAL_BITS,
                                                         names.BASELINE_XZ_BITS, names.PIXEL_LEVELS)}
    assert 0 < test[names.BITS_PER_DIM] < 8 and test[names.PIXEL_LEVELS] == 256  # below a uniform guess's 8
    assert 0 < test[names.BASELINE_XZ_BITS] < 8 and 0 < test[names.BASELINE_CATEGORICAL_BITS] < 8
    train = _stage(client, parent, "train")
    for key in ("train/loss", "val/bits_per_dim"):
        assert sorted(p.step for p in client.get_metric_history(train.info.run_id, key)) == [1, 2], key
    losses = [p.value for p in sorted(client.get_metric_history(train.info.run_id, "train/loss"), key=lambda p: p.step)]
    assert losses[1] < losses[0]  # it learns
    # the 8×8 sample grid of each epoch, as MLflow images stepped by the epoch
    images = [f.path for f in client.list_artifacts(train.info.run_id, "images")]
    key = names.SAMPLE_GRID.replace("/", "~")  # MLflow's file name for an image key: "<key>+step+<n>+..."
    for step in (1, 2):
        assert any(p.split("/")[-1].startswith(f"{key}+step+{step}+") and p.endswith(".png") for p in images), images
    evaluate = [f.path for f in client.list_artifacts(_stage(client, parent, "evaluate").info.run_id, "samples")]
    assert names.FINAL_SAMPLE_GRID in evaluate
    if model == "vae":
        assert names.INTERPOLATION_GRID in evaluate
        iw, elbo = m[names.metric(names.TEST, names.BITS_PER_DIM_IW)], m[names.metric(names.TEST, names.BITS_PER_DIM_ELBO_IW_ROWS)]
        assert iw <= elbo + 1e-6 and m[names.metric(names.TEST, "kl_bits_per_dim")] >= 0


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_registered_generator_serves_one_image_per_seed_and_the_same_images_for_the_same_seeds(generate_runs, model):
    import mlflow

    decision = generate_runs.results[model].outputs["decision"]
    assert decision.name == f"digits-{model}" and decision.alias == names.CHAMPION
    with store_context(generate_runs.store):
        served = mlflow.pyfunc.load_model(f"models:/digits-{model}@champion")
        first = served.predict(np.array([3, 1, 4, 1, 5], dtype=np.int64))["images"]
        again = served.predict(np.array([1, 5], dtype=np.int64))["images"]
    assert first.shape == (5, 8, 8) and first.dtype == np.uint8
    assert np.array_equal(first[1], first[3]) and np.array_equal(again[0], first[1]) and np.array_equal(again[1], first[4])
    if model == "vae":  # over HTTP, as `visionray serve` / `mlflow models serve` answer: seeds in, images out
        with store_context(generate_runs.store):
            server, thread, base = serve_in_thread(f"models:/digits-{model}@champion")
        try:
            over_http = post(f"{base}/invocations", {"inputs": [3, 1, 4]})["predictions"]["images"]
        finally:
            server.should_exit = True
            thread.join(timeout=10)
        assert np.array_equal(np.asarray(over_http, dtype=np.uint8), first[:3])
