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


@pytest.mark.slow
def test_coco_format_captions_train_with_every_reference_and_serve_rgb(ray_local, mlflow_store, tmp_path):
    """data=coco_captions: a small COCO-format set the test writes (two captions per image, one image missing)."""
    import json

    import mlflow
    from PIL import Image

    from pipelines.dispatch import run_pipeline

    (tmp_path / "imgs").mkdir()
    doc = {"images": [], "annotations": []}
    for i in range(48):
        colour = ("red", (220, 30, 30)) if i % 2 else ("blue", (30, 30, 220))
        pixels = np.zeros((24, 24, 3), np.uint8)
        pixels[6:18, 6:18] = colour[1]
        Image.fromarray(pixels).save(tmp_path / "imgs" / f"{i}.png")
        doc["images"].append({"id": i, "file_name": f"{i}.png"})
        doc["annotations"] += [{"image_id": i, "caption": f"a {colour[0]} square"},
                               {"image_id": i, "caption": f"A small {colour[0]} box."}]
    doc["images"].append({"id": 99, "file_name": "missing.png"})
    doc["annotations"].append({"image_id": 99, "caption": "gone"})
    (tmp_path / "captions.json").write_text(json.dumps(doc))

    cfg = shrunk_config("caption", "data=coco_captions", f"data.path={tmp_path / 'captions.json'}",
                        f"data.image_root={tmp_path / 'imgs'}", "data.image_size=16", "caption.width=8",
                        "caption.embed=16", "caption.hidden=32", "caption.beam_size=2", "train.epochs=2",
                        "train.batch_size=8", "registry.name=squares-captioner")
    result = run_pipeline(cfg, command="test")
    client = mlflow_store.client()
    parent = client.get_run(result.run_id)
    assert 0.0 <= parent.data.metrics["test/bleu4"] <= 1.0
    assert "test/mention_f1" not in parent.data.metrics  # COCO captions name no grid cells: not measured
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    ingest = next(r for r in runs if r.data.tags.get(names.STAGE_TAG) == "ingest")
    assert ingest.data.metrics[names.QUARANTINED] == 1  # missing.png, not fatal
    prepared = result.outputs["prepared"]
    assert sum(prepared.tokens.values()) == 48 and np.load(prepared.path("train"))["ids"].shape[1:] == (2, 32)

    model = mlflow.pyfunc.load_model("models:/squares-captioner@champion")
    rgb = np.load(prepared.path("test"))["images"][:2]  # N×16×16×3 uint8
    out = model.predict(rgb)
    assert len(out["caption"]) == 2 and all(isinstance(c, str) for c in out["caption"])
