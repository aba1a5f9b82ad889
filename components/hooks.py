"""Plug-ins to the one training loop: how a pipeline changes training without a loop of its own.

A hook is given in the loop config as ``(Class, {kwargs})``, a :class:`TrainHook` subclass and its
keyword arguments (classes pickle by reference, so the spec crosses to the Ray workers as it is), and
built on every Ray Train worker (and in any plain-PyTorch caller of :mod:`components.engine`). The loop
calls, in order:

- :meth:`TrainHook.setup` once, after the model is built (and warm-started) and before a checkpoint is
  restored and the model is wrapped in DDP: freeze layers, attach pruning masks, load weights;
- :meth:`TrainHook.after_step` after every optimiser step: re-apply masks, update an EMA;
- :meth:`TrainHook.end_epoch` after each epoch's validation, before the checkpoint: rank 0 receives a
  directory inside the checkpoint (files there travel with it and reach the driver as
  ``Trained.extras``), every rank may return extra metrics (logged with the epoch);
- :meth:`state_dict` / :meth:`load_state_dict` so a restarted worker resumes the hook's own state.

Example (an EMA of the weights; see components.ensembles)::

    from components.ensembles import EMAHook

    train.run(cfg, prepared, uri, run_id, name, workdir, hooks=[(EMAHook, {"decay": 0.999})])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch import nn

HookSpec = tuple[type["TrainHook"], dict[str, Any]]


class TrainHook:
    """Base class: every method is optional (the default does nothing)."""

    def setup(self, model: nn.Module) -> None:
        """Once, on the bare model (not DDP-wrapped)."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """After each optimiser step; ``model`` is the bare model."""

    def end_epoch(self, model: nn.Module, epoch: int, out_dir: Path | None) -> dict[str, float]:
        """After validation; ``out_dir`` is set on rank 0 only. Returns extra metrics for this epoch.

        ``epoch`` is the loop's index, from 0; the metrics are logged at the epoch's number, ``epoch + 1``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`state_dict` returned (a resumed or replaced worker)."""


def build_hooks(specs: Sequence[HookSpec] | None) -> list[TrainHook]:
    """``[(Class, kwargs), ...]`` → hook instances; anything but a TrainHook subclass is a clear error."""
    hooks = []
    for cls, kwargs in specs or ():
        if not (isinstance(cls, type) and issubclass(cls, TrainHook)):
            raise TypeError(f"training hook {cls!r} is not a components.hooks.TrainHook subclass "
                            f"(a hook spec is (Class, kwargs), the class itself, not its name)")
        hooks.append(cls(**(kwargs or {})))
    return hooks


def hook_dirname(index: int, hook: TrainHook) -> str:
    """The sub-directory of a checkpoint's ``extras/`` that belongs to the index-th hook."""
    return f"{index:02d}-{type(hook).__name__}"
