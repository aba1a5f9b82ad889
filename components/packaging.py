"""A model package: ``arch.json`` (how to rebuild the net) + ``weights.pt`` (a plain state dict).

One format for checkpoints, evaluation and serving. Weights load with ``weights_only=True``, so a
package never runs pickled code::

    save_package(path, model, spec)
    model, spec = load_package(path)
    classes, probs = model.predict_uint8(images_uint8)

:func:`load_package` dispatches on ``arch.json``'s ``"format"`` to the loaders below it, imported
directly: :mod:`components.package_base` (ModelSpec and the plain format, re-exported here),
:mod:`components.ensemble_package` and :mod:`components.compression.package`. Those import only
package_base, never this module, so there is no cycle; the ensemble loader is handed
:func:`load_package` for its members, which may be of any format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from components.compression.package import load_compressed_package
from components.ensemble_package import load_ensemble_package
from components.models import ImageClassifier
from components.package_base import (
    ARCH_FILE,
    WEIGHTS_FILE,
    ModelSpec,
    load_state_dict_package,
    save_package,
    unwrap,
)

#: Package formats beyond a plain state dict: ``arch.json``'s ``"format"`` → its loader,
#: ``loader(directory) -> (module with predict_uint8, ModelSpec)``. Evaluation and serving load any of
#: them through :func:`load_package`, so an ensemble or a compressed variant serves like any model.
#: An ensemble's members are packages of any format: its loader is handed this dispatcher.
FORMATS: dict[str, Callable[[Path], tuple[ImageClassifier, ModelSpec]]] = {
    "ensemble": lambda directory: load_ensemble_package(directory, load=load_package),
    "compressed": load_compressed_package,
}


def load_package(directory: str | Path) -> tuple[ImageClassifier, ModelSpec]:
    """Any model package, by the ``"format"`` in its ``arch.json`` (none: a plain state dict)."""
    directory = Path(directory)
    fmt = json.loads((directory / ARCH_FILE).read_text()).get("format", "state_dict")
    if fmt == "state_dict":
        return load_state_dict_package(directory)
    if fmt not in FORMATS:
        raise ValueError(f"{directory} holds a model package of unknown format {fmt!r}; "
                         f"known: state_dict, {', '.join(FORMATS)}")
    return FORMATS[fmt](directory)


__all__ = ["ARCH_FILE", "FORMATS", "WEIGHTS_FILE", "ModelSpec", "load_package", "load_state_dict_package",
           "save_package", "unwrap"]
