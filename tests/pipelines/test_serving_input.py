"""What a served image model accepts: raw pixels only (400 with the reason otherwise), N×H×W or N×H×W×1,
at most ``MAX_IMAGES`` per request; and the registered signature leaves the check to the model.

    .venv/bin/python -m pytest -q tests/pipelines/test_serving_input.py

The HTTP side (a 0..1 float image answered 400, N×H×W×1 answered 200) is in test_serve's served champion.
"""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from components.packaging import ModelSpec, save_package
from pipelines.services.serving import MAX_IMAGES, TaskModel, raw_pixels


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    spec = ModelSpec(name="softmax", in_channels=1, num_classes=3, image_size=8, classes=("a", "b", "c"))
    root = tmp_path_factory.mktemp("pkg")
    save_package(root, spec.build(), spec)
    model = TaskModel()
    model.load_context(type("Context", (), {"artifacts": {"package": str(root)}})())
    return model


def _refused(served, images) -> str:
    with pytest.raises(MlflowException) as e:
        served.predict(None, images)
    assert e.value.get_http_status_code() == 400
    return e.value.message


def test_raw_pixels_of_either_shape_and_whole_floats_are_accepted(served):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (4, 8, 8)).astype(np.uint8)
    expected = served.predict(None, grey)["class"]
    np.testing.assert_array_equal(served.predict(None, grey[..., None])["class"], expected)  # N×H×W×1
    np.testing.assert_array_equal(served.predict(None, grey.astype(np.int64).tolist())["class"], expected)  # JSON ints
    np.testing.assert_array_equal(served.predict(None, grey.astype(np.float64))["class"], expected)  # 3.0 is 3


def test_normalised_floats_out_of_range_values_and_odd_shapes_are_a_400_saying_why(served):
    normalised = np.random.default_rng(1).random((2, 8, 8))
    assert "not whole numbers (0..1-normalised? multiply by 255)" in _refused(served, normalised)
    assert "from -1 to 0" in _refused(served, np.concatenate([-np.ones((1, 4, 8)), np.zeros((1, 4, 8))], 1))
    assert "from 256 to 256" in _refused(served, np.full((1, 8, 8), 256))
    assert "shape (8, 8)" in _refused(served, np.zeros((8, 8)))
    assert "type <U1" in _refused(served, np.full((1, 8, 8), "x"))
    assert "different sizes" in _refused(served, [[[0] * 8] * 8, [[0] * 7] * 8])


def test_a_batch_over_the_cap_is_refused_naming_the_cap(served):
    line = _refused(served, np.zeros((MAX_IMAGES + 1, 8, 8), np.uint8))
    assert f"at most {MAX_IMAGES} images" in line and f"has {MAX_IMAGES + 1}" in line
    assert raw_pixels(np.zeros((MAX_IMAGES, 2, 2), np.uint8)).shape == (MAX_IMAGES, 2, 2)


def test_the_signature_of_an_image_model_has_no_input_schema_for_mlflow_to_cast_with(tmp_path):
    from pipelines.records import Evaluation  # noqa: F401 - the record the signature is built from
    from pipelines.services.registry import signature

    evaluation = type("E", (), {"task": "classification", "example": np.zeros((2, 8, 8), np.uint8),
                                "model_dir": str(tmp_path)})()  # a package folder without arch.json
    sig = signature(evaluation, 3)
    assert sig.inputs is None
    assert [s.name for s in sig.outputs.inputs] == ["class", "probabilities"]
