"""The generate pipeline's config: its registered names, its sections, and the errors caught before anything
starts (exit 2 from the CLI).

    .venv/bin/python -m pytest tests/pipelines/test_generate_config.py
"""

from __future__ import annotations

import pytest

from pipelines.config import ConfigError, load_config, usage
from pipelines.dispatch import preflight


def test_registered_as_dataset_and_model():
    assert load_config("generate").registered_model_name == "fashion-mnist-vae"
    assert load_config("generate", ["model=pixelcnn", "data=digits"]).registered_model_name == "digits-pixelcnn"
    assert load_config("generate", ["registry.name=mine"]).registered_model_name == "mine"


def test_generate_uses_its_section_and_a_density_model_sees_no_augmentation():
    cfg = load_config("generate", ["model=pixelcnn"])
    assert "generate" in usage.used_sections(cfg)
    assert usage.effective(cfg)["model"] == {"name": "pixelcnn", "width": 32, "depth": 5}
    assert not cfg.data.augment.flip and cfg.data.augment.crop_padding == 0


@pytest.mark.parametrize("pipeline,overrides,words", [
    ("generate", ["model=convnet"], "model=convnet is not a generative model"),
    ("train", ["model=vae"], "run it with the generate pipeline"),
    ("generate", ["data=image_folder", "data.path=/tmp", "data.image_size=30"], "data.image_size=30"),
])
def test_wrong_model_or_size_is_one_sentence_before_anything_starts(pipeline, overrides, words):
    with pytest.raises(ConfigError, match=words):
        preflight(load_config(pipeline, overrides))


def test_generate_values_are_checked():
    for key in ("generate.latent=0", "generate.iw_samples=0", "generate.beta=-1", "generate.sample_every=-1"):
        with pytest.raises(ConfigError, match=key.split("=")[0]):
            load_config("generate", [key])
