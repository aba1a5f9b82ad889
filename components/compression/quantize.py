"""int8 quantisation (§15.3) with PyTorch's current path: torchao's pt2e flow.

``torch.ao.quantization`` is deprecated; the flow is ``torch.export`` → ``prepare_pt2e`` (observers placed
by ``X86InductorQuantizer``) → calibration on training images → ``convert_pt2e``. Static quantisation
covers convolutions and linears (activations and weights int8, per-channel weight scales); dynamic
quantisation quantises only the linears' weights and computes activation scales per batch. The converted
program is saved with ``torch.export.save`` (int8 weights) and, when loaded, lowered to oneDNN's int8
kernels. Two runtimes serve a loaded program:

- :class:`Compiled` (the default): ``torch.compile`` with inductor's freezing passes generates C++ that
  fuses each quantize/dequantize into its neighbours around oneDNN's int8 convolutions — the x86 int8
  path PyTorch documents, and the one that is fast. Inductor mis-handles a symbolic batch around the
  int8 convolutions (stride asserts fail; with the asserts off the answers are wrong), so shapes are
  static: a request is padded up to the next of :data:`BUCKETS` and larger ones run in slices. Each
  bucket compiles once, on first use (seconds; inductor caches the code on disk for later processes).
- :func:`lower`: the same oneDNN kernels from the freezing passes alone, no code generation, a second
  to load; the quantize/dequantize nodes stay separate ops. Used where compiling fails (no C++
  compiler on the serving machine) or when ``VISIONRAY_INT8_RUNTIME=lowered``.

::

    program = quantize(model, calibration_batches, example)  # an ExportedProgram
    torch.export.save(program, "model.pt2")
    fast = Compiled(torch.export.load("model.pt2"), example)  # a callable: float NCHW in, logits out
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Iterable

import torch
from torch import nn

#: Batch sizes a saved program accepts (the batch dimension is symbolic).
MAX_BATCH = 65536
#: The batch sizes :class:`Compiled` specialises to; requests are padded up to the next one.
BUCKETS = (1, 2, 4, 8, 16, 32, 64)
#: ``VISIONRAY_INT8_RUNTIME``: ``compiled`` (default) or ``lowered``.
RUNTIME_ENV = "VISIONRAY_INT8_RUNTIME"


def _batch_dim():
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def _quantizer(dynamic: bool, qat: bool = False):
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer()
    config = xiq.get_default_x86_inductor_quantization_config(is_qat=qat, is_dynamic=dynamic)
    if dynamic:  # linears only: a conv has no dynamic int8 kernel worth having
        quantizer.set_module_type_qconfig(nn.Linear, config)
    else:
        quantizer.set_global(config)
        # Max-pooling stays in float: the int8 one is an eager ATen op (quantized::max_pool2d) that took
        # a large share of the int8 convnet's time, whereas inductor fuses dequantize → pool → quantize into
        # its generated C++.
        quantizer.set_module_type_qconfig(nn.MaxPool2d, None)
    return quantizer


def quantize(model: nn.Module, calibration: Iterable[torch.Tensor], example: torch.Tensor,
             dynamic: bool = False) -> torch.export.ExportedProgram:
    """The model quantised to int8 by the pt2e flow, as an exported program with a symbolic batch."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = model.eval()
    shapes = ({0: _batch_dim()},)
    captured = torch.export.export(model, (example,), dynamic_shapes=shapes).module()
    prepared = prepare_pt2e(captured, _quantizer(dynamic))
    with torch.no_grad():
        for x in calibration:  # observers record activation ranges (dynamic: nothing to record)
            prepared(x)
    converted = convert_pt2e(prepared)
    _drop_unused_attributes(converted)
    return torch.export.export(converted, (example,), dynamic_shapes=shapes)


def quantize_qat(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], example: torch.Tensor,
                 lr: float, loss_fn: Callable | None = None) -> tuple[torch.export.ExportedProgram, list[float]]:
    """Quantisation-aware training (§15.3): fine-tune with fake int8 quantisation, then convert.

    The model is captured in training mode, so ``prepare_qat_pt2e`` folds each BatchNorm into its
    convolution the way int8 inference will see it, and the observers learn activation ranges while the
    weights adapt to int8 rounding. ``batches`` are ``(images, labels)`` (one SGD step each, Nesterov,
    cosine from ``lr``). Returns the converted program (as :func:`quantize`'s) and the per-step losses.
    """
    from torchao.quantization.pt2e import (
        move_exported_model_to_eval,
        move_exported_model_to_train,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    batches = list(batches)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    shapes = ({0: _batch_dim()},)
    captured = torch.export.export(model.train(), (example,), dynamic_shapes=shapes).module()
    prepared = prepare_qat_pt2e(captured, _quantizer(False, qat=True))
    move_exported_model_to_train(prepared)
    optimizer = torch.optim.SGD(prepared.parameters(), lr=lr, momentum=0.9, nesterov=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, len(batches)))
    losses = []
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(prepared(x), y)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    _drop_unused_attributes(converted)
    return torch.export.export(converted, (example[:2],), dynamic_shapes=shapes), losses


