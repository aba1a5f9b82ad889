"""Which registered weights a retrain starts from: those that fit its net, whatever else the spec says."""

from __future__ import annotations

import dataclasses

from components.package_base import ModelSpec
from pipelines.flows.retrain import spec_differences, warm_startable

QUICKSTART = ModelSpec(name="convnet", in_channels=1, num_classes=10, image_size=28,
                       classes=tuple(f"c{i}" for i in range(10)), width=24, dropout=0.1, tta="flip")


def test_a_recipe_champion_starts_a_quickstart_retrain_and_the_line_says_what_differs() -> None:
    recipe = dataclasses.replace(QUICKSTART, dropout=0.0, tta="flip_shift")
    state = recipe.build().net.state_dict()
    assert warm_startable(recipe, QUICKSTART, state)  # dropout and test-time views change no weight
    assert spec_differences(recipe, QUICKSTART) == ["dropout 0.0, here 0.1", "tta 'flip_shift', here 'flip'"]
    assert spec_differences(QUICKSTART, dataclasses.replace(QUICKSTART, normalization="mean_image")) == []


def test_weights_of_another_shape_or_other_classes_do_not_start_a_retrain() -> None:
    wider = dataclasses.replace(QUICKSTART, width=32)
    assert not warm_startable(wider, QUICKSTART, wider.build().net.state_dict())
    renamed = dataclasses.replace(QUICKSTART, classes=tuple(f"d{i}" for i in range(10)))
    assert not warm_startable(renamed, QUICKSTART, renamed.build().net.state_dict())  # same shapes, other labels
    assert warm_startable(QUICKSTART, QUICKSTART, QUICKSTART.build().net.state_dict())
