"""A crafted package of every format is refused, and its code never runs (the planted file never appears).

    .venv/bin/python -m pytest -q tests/components/test_package_safety.py

Each payload is first shown to be live: torch's own loader, unchecked, runs it (the control marker
appears). Then visionray's loader refuses the same bytes with UnsafePackage naming the file, and its
marker never appears. Clean packages of the same formats still load.
"""

from __future__ import annotations

import contextlib
import io
import lzma
import os

import pytest
import torch

from components.package_safety import UnsafePackage, check_program, load_tensors
from components.packaging import check_package, load_package
from tests import malicious


@pytest.fixture(scope="module")
def archive() -> bytes:
    return malicious.int8_archive()


def test_a_clean_int8_program_and_policy_pass_the_check(archive, tmp_path):
    from components.rl.policy import load_policy

    check_program(archive, "model.pt2")
    policy = load_policy(malicious.policy_package(tmp_path / "clean", tmp_path / "marker", way=None))
    assert policy(torch.zeros(3, 4).numpy()).shape == (3,)


@pytest.mark.parametrize("way", malicious.INT8_WAYS)
def test_a_poisoned_torch_export_archive_is_refused_before_torch_sees_it(archive, way, tmp_path):
    control, marker = tmp_path / "control", tmp_path / "marker"
    live = malicious.poison_archive(archive, control, way)
    if way == "target":  # the control: torch resolves a node's target string by attribute walk from torch
        from torch._export.serde.serialize import GraphModuleDeserializer

        assert GraphModuleDeserializer().deserialize_operator("torch.os.system") is os.system
    else:  # the control: torch.export.load, unchecked, runs the payload
        with contextlib.suppress(Exception):  # the payload may break the load after it ran
            torch.export.load(io.BytesIO(live))
        assert control.exists(), f"the {way} payload is not live"

    poisoned = malicious.poison_archive(archive, marker, way)
    with pytest.raises(UnsafePackage, match="model.pt2"):
        check_program(poisoned, "model.pt2")
    assert not marker.exists()


@pytest.mark.parametrize("way", malicious.INT8_WAYS)
def test_a_compressed_package_with_a_poisoned_program_is_refused(archive, way, tmp_path):
    marker = tmp_path / "marker"
    directory = malicious.int8_package(tmp_path / "pkg", marker, way, archive=archive)
    with pytest.raises(UnsafePackage, match="model.pt2.xz"):
        load_package(directory)
    with pytest.raises(UnsafePackage):
        check_package(directory)
    assert not marker.exists()


@pytest.mark.parametrize("way", ["weight", "sample_inputs", "expression", "target"])
def test_a_poisoned_rl_policy_is_refused(way, tmp_path):
    from components.rl.policy import load_policy

    marker = tmp_path / "marker"
    directory = malicious.policy_package(tmp_path / "policy", marker, way)
    with pytest.raises(UnsafePackage, match="policy.pt2"):
        load_policy(directory)
    assert not marker.exists()


def test_a_plain_package_with_a_pickled_call_is_refused(tmp_path):
    marker = tmp_path / "marker"
    directory = malicious.plain_package(tmp_path / "pkg", marker)
    torch.load(directory / "weights.pt", weights_only=False)  # the control: unchecked, it runs
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafePackage, match="weights.pt"):
        load_package(directory)
    with pytest.raises(UnsafePackage, match="weights.pt"):
        load_tensors(directory / "weights.pt")
    assert not marker.exists()


def test_an_ensemble_with_a_poisoned_member_or_a_member_outside_it_is_refused(tmp_path):
    import json

    marker = tmp_path / "marker"
    directory = malicious.ensemble_package(tmp_path / "ens", marker)
    with pytest.raises(UnsafePackage, match="weights.pt"):
        load_package(directory)
    with pytest.raises(UnsafePackage):
        check_package(directory)
    assert not marker.exists()
    arch = json.loads((directory / "arch.json").read_text())
    arch["members"][1]["path"] = "../ens-member"
    (directory / "arch.json").write_text(json.dumps(arch))
    with pytest.raises(UnsafePackage, match="outside the package"):
        load_package(directory)


def test_an_onnx_graph_reading_an_outside_file_and_an_object_array_are_refused(tmp_path):
    import json

    directory = malicious.onnx_package(tmp_path / "onnx", tmp_path / "secret.bin")
    with pytest.raises(UnsafePackage, match="external file"):
        load_package(directory)
    from components.compression import package

    model, spec = malicious._model()
    shared = package.save_sparse(tmp_path / "sparse", model, spec)
    load_package(shared)  # clean: loads
    arch = json.loads((shared / "arch.json").read_text())
    first = next(iter(arch["arrays"]))
    arch["arrays"][first][0] = "|O"
    (shared / "arch.json").write_text(json.dumps(arch))
    with pytest.raises(UnsafePackage, match="numbers only"):
        load_package(shared)


def test_a_clean_int8_package_still_loads_and_predicts(archive, tmp_path):
    from components.compression import package

    model, spec = malicious._model()
    example = torch.rand(4, 1, 8, 8)
    directory = package.save_int8(tmp_path / "int8", torch.export.export(model, (example,)), spec, example, "int8")
    (directory / package.PROGRAM).write_bytes(lzma.compress(archive))
    check_package(directory)
    loaded, _ = load_package(directory)
    classes, probs = loaded.predict_uint8(torch.zeros(3, 8, 8, dtype=torch.uint8).numpy())
    assert classes.shape == (3,) and torch.allclose(probs.sum(1), torch.ones(3), atol=1e-4)


def test_optimiser_scheduler_and_history_state_round_trips_with_weights_only(tmp_path):
    import numpy as np

    from pipelines.stages.train import STATE_FILE, plain, read_state

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5)
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": 1,
             "history": {"val/accuracy": [(1, np.float64(0.5))]}, "hooks": [{"value": np.float32(2.0)}]}
    torch.save(plain(state), tmp_path / STATE_FILE)
    back = read_state(tmp_path)
    assert back["history"]["val/accuracy"] == [(1, 0.5)] and back["hooks"][0]["value"] == 2.0
    torch.save({"optimizer": malicious.OpensAFile(tmp_path / "marker")}, tmp_path / STATE_FILE)
    with pytest.raises(UnsafePackage, match=STATE_FILE):
        read_state(tmp_path)
    assert not (tmp_path / "marker").exists()
