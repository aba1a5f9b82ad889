"""Transfer learning (CS231n §7.3): keep a pre-trained backbone, re-initialise the head.

    state, head = transfer_state(source.net, target.net)   # backbone from source, fresh head
    model.net.load_state_dict(state)
    FreezeBackbone(head).setup(model)                      # feature extraction: only the head trains

The head is the net's last ``nn.Linear`` (every classifier here ends in one). Freezing sets
``requires_grad=False`` on everything else and keeps the backbone's BatchNorm layers in eval mode,
so they normalise with the source's running statistics in training as at test time, instead of
re-estimating them from a few hundred images.
"""

from __future__ import annotations

import types

from torch import Tensor, nn

from components.hooks import TrainHook


def head_name(net: nn.Module) -> str:
    """The module name of ``net``'s classifier head: its last ``nn.Linear``."""
    linear = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(net).__name__} has no nn.Linear head to re-initialise")
    return linear[-1]


def transfer_state(source: nn.Module, target: nn.Module) -> tuple[dict[str, Tensor], str]:
    """``target``'s state dict with every non-head tensor taken from ``source``.

    The head keeps ``target``'s fresh initialisation (sized for the new label set). A backbone
    tensor missing from ``source`` or of another shape is an error: the architectures differ.
    """
    head = head_name(target)
    src = source.state_dict()
    state = target.state_dict()
    for key, value in state.items():
        if key.startswith(head + "."):
            continue
        if key not in src or src[key].shape != value.shape:
            raise ValueError(f"the source model has no tensor {key} of shape {tuple(value.shape)}; "
                             f"transfer needs the same architecture")
        state[key] = src[key].clone()
    return state, head


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


class FreezeBackbone(TrainHook):
    """Only the head (``head`` inside ``model.net``) trains; frozen BatchNorm stays in eval mode."""

    def __init__(self, head: str):
        self.head = head

    def setup(self, model: nn.Module) -> None:
        net = getattr(model, "net", model)
        prefix = self.head + "."
        trainable = 0
        for name, p in net.named_parameters():
            p.requires_grad_(name.startswith(prefix))
            trainable += p.numel() if p.requires_grad else 0
        if not trainable:
            raise ValueError(f"no parameters under {self.head!r}: nothing would train")
        for name, m in net.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not name.startswith(prefix):
                m.train = types.MethodType(_stay_in_eval, m)  # engine's model.train() reaches it and is ignored
                m.eval()


def backbone_state(source: nn.Module, target: nn.Module, part: str = "backbone") -> dict[str, Tensor]:
    """``target``'s state dict with its ``part`` (the ResNet trunk of a detector or of ``fcn_resnet``) taken
    from ``source`` (a classifier of the same family, depth, width and channels: its ``stem.*`` and
    ``stages.*``).

    Everything else of ``target`` (a detector's neck and heads, a segmenter's score heads) keeps its fresh
    initialisation. A backbone tensor the source lacks, or has in another shape, is an error naming it."""
    src = source.state_dict()
    state = target.state_dict()
    prefix, taken = part + ".", 0
    for key, value in state.items():
        inner = key[len(prefix):] if key.startswith(prefix) else None
        if inner is None or not inner.startswith(("stem.", "stages.")):
            continue
        if inner not in src or src[inner].shape != value.shape:
            raise ValueError(f"the classifier has no tensor {inner} of shape {tuple(value.shape)}; its backbone "
                             f"must be the target's (same ResNet depth and width, same image channels)")
        state[key] = src[inner].clone()
        taken += 1
    if not taken:
        raise ValueError(f"the target has no {part}.stem / {part}.stages to start from a classifier")
    return state
