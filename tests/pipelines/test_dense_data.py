"""Dense targets through the pipelines' data path: ingest of ``data=shapes`` from the config, and Ray Data
batches that carry the masks and boxes beside the images (what the segment and detect workers read)."""

from __future__ import annotations

import numpy as np
import pytest

from components.data.shards import read_split
from pipelines.config import load_config
from pipelines.flows.kit import stage
from pipelines.services import tracking
from pipelines.stages import ingest
from pipelines.stages.preprocess import fit_normalizer, image_dataset, leading_rows


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


def test_a_small_split_read_in_process_gives_ray_datas_rows_and_the_same_normaliser(ray_local, tmp_path,
                                                                                    mlflow_store):
    cfg = load_config("train", ["data=shapes", "data.num_images=40", "data.image_size=32",
                                f"data.cache_dir={tmp_path}"])
    with tracking.pipeline_run(cfg, "test") as parent, stage("ingest", parent, cfg):
        manifest = ingest.run(cfg)
    want = read_split(manifest, "train")
    batches = list(leading_rows(manifest, "train", 25, batch_size=10))
    assert [len(b["idx"]) for b in batches] == [10, 10, 5]  # the first 25 rows, in order, then it stops
    got = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert np.array_equal(got["image"], want.images[:25]) and np.array_equal(got["mask"], want.masks[:25])
    assert np.array_equal(got["boxes"], want.boxes[:25]) and np.array_equal(got["label"], want.labels[:25])
    for limit in (0, 17):  # in this process, or by a Ray Data job: exact integer sums, the same numbers
        for mode in ("per_channel", "mean_image"):
            here = fit_normalizer(manifest, mode, limit)
            ray_data = fit_normalizer(manifest, mode, limit, in_process_bytes=0)
            assert all(np.array_equal(a, b) for a, b in zip(here, ray_data)), (limit, mode)


@pytest.mark.parametrize("pipeline,overrides,message", [
    ("segment", ["data=digits"], "data=shapes or data=fashion_scenes or data=mask_folder, not data=digits"),
    ("segment", ["model=resnet20"], "model=fcn or model=unet or model=fcn_resnet, not model=resnet"),
    ("segment", ["model.backbone_from=models:/shapes-classifier@champion"],
     "takes it with model=fcn_resnet; model=unet has an encoder of its own"),
    ("segment", ["model=fcn_resnet", "model.depth=21"], "of fcn_resnet is its ResNet's depth and must be 6n+2"),
    ("train", ["data=shapes", "model=unet"], "model=unet is a segmentation net"),
    ("segment", ["data=mask_folder"], "data=mask_folder needs data.path"),
    ("segment", ["model.depth=7"], "model.depth"),
])
def test_segment_config_errors_are_one_sentence_naming_the_key(pipeline, overrides, message):
    from components.data.errors import DataError
    from pipelines.config import ConfigError
    from pipelines.dispatch import preflight

    with pytest.raises((ConfigError, DataError)) as err:
        preflight(load_config(pipeline, overrides))
    assert message in str(err.value)


def test_segment_defaults_and_registered_name():
    cfg = load_config("segment", [])
    assert (cfg.kind, cfg.data.name, cfg.model.name, cfg.registered_model_name) == (
        "segment", "shapes", "unet", "shapes-segmenter")
    assert load_config("segment", ["data=fashion_scenes"]).registered_model_name == "fashion-scenes-segmenter"
