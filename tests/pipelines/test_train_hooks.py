"""pipelines.stages.train.hooks_for: the one place where config keys become training hooks (no Ray).

The linear classifiers' LinearDiagnostics reads a sample batch through Ray Data, so it is left to the
slow tests (test_toolkit's softmax run); here the model is a convnet, which gets no diagnostics hook.
"""

from __future__ import annotations

from components.ensembles import EMAHook, SnapshotHook
from components.hooks import build_hooks
from components.packaging import ModelSpec
from pipelines.config import load_config
from pipelines.services import names
from pipelines.stages.train import hooks_for

SPEC = ModelSpec(name="convnet", in_channels=1, num_classes=10, image_size=8, classes=tuple("0123456789"))


def _cfg(*overrides):
    return load_config("quickstart", ["data=digits", "model=convnet", *overrides])


def test_no_hooks_unless_the_config_asks(tmp_path):
    assert hooks_for(_cfg(), SPEC, None, tmp_path) == []
    assert not any(tmp_path.iterdir())  # no diagnostics sample written for a convnet


def test_ema_and_snapshots_become_hooks_in_loop_order(tmp_path):
    cfg = _cfg("train.ema_decay=0.99", "train.snapshots=2", "train.epochs=4", "train.schedule=cosine")
    hooks = hooks_for(cfg, SPEC, None, tmp_path)
    assert [cls for cls, _ in hooks] == [EMAHook, SnapshotHook]
    ema, snapshots = (kwargs for _, kwargs in hooks)
    assert ema == {"decay": 0.99, "spec": SPEC.to_dict()}
    assert snapshots == {"cycles": 2, "epochs": 4, "spec": SPEC.to_dict(), "metric": names.ENSEMBLE_SNAPSHOTS_TAKEN}
    assert len(build_hooks(hooks)) == 2  # they construct as the workers will
