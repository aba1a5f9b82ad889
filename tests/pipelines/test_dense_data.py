"""Dense targets through the pipelines' data path: ingest of ``data=shapes`` from the config, and Ray Data
batches that carry the masks and boxes beside the images (what the segment and detect workers read)."""

from __future__ import annotations

import numpy as np

from components.data.shards import read_split
from pipelines.config import load_config
from pipelines.flows.kit import stage
from pipelines.services import tracking
from pipelines.stages import ingest
from pipelines.stages.preprocess import image_dataset


def test_ray_data_batches_carry_masks_and_boxes(ray_local, tmp_path, mlflow_store):
    cfg = load_config("train", ["data=shapes", "data.num_images=40", "data.image_size=32",
                                f"data.cache_dir={tmp_path}"])
    assert cfg.data.name == "shapes" and cfg.data.num_images == 40
    with tracking.pipeline_run(cfg, "test") as parent, stage("ingest", parent, cfg):
        manifest = ingest.run(cfg)
    assert manifest.shape == (32, 32, 3) and manifest.targets["max_boxes"] == 4
    batch = image_dataset(manifest, "train").take_batch(32, batch_format="numpy")
    want = read_split(manifest, "train")
    order = np.argsort(batch["idx"])  # Ray Data may hand rows in any order
    assert batch["mask"].shape == (32, 32, 32) and batch["boxes"].shape == (32, 4, 4)
    assert np.array_equal(batch["mask"][order], want.masks[batch["idx"][order]])
    assert np.array_equal(batch["boxes"][order], want.boxes[batch["idx"][order]])
    assert np.array_equal(batch["box_labels"][order], want.box_labels[batch["idx"][order]])
    assert np.array_equal(batch["image"][order], want.images[batch["idx"][order]])
