"""Export to ONNX and serve with onnxruntime (§15 export): the fp32 model, a graph any runtime can run.

The whole :class:`~components.models.ImageClassifier` is exported (normaliser included), with a symbolic
batch, so the ONNX file takes float NCHW images in [0, 1] like the torch model::

    export(model, example, "model.onnx")
    run = session("model.onnx", threads=2)
    logits = run(x)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn


def export(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    path = Path(path)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                input_names=["images"], output_names=["logits"], verbose=False)
    program.save(str(path), external_data=False)
    return path


def session(path: str | Path, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """float NCHW tensor → logits tensor, through onnxruntime with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning off: by default onnxruntime's threads busy-wait between calls, taking cores from whatever
    # runs next in the process (a torch model timed after it) and from a server's other work; the wait
    # it saves is microseconds against milliseconds per call here.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        out = sess.run(None, {name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)

    return run
