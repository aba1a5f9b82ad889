"""Transfer (§7.3): backbone copied, head re-initialised, frozen backbone really frozen; class subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.data.subsets import subset_classes
from components.data.types import RawDataset, RawSplit
from components.models import ImageClassifier, Normalize, build_model
from components.transfer import FreezeBackbone, head_name, transfer_state


def _net(classes: int, seed: int):
    torch.manual_seed(seed)
    return build_model("convnet", in_channels=1, num_classes=classes, image_size=8, width=4)


def test_transfer_state_copies_the_backbone_and_keeps_a_fresh_head():
    source, target = _net(5, 0), _net(3, 1)
    state, head = transfer_state(source, target)
    assert head == "fc"
    assert torch.equal(state["features.0.weight"], source.state_dict()["features.0.weight"])
    assert torch.equal(state["fc.weight"], target.state_dict()["fc.weight"]) and state["fc.weight"].shape[0] == 3
    target.load_state_dict(state)  # strict: every key present, every shape right


def test_transfer_state_refuses_another_architecture():
    with pytest.raises(ValueError, match="same architecture"):
        transfer_state(build_model("softmax", in_channels=1, num_classes=5, image_size=8), _net(3, 0))


def test_freeze_backbone_trains_only_the_head_and_keeps_batchnorm_statistics():
    model = ImageClassifier(Normalize.identity(1), _net(3, 0))
    FreezeBackbone(head_name(model.net)).setup(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    bn = model.net.features[1]
    assert not bn.training  # engine's model.train() does not wake frozen BatchNorm
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.rand(16, 1, 8, 8)), torch.randint(0, 3, (16,)))
    loss.backward()
    opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"net.fc.weight", "net.fc.bias"}


def _raw(labels: list[int]) -> RawDataset:
    n = len(labels)
    images = np.arange(n, dtype=np.uint8).repeat(4).reshape(n, 2, 2, 1)
    split = RawSplit(images=images, labels=np.array(labels, dtype=np.int64))
    return RawDataset(name="toy", classes=("a", "b", "c", "d"), splits={"all": split}, source="toy", fingerprint="f0")


def test_class_subset_relabels_in_the_given_order_and_is_its_own_version():
    raw = _raw([0, 1, 2, 3, 2, 1])
    sub = subset_classes(raw, ["2", "b"])
    assert sub.classes == ("c", "b")
    assert sub.splits["all"].labels.tolist() == [1, 0, 0, 1]
    assert sub.splits["all"].images[:, 0, 0, 0].tolist() == [1, 2, 4, 5]
    assert sub.fingerprint != raw.fingerprint != subset_classes(raw, ["b", "2"]).fingerprint


def test_class_subset_rejects_unknown_classes():
    from components.data.errors import DataError

    with pytest.raises(DataError, match="data.classes"):
        subset_classes(_raw([0, 1]), ["7", "a"])


def test_toolkit_config_keys_are_validated():
    from pipelines.config import ConfigError, load_config

    cfg = load_config("transfer", ["transfer.source=models:/m@champion", "data.classes=[0,2]", "train.overfit_rows=32"])
    assert cfg.data.classes == ("0", "2") and cfg.train.overfit_rows == 32 and cfg.transfer.lr_factor == 0.5
    for bad in ("data.classes=[3]", "train.overfit_rows=-1", "transfer.lr_factor=0", "knn.k_choices=[0,3]"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config("knn" if bad.startswith("knn") else "transfer", [bad])
