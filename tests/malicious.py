"""Crafted model packages whose loading would create a file: one per format and per way in.

Each builder writes a package that a loader without checks would execute code from, the code being
``open(marker, "w")``, so a test sees whether it ran by whether ``marker`` exists::

    evil = plain_package(tmp / "pkg", marker)        # weights.pt: a pickled call
    evil = int8_package(tmp / "pkg", marker, "weight")   # or "constant", "sample_inputs", "expression", "target"

The packages start from real ones (a tiny ConvNet, a real int8 program, a real exported policy), so
everything but the planted payload is what visionray itself writes.
"""

from __future__ import annotations

import io
import json
import lzma
import re
import zipfile
from pathlib import Path

import torch

SPEC = dict(name="convnet", in_channels=1, num_classes=10, image_size=8, classes=tuple(str(i) for i in range(10)),
            width=4)
INT8_WAYS = ("weight", "constant", "sample_inputs", "expression", "target", "extra_file")


class OpensAFile:
    """Unpickling this calls ``open(path, "w")``: the file appearing proves the pickle ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def pickled_call(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": OpensAFile(marker)}, buffer)
    return buffer.getvalue()


def _model():
    from components.models import Normalize
    from components.packaging import ModelSpec

    spec = ModelSpec(**SPEC)
    torch.manual_seed(0)
    return spec.build(Normalize(torch.tensor([0.5]), torch.tensor([0.25]))).eval(), spec


def plain_package(directory: Path, marker: Path) -> Path:
    from components.packaging import WEIGHTS_FILE, save_package

    model, spec = _model()
    save_package(directory, model, spec)
    (directory / WEIGHTS_FILE).write_bytes(pickled_call(marker))
    return directory


def ensemble_package(directory: Path, marker: Path) -> Path:
    """An ensemble of two members, the second's weights.pt replaced by a pickled call."""
    import json

    from components.ensembles import save_ensemble_package
    from components.packaging import WEIGHTS_FILE, save_package

    model, spec = _model()
    member = save_package(directory.parent / f"{directory.name}-member", model, spec)
    save_ensemble_package(directory, [("a", member), ("b", member)])
    second = json.loads((directory / "arch.json").read_text())["members"][1]["path"]
    (directory / second / WEIGHTS_FILE).write_bytes(pickled_call(marker))
    return directory


def int8_archive() -> bytes:
    from components.compression import quantize

    model, _ = _model()
    example = torch.rand(4, 1, 8, 8)
    program = quantize.quantize(model, iter([torch.rand(8, 1, 8, 8)]), example)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def poison_archive(data: bytes, marker: Path, way: str) -> bytes:
    """A real torch.export archive with one way to run ``open(marker, "w")`` planted in it."""
    source = zipfile.ZipFile(io.BytesIO(data))
    files = {name: source.read(name) for name in source.namelist()}
    root = next(iter(files)).split("/", 1)[0]
    payload = pickled_call(marker)
    if way == "weight":  # torch.load(weights_only=False) of a weight marked use_pickle
        key = f"{root}/data/weights/model_weights_config.json"
        config = json.loads(files[key])
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        files[f"{root}/data/weights/{first['path_name']}"] = payload
        files[key] = json.dumps(config).encode()
    elif way == "constant":  # the same through a pickled tensor constant
        key = f"{root}/data/constants/model_constants_config.json"
        config = json.loads(files[key])
        weights = json.loads(files[f"{root}/data/weights/model_weights_config.json"])
        meta = dict(next(iter(weights["config"].values())), path_name="tensor_0", use_pickle=True, is_param=False)
        config["config"]["planted"] = meta
        files[f"{root}/data/constants/tensor_0"] = payload
        files[key] = json.dumps(config).encode()
    elif way == "sample_inputs":  # torch retries a failed weights_only load with weights_only=False
        files[f"{root}/data/sample_inputs/model.pt"] = payload
    elif way == "expression":  # sympy.sympify evals a symbolic shape's string
        program = files[f"{root}/models/model.json"].decode()
        symbol = re.search(r"Symbol\('s\d+', positive=True, integer=True\)", program).group(0)
        code = f"Symbol.__new__.__globals__['__builtins__']['open']({str(marker)!r}, 'w') and {symbol}"
        files[f"{root}/models/model.json"] = program.replace(symbol, code, 1).encode()
    elif way == "target":  # a node target resolved by attribute walk from torch: torch.os.system
        program = json.loads(files[f"{root}/models/model.json"])
        node = program["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.os.system"
        files[f"{root}/models/model.json"] = json.dumps(program).encode()
    elif way == "extra_file":  # a legacy pickled state dict beside the program
        files[f"{root}/data/weights/model.pt"] = payload
    else:
        raise ValueError(way)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for name, content in files.items():
            z.writestr(name, content)
    return out.getvalue()


def int8_package(directory: Path, marker: Path, way: str = "weight", archive: bytes | None = None) -> Path:
    """A compressed (int8) package whose program archive carries ``way``'s payload."""
    from components.compression import package

    model, spec = _model()
    example = torch.rand(4, 1, 8, 8)
    directory = package.save_int8(directory, torch.export.export(model, (example,)), spec, example, "int8")
    poisoned = poison_archive(archive or int8_archive(), marker, way)
    (directory / package.PROGRAM).write_bytes(lzma.compress(poisoned))
    return directory


def onnx_package(directory: Path, target: Path) -> Path:
    """A compressed (onnx) package whose graph reads its weights from a file outside it."""
    import onnx
    from onnx import TensorProto, helper

    from components.compression import package

    model, spec = _model()
    directory = package.save_onnx(directory, model, spec, torch.rand(2, 1, 8, 8))
    graph = onnx.load(str(directory / package.ONNX_FILE))
    init = helper.make_tensor("planted", TensorProto.FLOAT, [1], [0.0])
    init.ClearField("float_data")
    init.data_location = TensorProto.EXTERNAL
    init.external_data.add(key="location", value=str(target))
    graph.graph.initializer.append(init)
    onnx.save(graph, str(directory / package.ONNX_FILE))
    return directory


def policy_package(directory: Path, marker: Path, way: str | None = "weight") -> Path:
    """An RL policy folder (policy.pt2 + policy.json) whose program carries ``way``'s payload (None: clean)."""
    from components.rl.policy import PROGRAM_FILE, export_policy

    class Actor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 2)

        def greedy_logits(self, obs):
            return self.net(obs.float())

    export_policy(Actor(), (4,), directory)
    if way is None:
        return directory
    data = (directory / PROGRAM_FILE).read_bytes()
    (directory / PROGRAM_FILE).write_bytes(poison_archive(data, marker, way))
    return directory


