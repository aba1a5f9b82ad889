"""The architecture's claims, checked by reading the source with ``ast`` (nothing here imports the modules).

    .venv/bin/python -m pytest -q tests/test_architecture.py

1. ``components/`` is plain PyTorch/NumPy/PyArrow: no module there imports ``ray`` or ``mlflow`` (or
   ``pipelines``).
2. MLflow is called in one place: under ``pipelines/`` only ``services/tracking.py`` and
   ``services/registry.py`` import ``mlflow``. Exceptions (``MLFLOW_EXCEPTIONS``): the pyfunc models
   MLflow itself loads to serve a registered model, ``services/serving.py``, ``services/serving_model.py``,
   ``services/rl_serving.py`` and ``services/rl_serving_model.py``. (``visionray ui`` starts
   ``python -m mlflow server`` as a process; it imports nothing from MLflow, so it needs no exception.)
   ``MLFLOW_PENDING``: modules another change is moving onto tracking/registry right now (none today).
3. No import cycle among the modules of ``pipelines/`` and ``components/``; imports inside functions
   count like the ones at the top.
4. Imports only go down the layers of ``pipelines/``: entry (with ``pipelines/__main__.py``), dispatch,
   flows, stages and rllib (one layer), services, records, config. A module may import within its own layer.
5. Metric, tag and model names come from ``pipelines/services/names.py``: no string literal under
   ``pipelines/`` outside it equals the value of a names constant that contains a "/" or starts with
   "visionray." (a retyped name), and no f-string builds one from such a prefix (names has a function
   for each pattern, e.g. ``names.per_class_accuracy``). ``NAME_EXEMPTIONS`` lists the known exceptions and why, and
   ``MOVING_ONTO_NAMES`` the files another change is moving onto names right now.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "components")

#: Layers of pipelines/, top first; a module imports only its own layer or the ones below it.
LAYERS = (("entry", "__main__"), ("dispatch",), ("flows",), ("stages", "rllib"), ("services",), ("records",),
          ("config",))

#: The pyfunc models MLflow loads to serve a registered model: they subclass mlflow.pyfunc.PythonModel
#: or call mlflow.models.set_model, so they cannot reach MLflow through tracking or registry.
MLFLOW_MODULES = {"pipelines.services.tracking", "pipelines.services.registry"}
MLFLOW_EXCEPTIONS = {"pipelines.services.serving", "pipelines.services.serving_model",
                     "pipelines.services.rl_serving", "pipelines.services.rl_serving_model"}
#: Modules another change is moving onto services/tracking.py and services/registry.py right now; each
#: entry goes when that change lands.
MLFLOW_PENDING: set[str] = set()

#: Files whose names are being moved onto names (another change rewrites them and removes this entry).
MOVING_ONTO_NAMES: set[str] = set()
#: (file or folder/, retyped value) pairs allowed, with why.
NAME_EXEMPTIONS = {
    # config is the bottom layer and cannot import services.names; the default is a user's
    # setting (tune.metric), and test_tune_metric_default_is_a_names_constant ties it to names.
    ("pipelines/config/", "val/accuracy"),
    # components cannot import names; each task's report names its curves figure as the train stage
    # logs it (names.CURVES_PLOT), and test_every_task_reports_its_curves_under_the_train_stages_name ties them.
    ("components/tasks/", "plots/curves.png"),
}


def _exempt(rel: str, value: str) -> bool:
    return any(value == v and (rel == where or where.endswith("/") and rel.startswith(where))
               for where, v in NAME_EXEMPTIONS)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(module: str) -> list[tuple[str, int]]:
    """(imported dotted name, line) for every import in ``module``, at any depth; ``from a import b``
    yields ``a.b`` when that is a module, else ``a``."""
    path, known = _modules()[module], _modules()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                out.append((f"{base}.{a.name}" if f"{base}.{a.name}" in known else base, node.lineno))
    return out


def _internal(name: str) -> str | None:
    """The project module ``name`` resolves to (itself, or the nearest enclosing package), or None."""
    known = _modules()
    while name and name.split(".")[0] in PACKAGES:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "pipelines" or len(parts) < 2:
        return None
    return next((i for i, names in enumerate(LAYERS) if parts[1] in names), None)


def _rel(module: str) -> str:
    return str(_modules()[module].relative_to(ROOT))


def test_components_import_neither_ray_nor_mlflow_nor_pipelines():
    bad = [f"{_rel(m)}:{line} imports {name}" for m in _modules() if m.startswith("components")
           for name, line in _imports(m) if name.split(".")[0] in ("ray", "mlflow", "pipelines")]
    assert not bad, "components/ is plain torch/numpy/pyarrow:\n" + "\n".join(bad)


def test_only_tracking_and_registry_import_mlflow():
    bad = [f"{_rel(m)}:{line} imports {name}" for m in _modules()
           if m.startswith("pipelines") and m not in MLFLOW_MODULES | MLFLOW_EXCEPTIONS | MLFLOW_PENDING
           for name, line in _imports(m) if name.split(".")[0] == "mlflow"]
    assert not bad, ("call MLflow through pipelines.services.tracking (runs, metrics, artifacts, tags, "
                     "searches) or pipelines.services.registry (models, versions, aliases):\n" + "\n".join(bad))


def test_the_serving_exceptions_exist():
    assert MLFLOW_MODULES | MLFLOW_EXCEPTIONS <= set(_modules())


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for m in _modules():
        targets = {_internal(name) for name, _ in _imports(m)}
        graph[m] = {t for t in targets if t and t != m}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "modules that import each other (directly or round a loop):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_only_go_down_the_layers():
    bad = []
    for m in _modules():
        mine = _layer(m)
        if mine is None:
            continue
        for name, line in _imports(m):
            target = _internal(name)
            theirs = _layer(target) if target else None
            if theirs is not None and theirs < mine:
                bad.append(f"{_rel(m)}:{line} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert not bad, "an import up the layers " + " > ".join("|".join(l) for l in LAYERS) + ":\n" + "\n".join(bad)


def _names_values() -> dict[str, str]:
    """value -> constant name, for the names constants that are metric or tag names."""
    out = {}
    for node in _tree(ROOT / "pipelines" / "services" / "names.py").body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if (isinstance(target, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, str)
                and ("/" in value.value or value.value.startswith("visionray."))):
            out[value.value] = target.id
    return out


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes (prose may quote a name)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_names_are_not_retyped():
    values = _names_values()
    assert len(values) > 50  # the parse found the constants
    bad = []
    for m, path in _modules().items():  # components too: a hook hands back metrics under its caller's names
        if m == "pipelines.services.names" or _rel(m) in MOVING_ONTO_NAMES:
            continue
        tree, rel = _tree(path), _rel(m)
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in values
                    and id(node) not in skip and not _exempt(rel, node.value)):
                bad.append(f"{rel}:{node.lineno} retypes {node.value!r}: use names.{values[node.value]}")
    assert not bad, "\n".join(bad)


def test_patterned_names_come_from_names_functions():
    """An f-string that starts like a metric namespace (``f"test/accuracy_{c}"``) retypes a pattern:
    names has a function for it (``names.per_class_accuracy``)."""
    spaces = {v.split("/")[0] + "/" for v in _names_values() if "/" in v} | {"visionray."}
    bad = []
    for m, path in _modules().items():
        if not m.startswith("pipelines") or m == "pipelines.services.names" or _rel(m) in MOVING_ONTO_NAMES:
            continue
        for node in ast.walk(_tree(path)):
            head = node.values[0] if isinstance(node, ast.JoinedStr) and node.values else None
            if (isinstance(head, ast.Constant) and isinstance(head.value, str) and " " not in head.value
                    and head.value.startswith(tuple(spaces))):
                bad.append(f"{_rel(m)}:{node.lineno} builds a name by hand: {ast.unparse(node)}")
    assert not bad, "add a function to pipelines/services/names.py and call it:\n" + "\n".join(bad)


def test_name_exemptions_are_still_needed():
    values = _names_values()
    for where, value in NAME_EXEMPTIONS:
        assert value in values, f"{value!r} is no longer a names constant: drop its exemption"
        files = [p for p in _modules().values() if _exempt(str(p.relative_to(ROOT)), value)]
        literals = {n.value for p in files for n in ast.walk(_tree(p)) if isinstance(n, ast.Constant)}
        assert value in literals, f"{where} no longer retypes {value!r}: drop its exemption"


def test_tune_metric_default_is_a_names_constant():
    from pipelines.config import TuneConfig
    from pipelines.services import names

    assert TuneConfig().metric == names.VAL_ACCURACY
