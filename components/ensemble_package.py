"""The ensemble package format: an :class:`EnsembleClassifier` (the mean of its members' probabilities)
and the loader :func:`components.packaging.load_package` dispatches ``"format": "ensemble"`` to.

An ensemble package is a directory: ``arch.json`` (``"format": "ensemble"``, the member names) and one
model package per member under ``members/``. A member may be a package of any format, so the loader
takes the format dispatcher as an argument (``load``) instead of importing it: the dispatcher imports
this module. Writing packages, selection and the EMA/snapshot hooks live in :mod:`components.ensembles`,
which re-exports everything here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from components.models import ImageClassifier, Normalize
from components.package_base import ARCH_FILE, ModelSpec

FORMAT = "ensemble"
MEMBERS_DIR = "members"

#: ``load(directory) -> (model, ModelSpec)`` for a package of any format: components.packaging.load_package.
PackageLoader = Callable[[Path], tuple[ImageClassifier, ModelSpec]]


class ProbabilityAverage(nn.Module):
    """``log(mean_i softmax(member_i(x)))``: log-probabilities, so softmax of it is the mean probability
    and cross-entropy on it is the ensemble's negative log-likelihood."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        # logsumexp of log-softmaxes: stable where a member's probability underflows to 0.
        logp = torch.stack([torch.log_softmax(m(x).float(), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


class EnsembleClassifier(ImageClassifier):
    """An :class:`ImageClassifier` whose net averages its members' probabilities.

    The outer normalisation is the identity: each member normalises the [0, 1] images itself.
    ``predict_uint8`` (inherited) returns ``softmax(forward)`` = the mean of the members' probabilities.
    """

    def __init__(self, members: Sequence[ImageClassifier]):
        super().__init__(Normalize.identity(members[0].in_channels), ProbabilityAverage(members))

    @property
    def members(self) -> nn.ModuleList:
        return self.net.members


def check_compatible(specs: Sequence[ModelSpec], names: Sequence[str]) -> None:
    """Members must take the same images and predict the same classes, in the same order."""
    first = specs[0]
    for spec, name in zip(specs[1:], names[1:]):
        for key in ("in_channels", "image_size", "num_classes", "classes"):
            if getattr(spec, key) != getattr(first, key):
                raise ValueError(f"ensemble member {name} has {key}={getattr(spec, key)!r} but {names[0]} has "
                                 f"{getattr(first, key)!r}; members must be trained on the same data.")


def load_ensemble_package(directory: str | Path, load: PackageLoader) -> tuple[EnsembleClassifier, ModelSpec]:
    """The loader ``components.packaging.load_package`` dispatches ``"format": "ensemble"`` to; each
    member, a package of any format (an ensemble too), is loaded by ``load`` (that dispatcher)."""
    directory = Path(directory)
    arch = json.loads((directory / ARCH_FILE).read_text())
    loaded = [load(member_dir(directory, entry["path"])) for entry in arch["members"]]
    check_compatible([s for _, s in loaded], [e["name"] for e in arch["members"]])
    model = EnsembleClassifier([m for m, _ in loaded])
    model.eval()
    spec = ModelSpec(name=FORMAT, in_channels=arch["in_channels"], num_classes=arch["num_classes"],
                     image_size=arch["image_size"], classes=tuple(arch["classes"]),
                     normalization=loaded[0][1].normalization)
    return model, spec


def member_dir(directory: Path, path: str) -> Path:
    """A member's folder, which must lie inside the ensemble's: a package names no file outside itself."""
    from components.package_safety import UnsafePackage

    member = (directory / path).resolve()
    if not member.is_relative_to(directory.resolve()):
        raise UnsafePackage(f"{directory / ARCH_FILE} names a member at {path}, outside the package; "
                            f"visionray refuses to load it.")
    return member


def member_names(directory: str | Path) -> list[str]:
    return [e["name"] for e in json.loads((Path(directory) / ARCH_FILE).read_text())["members"]]