def _drop_unused_attributes(gm: torch.fx.GraphModule) -> None:
    # convert_pt2e keeps the fp32 weights as attributes beside their int8 copies; saved, they would
    # make the int8 file larger than the fp32 one.
    gm.graph.eliminate_dead_code()
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name not in used and not any(u.startswith(name + ".") for u in used):
            module_name, _, attr = name.rpartition(".")
            owner = gm.get_submodule(module_name) if module_name else gm
            delattr(owner, attr)
    gm.delete_all_unused_submodules()
    gm.recompile()


def lower(program: torch.export.ExportedProgram, example: torch.Tensor) -> torch.fx.GraphModule:
    """A loaded int8 program → oneDNN int8 kernels (torchao's ``lower_pt2e_quantized_to_x86``, with a
    symbolic batch and ``view`` → ``reshape``: the int8 convolutions return channels-last tensors)."""
    import torchao.quantization.pt2e  # noqa: F401 - registers the quantized_decomposed ops
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes

    decompositions = torch.export.default_decompositions()
    for op in list(decompositions):
        if not torch._export.utils._is_cia_op(op):
            del decompositions[op]
    module = program.module()
    gm = torch.export.export(module, (example,), dynamic_shapes=({0: _batch_dim()},),
                             strict=True).run_decompositions(decompositions).module()
    aten = torch.ops.aten
    for node in list(gm.graph.nodes):
        if node.target == aten.view.default:
            node.target = aten.reshape.default
        elif node.target == aten.t.default:
            with gm.graph.inserting_before(node):
                permuted = gm.graph.call_function(aten.permute.default, args=(node.args[0], [1, 0]))
            node.replace_all_uses_with(permuted)
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    with torch.no_grad():
        freezing_passes(gm, (example,))
        constant_fold(gm)
    return gm


def runtime(program: torch.export.ExportedProgram, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The serving callable for a loaded program: :class:`Compiled` unless ``VISIONRAY_INT8_RUNTIME=lowered``."""
    choice = os.environ.get(RUNTIME_ENV, "compiled")
    if choice not in ("compiled", "lowered"):
        raise ValueError(f"{RUNTIME_ENV}={choice!r}: expected 'compiled' or 'lowered'")
    return Compiled(program, example) if choice == "compiled" else lower(program, example)


def _contiguous_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


class Compiled:
    """An int8 program compiled by inductor, one static batch shape per bucket (see the module doc).

    If compiling fails (no C++ compiler, an inductor error) it warns once and runs :func:`lower`'s
    graph instead, so a served model keeps answering, only slower.
    """

    def __init__(self, program: torch.export.ExportedProgram, example: torch.Tensor):
        import torchao.quantization.pt2e  # noqa: F401 - registers the quantized_decomposed ops

        self.program, self.example = program, example
        self.compiled = torch.compile(program.module(), dynamic=False)
        self.fallback: Callable | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, largest = x.shape[0], BUCKETS[-1]
        if n > largest:
            return torch.cat([self(x[i:i + largest]) for i in range(0, n, largest)])
        size = next(b for b in BUCKETS if b >= n)
        if size != n:
            x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
        elif x.stride() != _contiguous_strides(x.shape):
            # One layout per bucket: the graph is specialised to its input's strides, and a grey image
            # permuted from NHWC has other strides than a contiguous one (both count as contiguous).
            x = torch.empty_like(x, memory_format=torch.contiguous_format).copy_(x)
        return self._run(x)[:n]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.fallback is None:
            try:
                # Not under inference mode: inductor's freezing passes cannot fake oneDNN's prepack ops there.
                # freezing (weights as constants, folded into oneDNN's packed layout) is read before
                # compile's options apply: it must be set in inductor's config around the first call.
                with torch.inference_mode(False), torch.no_grad(), torch._inductor.config.patch(freezing=True):
                    return self.compiled(x.clone() if x.is_inference() else x)
            except Exception as e:  # noqa: BLE001 - any compile failure: the lowered graph still answers
                warnings.warn(f"int8: torch.compile failed ({type(e).__name__}: {str(e)[:200]}); "
                              f"serving the uncompiled int8 graph instead (slower)", RuntimeWarning, stacklevel=3)
                self.fallback = lower(self.program, self.example)
        return self.fallback(x)
