"""int8 quantisation (§15.3) with PyTorch's current path: torchao's pt2e flow.

``torch.ao.quantization`` is deprecated; the flow is ``torch.export`` → ``prepare_pt2e`` (observers placed
by ``X86InductorQuantizer``) → calibration on training images → ``convert_pt2e``. Static quantisation
covers convolutions and linears (activations and weights int8, per-channel weight scales); dynamic
quantisation quantises only the linears' weights and computes activation scales per batch. The converted
program is saved with ``torch.export.save`` (int8 weights) and, when loaded, lowered to oneDNN's int8
kernels by the inductor freezing passes — no code generation, so loading takes about a second::

    program = quantize_static(model, calibration_batches)    # an ExportedProgram
    torch.export.save(program, "model.pt2")
    fast = lower(torch.export.load("model.pt2"))             # a callable: float NCHW in, logits out
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

#: Batch sizes a saved program accepts (the batch dimension is symbolic).
MAX_BATCH = 65536


def _batch_dim():
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def _quantizer(dynamic: bool):
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer()
    config = xiq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic)
    if dynamic:  # linears only: a conv has no dynamic int8 kernel worth having
        quantizer.set_module_type_qconfig(nn.Linear, config)
    else:
        quantizer.set_global(config)
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
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes

    import torchao.quantization.pt2e  # noqa: F401 - registers the quantized_decomposed ops

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
