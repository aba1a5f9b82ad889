"""Bad images never kill a run and never vanish: a real ingest through the CLI quarantines them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipelines.entry.cli import main
from pipelines.services import names

pytestmark = pytest.mark.slow


def _photo_folder(root, rng):
    """3 classes × 6 good images of assorted sizes and modes, plus 3 bad files."""
    for c, cls in enumerate(("cat", "dog", "fox")):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(6):
            size = (20 + 7 * i, 30 + 3 * c)
            arr = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
            img = Image.fromarray(arr).convert("L" if i % 3 == 0 else "RGB")
            img.save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "dog" / "garbage.png").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    good = (root / "fox" / "0.jpg").read_bytes()
    (root / "fox" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "fox" / "notes.txt").write_text("not an image, not a class")


def test_corrupt_zero_byte_and_truncated_images_are_quarantined(ray_local, mlflow_store, tmp_path, capsys):
    photos = tmp_path / "photos"
    _photo_folder(photos, np.random.default_rng(0))
    rc = main(["run", "quickstart", "data=image_folder", f"data.path={photos}", "data.image_size=16",
               "stages=[ingest]", "tracking.system_metrics=false"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "3 quarantined" in err

    client = mlflow_store.client()
    exp = client.get_experiment_by_name("visionray/quickstart")
    runs = client.search_runs([exp.experiment_id])
    ingest = next(r for r in runs if r.data.tags.get(names.STAGE_TAG) == "ingest")
    assert ingest.info.status == "FINISHED"
    assert ingest.data.metrics[names.QUARANTINED] == 3
    manifest = json.loads(open(client.download_artifacts(ingest.info.run_id, names.MANIFEST_ARTIFACT)).read())
    reasons = {q["path"].rsplit("/", 1)[-1]: q["reason"] for q in manifest["quarantine"]}
    assert set(reasons) == {"empty.png", "garbage.png", "truncated.jpg"}
    assert all(reasons.values())
    # nothing else was lost: every good image is in exactly one split, at the configured size
    assert sum(s["rows"] for s in manifest["splits"].values()) == 18
    assert manifest["shape"] == [16, 16, 3]
    assert manifest["classes"] == ["cat", "dog", "fox"]
    for split in manifest["splits"].values():
        assert set(split["class_counts"]) <= {"cat", "dog", "fox"}


def test_an_empty_class_stops_before_anything_is_written(ray_local, mlflow_store, tmp_path, capsys):
    photos = tmp_path / "photos"
    _photo_folder(photos, np.random.default_rng(1))
    (photos / "empty_class").mkdir()
    rc = main(["run", "quickstart", "data=image_folder", f"data.path={photos}", "stages=[ingest]",
               "tracking.system_metrics=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert "empty_class" in err[-1]
    assert not (mlflow_store.root / "data" / "image_folder").exists()
