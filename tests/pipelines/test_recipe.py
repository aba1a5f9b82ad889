"""The ``recipe`` pipeline end to end, shrunk: the quickstart's net with ten-view test-time augmentation inside
the registered model, on a real local Ray and MLflow store.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_recipe.py
"""

from __future__ import annotations

import pytest

from pipelines.services import names
from tests.conftest import shrunk_config

pytestmark = pytest.mark.slow


def test_the_recipe_config_is_the_quickstart_with_its_measured_choices():
    from pipelines.config import load_config

    recipe, quickstart = load_config("recipe"), load_config("quickstart")
    assert (recipe.model.name, recipe.model.width, recipe.data.name) == (
        quickstart.model.name, quickstart.model.width, quickstart.data.name)
    assert (recipe.model.dropout, recipe.model.tta, recipe.train.epochs, recipe.train.precision) == (
        0.0, "flip_shift", 12, "auto")
    assert recipe.registered_model_name == quickstart.registered_model_name == "fashion-mnist-classifier"


def test_the_recipe_evaluates_and_serves_the_ten_views_it_registers(ray_local, mlflow_store):
    """digits, shrunk (its flips and shifts switched on so the views are allowed): the evaluate stage scores
    the channels-last ten-view model and checks the served path against it; the registered model carries
    the views, and the pyfunc a server loads predicts what the package does in NCHW."""
    import mlflow
    import numpy as np
    import torch

    from components.packaging import load_package
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("recipe", "data.augment.flip=true", "data.augment.crop_padding=1")
    result = run_pipeline(cfg, command="test")
    client = mlflow.MlflowClient()
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    assert 0.2 < parent.data.metrics[names.metric(names.TEST, "accuracy")] <= 1.0  # chance is 0.1
    evaluation = result.outputs["evaluation"]
    model, spec = load_package(evaluation.model_dir)
    assert spec.tta == "flip_shift" and spec.dropout == 0.0
    images = evaluation.example
    pyfunc = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model_name}/1")
    served = pyfunc.predict(images)
    classes, probs = model.predict_uint8(images)  # the package in NCHW, as loaded
    assert np.array_equal(served["class"], classes.numpy())
    torch.testing.assert_close(torch.as_tensor(np.asarray(served["probabilities"])), probs, atol=1e-5, rtol=1e-4)
    plain = type(model)(model.normalize, model.net).eval()  # the same weights without the views
    with torch.no_grad():
        x = torch.as_tensor(images).float().div(255).unsqueeze(1)
        assert not torch.allclose(plain(x).softmax(1), probs, atol=1e-4)  # the views changed the answer
