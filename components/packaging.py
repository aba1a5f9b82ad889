"""A model package: ``arch.json`` (how to rebuild the net) + ``weights.pt`` (a plain state dict).

One format for checkpoints, evaluation and serving. Loading never runs code from the package, whatever
its format (:mod:`components.package_safety`: weights with ``weights_only=True``, torch.export archives
checked before they load, ONNX graphs without external files, ensemble members inside the package)::

    save_package(path, model, spec)
    model, spec = load_package(path)
    classes, probs = model.predict_uint8(images_uint8)
    check_package(path)                   # the same checks without building the model (UnsafePackage)

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


def check_package(directory: str | Path) -> None:
    """Raise :class:`~components.package_safety.UnsafePackage` if loading ``directory`` could run code
    from it; builds no model (the CLI calls it on a local package before anything starts)."""
    from components.compression.package import BLOB, ONNX_FILE, PROGRAM, read_arrays
    from components.ensemble_package import member_dir
    from components.package_safety import check_onnx, check_program, load_tensors

    directory = Path(directory)
    arch = json.loads((directory / ARCH_FILE).read_text())
    fmt = arch.get("format", "state_dict")
    if fmt == "state_dict":
        load_tensors(directory / WEIGHTS_FILE)
    elif fmt == "ensemble":
        for entry in arch["members"]:
            check_package(member_dir(directory, entry["path"]))
    elif fmt == "compressed" and arch.get("encoding") == "int8":
        import lzma

        check_program(lzma.decompress((directory / PROGRAM).read_bytes()), str(directory / PROGRAM))
    elif fmt == "compressed" and arch.get("encoding") == "onnx":
        check_onnx(directory / ONNX_FILE)
    elif fmt == "compressed" and (directory / BLOB).is_file():
        read_arrays(directory, arch.get("arrays", {}))


__all__ = ["check_package", "ARCH_FILE", "FORMATS", "WEIGHTS_FILE", "ModelSpec", "load_package", "load_state_dict_package",
           "save_package", "unwrap"]
