"""Loading a model package never runs code from it: what each format is checked for before it loads.

A package comes from a registry, a run, shared storage or a path someone typed; whoever wrote it is not
trusted. Every loader in :mod:`components.packaging` goes through this module::

    state = load_tensors(path)            # torch.load(weights_only=True); a pickled object → UnsafePackage
    program = load_program(path_or_bytes, "policy.pt2")   # a torch.export archive, checked, then loaded
    check_program(path_or_bytes, "policy.pt2")            # the check alone (the CLI runs it before a run)
    check_onnx("model.onnx")              # an ONNX graph names no external file

Why a torch.export archive needs a check of its own: ``torch.export.load`` (torch 2.13) unpickles with
``weights_only=False`` wherever the archive's payload configs say ``use_pickle``, unpickles custom and
opaque objects, retries the sample inputs with ``weights_only=False`` when the safe load fails, hands each
symbolic-shape string to ``sympy.sympify`` (which ``eval``s it), and resolves a node's target by walking
attributes from ``torch`` (``torch.os.system`` resolves). So before ``torch.export.load`` sees an archive,
:func:`check_program` requires: only the files ``torch.export.save`` writes for one plain program; no
pickled weight or constant; sample inputs that load with ``weights_only=True``; every node target an
ATen or quantized_decomposed op (or one of a few ``operator`` functions); every shape expression a plain
arithmetic expression over shape symbols. Anything else is refused with :class:`UnsafePackage`.
"""

from __future__ import annotations

import ast
import io
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch


class UnsafePackage(ValueError):
    """A model package holds something that could run code when loaded; the message names the file."""


# The archive's own layout (torch/export/pt2_archive): one program named "model", its raw tensors and
# their configs. A root folder of any name; nothing else is loaded.
_MEMBER = re.compile(r"[^/]+/(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                     r"|models/model\.json|data/sample_inputs/model\.pt"
                     r"|data/weights/(weight_\d+|model_weights_config\.json)"
                     r"|data/constants/(tensor_\d+|model_constants_config\.json))")
_TARGET = re.compile(r"torch\.ops\.(aten|quantized_decomposed)\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")
#: ATen ops that touch files: an archive has no business reading the serving machine's disk.
_REFUSED_OPS = ("from_file", "_load_", "save")
_OPERATORS = {"_operator." + name for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod",
                                                "neg", "pos", "pow", "eq", "ne", "lt", "le", "gt", "ge",
                                                "and_", "or_", "not_", "abs")}
# Names a shape expression may call or mention (torch.utils._sympy.functions and sympy's own).
_SYMPY_NAMES = {"Symbol", "Integer", "Rational", "Float", "Min", "Max", "Abs", "Mod", "FloorDiv", "CeilDiv",
                "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "LShift",
                "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "TruncToFloat",
                "TruncToInt", "ToFloat", "Identity", "IsNonOverlappingAndDenseIndicator", "RoundToInt",
                "RoundDecimal", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "oo", "true", "false"}
