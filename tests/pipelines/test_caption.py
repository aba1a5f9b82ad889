"""The caption pipeline end to end on a tiny config: Fashion-MNIST grids, a real local Ray, a real MLflow store,
and the registered captioner loaded back as the MLflow pyfunc that ``mlflow models serve`` runs.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_caption.py
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.services import names
from tests.conftest import shrunk_config
from tests.scoring import post, serve_in_thread

TINY = ("data=fashion_grid", "caption.train_images=256", "caption.width=8", "caption.embed=16", "caption.hidden=32",
        "caption.beam_size=2", "train.epochs=2", "train.batch_size=32")


@pytest.mark.slow
def test_caption_trains_scores_registers_and_serves_captions(ray_local, mlflow_store):
    import mlflow

    from pipelines.dispatch import run_pipeline

    result = run_pipeline(shrunk_config("caption", *TINY), command="test")
    client = mlflow_store.client()
    parent = client.get_run(result.run_id)
    metrics = parent.data.metrics
    assert 0.0 <= metrics["test/bleu4"] <= 1.0 and 0.0 <= metrics["test/mention_f1"] <= 1.0
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    train = next(r for r in runs if r.data.tags.get(names.STAGE_TAG) == "train")
    for key in ("val/bleu4", "val/mention_f1", "val/loss", "train/loss"):
        assert sorted(m.step for m in client.get_metric_history(train.info.run_id, key)) == [1, 2], key
    # Captions are decoded on val only: no train/bleu4 and no gap logged as NaN.
    assert "train/bleu4" not in train.data.metrics and names.train_val_gap("bleu4") not in train.data.metrics
    losses = [m.value for m in sorted(client.get_metric_history(train.info.run_id, "train/loss"), key=lambda m: m.step)]
    assert losses[1] < losses[0]  # it learns
    assert result.outputs["decision"].name == "fashion-grid-captioner"

    data = np.load(result.outputs["prepared"].path("test"))
    images = data["images"][:3, ..., 0]  # N×H×W uint8, as a client sends grey images
    model = mlflow.pyfunc.load_model("models:/fashion-grid-captioner@champion")
    greedy = model.predict(images)
    beam = model.predict(images, params={"beam_size": 3})
    assert len(greedy["caption"]) == 3 and all(isinstance(c, str) for c in greedy["caption"])
    assert len(beam["caption"]) == 3
    # Over HTTP, as `visionray serve` / `mlflow models serve` answer: raw images in, one caption each out.
    server, thread, base = serve_in_thread("models:/fashion-grid-captioner@champion")
    try:
        served = post(f"{base}/invocations", {"inputs": images.tolist(), "params": {"beam_size": 3}})["predictions"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert served["caption"] == list(beam["caption"])