_SYMBOL = re.compile(r"[a-z]{1,8}\d{1,9}")
_ASSUMPTIONS = {"positive", "integer", "real", "nonnegative", "negative", "nonpositive", "finite", "zero"}
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd,
               ast.Not, ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def load_tensors(path: str | Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only; anything else is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = re.search(r"Unsupported global: GLOBAL (\S+)|Unsupported operand \d+|Unsupported class \S+", str(e))
        raise UnsafePackage(f"{path} holds pickled objects other than tensors and plain containers "
                            f"({why.group(1) or why.group(0) if why else 'refused by weights_only=True'}), "
                            f"which visionray refuses to load.") from None


def check_program(source: str | Path | bytes, name: str | None = None) -> None:
    """Refuse a torch.export archive that ``torch.export.load`` could run code from (see the module)."""
    name = name or str(source)
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UnsafePackage(f"{name} is not a torch.export archive (not a zip file).") from None
    members = archive.namelist()
    for member in members:
        if not _MEMBER.fullmatch(member):
            raise UnsafePackage(f"{name} contains {member}, which is not part of a plain torch.export program; "
                                f"visionray refuses to load it.")
    models = [m for m in members if m.endswith("/models/model.json")]
    if len(models) != 1:
        raise UnsafePackage(f"{name} holds {len(models)} programs; a model package holds exactly one.")
    for member in members:
        if member.endswith("_config.json"):
            _check_payload(json.loads(archive.read(member)), name, member)
        elif member.endswith("/sample_inputs/model.pt"):
            _check_sample_inputs(archive.read(member), name)
    _check_graph(json.loads(archive.read(models[0])), name)


def load_program(source: str | Path | bytes, name: str | None = None) -> torch.export.ExportedProgram:
    """A torch.export program from an archive that :func:`check_program` accepted (the same bytes: a file
    swapped between the check and the load is never read)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    check_program(data, name or str(source))
    return torch.export.load(io.BytesIO(data))


def check_onnx(path: str | Path) -> None:
    """An ONNX graph runs no Python, but its tensors may name external files: refuse those (a package
    would read the serving machine's files). Reading the protobuf executes nothing."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # noqa: BLE001 - not a readable ONNX file: the message says so
        raise UnsafePackage(f"{path} is not a readable ONNX model ({_first_line(e)}).") from None
    tensors = list(graph.initializer) + [a.t for n in graph.node for a in n.attribute if a.HasField("t")]
    for t in tensors:
        if uses_external_data(t):
            raise UnsafePackage(f"{path}: tensor {t.name} points at an external file; a package holds its "
                                f"weights itself.")


def _check_payload(config: dict, name: str, member: str) -> None:
    for fqn, meta in (config.get("config") or {}).items():
        path = str(meta.get("path_name", ""))
        if meta.get("use_pickle") or not re.fullmatch(r"(weight|tensor)_\d+", path):
            raise UnsafePackage(f"{name}: {fqn} is stored as a pickled object ({member}); visionray refuses "
                                f"to unpickle a package's weights or constants.")


def _check_sample_inputs(data: bytes, name: str) -> None:
    # torch.export.load retries these with weights_only=False when the safe load fails: fail here first.
    if not data:
        return
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here would send torch to its unsafe retry
        raise UnsafePackage(f"{name}: its sample inputs are not plain tensors ({type(e).__name__}); visionray "
                            f"refuses to unpickle them.") from None


def _check_graph(node: Any, name: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "target" and isinstance(value, str):
                _check_target(value, name)
            elif key == "expr_str" and isinstance(value, str):
                _check_expression(value, name)
            else:
                _check_graph(value, name)
    elif isinstance(node, list):
        for value in node:
            _check_graph(value, name)


def _check_target(target: str, name: str) -> None:
    op = target.split(".")[3] if target.startswith("torch.ops.") and target.count(".") >= 3 else ""
    if target in _OPERATORS or (_TARGET.fullmatch(target) and not any(op.startswith(r) for r in _REFUSED_OPS)):
        return
    raise UnsafePackage(f"{name}: its graph calls {target[:200]!r}, which is not a tensor operation; visionray "
                        f"refuses to load it.")


def _check_expression(text: str, name: str) -> None:
    # sympy.sympify evals the string: accept only what parses as arithmetic over shape symbols.
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        tree = None
    if tree is None or len(text) > 2000 or not all(_safe_node(n) for n in ast.walk(tree)):
        raise UnsafePackage(f"{name}: its shape expression {text[:200]!r} is not plain arithmetic; visionray "
                            f"refuses to evaluate it.")


def _safe_node(n: ast.AST) -> bool:
    if isinstance(n, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Load)):
        return not (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow)
                    and not (isinstance(n.right, ast.Constant) and type(n.right.value) is int
                             and 0 <= n.right.value <= 8))
    if isinstance(n, _ARITHMETIC):
        return True
    if isinstance(n, ast.Constant):
        return type(n.value) in (int, float, bool) or (isinstance(n.value, str) and bool(_SYMBOL.fullmatch(n.value)))
    if isinstance(n, ast.Name):
        return n.id in _SYMPY_NAMES or bool(_SYMBOL.fullmatch(n.id))
    if isinstance(n, ast.Call):
        return isinstance(n.func, ast.Name) and n.func.id in _SYMPY_NAMES
    if isinstance(n, ast.keyword):
        return n.arg in _ASSUMPTIONS and isinstance(n.value, ast.Constant) and type(n.value.value) is bool
    return False


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__
