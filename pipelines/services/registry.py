"""Stage ``register``: log the evaluated model as an MLflow pyfunc, register a version, run the gate.

The gate (:func:`register_and_gate`, one for every task): ``champion`` moves to the new version only
when its primary metric beats the current champion's in the metric's direction (classifiers: test
accuracy, higher; policies: greedy return, higher; a char LM's bits per character would be lower);
otherwise the new version becomes ``challenger``. Each version stores the metric as the tags
``primary_metric`` and ``primary_value`` (and the task's own tag, ``test_accuracy``). Alias moves are
the last step, after every tag of the version is written, so nothing half-registered is ever served::

    mlflow models serve -m models:/fashion-mnist-classifier@champion --env-manager local

The pieces (:func:`register_version`, :func:`should_promote`, :func:`move_alias`) are shared with
``retrain``, which decides with its own margin (both models scored on one new test split). :class:`RegistryLock` is the retrain
lock: a registered model in the shared store, so it holds across machines, not only on one disk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import Config
from pipelines.records import Evaluation
from pipelines.services import names, tracking
from pipelines.services.progress import say

_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Decision:
    name: str
    version: int
    alias: str  # champion or challenger
    previous_champion: int | None
    previous_value: float | None  # the previous champion's stored primary metric

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def previous_accuracy(self) -> float | None:
        """The old spelling of :attr:`previous_value` (a policy's is its greedy return)."""
        return self.previous_value


@dataclass(frozen=True)
class PrimaryMetric:
    """The metric a registered version is judged by: its key, value and direction, and how to say it."""

    key: str  # the MLflow metric key (names.TEST_ACCURACY, ...), stored as the version tag primary_metric
    value: float
    higher_is_better: bool = True
    label: str = ""  # in the decision sentence: "test accuracy"
    task_tag: str | None = None  # the task's own version tag (test_accuracy), written too and read as a fallback
    fmt: str = ".4f"

    def tags(self) -> dict[str, str]:
        text = f"{self.value:.6f}"
        return {names.PRIMARY_METRIC_TAG: self.key, names.PRIMARY_VALUE_TAG: text,
                **({self.task_tag: text} if self.task_tag else {})}

    def stored(self, version: Any) -> float | None:
        """The same metric as ``version`` was registered with; None when it has none (or no version).

        Versions registered before ``primary_metric`` existed carry only the task's own tag.
        """
        if version is None:
            return None
        tags = version.tags
        raw = (tags.get(names.PRIMARY_VALUE_TAG) if tags.get(names.PRIMARY_METRIC_TAG) == self.key
               else tags.get(self.task_tag) if self.task_tag else None)
        try:
            value = float(raw) if raw is not None else float("nan")
        except ValueError:
            return None
        return value if np.isfinite(value) else None


def classifier_metric(test_accuracy: float) -> PrimaryMetric:
    return PrimaryMetric(names.TEST_ACCURACY, test_accuracy, True, "test accuracy", names.TEST_ACCURACY_TAG)


def evaluation_metric(evaluation: Evaluation) -> PrimaryMetric:
    """The gate's metric of an evaluated model: its task's primary test metric, in the task's direction."""
    if evaluation.primary == "accuracy":
        return classifier_metric(evaluation.primary_value)
    return PrimaryMetric(names.metric(names.TEST, evaluation.primary), evaluation.primary_value,
                         evaluation.higher_is_better, f"test {evaluation.primary}")


def policy_metric(eval_return: float) -> PrimaryMetric:
    return PrimaryMetric(names.RL_EVAL_RETURN_MEAN, eval_return, True, "greedy return", names.RL_EVAL_RETURN_TAG,
                         ".1f")


def should_promote(challenger: float, champion: float | None, higher_is_better: bool = True,
                   min_improvement: float = 0.0, *, tie_promotes: bool = True) -> bool:
    """The gate: no champion (or none with this metric), or one the challenger improves on by at least
    ``min_improvement`` in the metric's direction (a negative margin tolerates a small loss).

    ``tie_promotes=False`` asks for strictly more than the margin: the register stage's "beats".
    """
    if champion is None:
        return True
    gain = challenger - champion if higher_is_better else champion - challenger
    return gain > min_improvement or (tie_promotes and gain >= min_improvement)


def signature(evaluation: Evaluation, num_classes: int):
    """The served model's signature, as its task declares it (components.tasks: ``served_schema``)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    from components.tasks import build_task

    task = build_task(evaluation.task, num_classes=num_classes)
    inputs, outputs = task.served_schema(evaluation.example, {"num_classes": num_classes})

    def schema(specs) -> Schema:
        return Schema([ColSpec("string", s.name) if s.dtype == "string" else
                       TensorSpec(np.dtype(s.dtype), s.shape, s.name) for s in specs])

    def param_type(value) -> str:
        return {bool: "boolean", int: "long", float: "double"}.get(type(value), "string")

    params = task.served_params()
    return ModelSignature(inputs=schema(inputs), outputs=schema(outputs),
                          params=ParamSchema([ParamSpec(k, param_type(v), v) for k, v in params.items()])
                          if params else None)


def requirements() -> list[str]:
    import cloudpickle
    import mlflow
    import torch

    # Pinned explicitly: inferring them would load the model in a subprocess (slow) and guess.
    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={np.__version__}", f"cloudpickle=={cloudpickle.__version__}"]


def log_model(evaluation: Evaluation, num_classes: int, extra_requirements: tuple[str, ...] = ()):
    import mlflow

    return mlflow.pyfunc.log_model(
        name="model", python_model=str(_ROOT / "pipelines" / "services" / "serving_model.py"),
        artifacts={"package": evaluation.model_dir},
        code_paths=[str(_ROOT / "components"), str(_ROOT / "pipelines")],
        signature=signature(evaluation, num_classes), input_example=evaluation.example,
        pip_requirements=requirements() + list(extra_requirements))


def current_champion(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, names.CHAMPION)
    except MlflowException:
        return None


def register_version(cfg: Config, evaluation: Evaluation, num_classes: int, tags: dict[str, str],
                     extra_requirements: tuple[str, ...] = ()) -> int:
    """Register an evaluated model (no gate): see :func:`register_logged`."""
    return register_logged(cfg.registered_model_name,
                           lambda: log_model(evaluation, num_classes, extra_requirements),
                           evaluation_metric(evaluation), tags)


def register_logged(name: str, log: Callable[[], Any], metric: PrimaryMetric, tags: dict[str, str],
                    what: str = "model") -> int:
    """Log the model (``log()`` returns MLflow's ModelInfo), check its artifacts arrived, and register a
    version with every tag at creation, the primary metric's among them.

    A failed upload raises before anything is registered: no version ever lacks its files or tags.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        info = log()
    except (OSError, MlflowException) as e:  # disk full, a read-only or unreachable artifact store
        raise RuntimeError(f"uploading the {what} to the artifact store failed ({type(e).__name__}: {e}); "
                           f"nothing was registered or promoted.") from e
    _check_artifacts(info.model_uri)
    return int(mlflow.register_model(info.model_uri, name, tags={**tags, **metric.tags()}).version)


def register_and_gate(name: str, log: Callable[[], Any], metric: PrimaryMetric, tags: dict[str, str],
                      what: str = "model") -> Decision:
    """Register a version (:func:`register_logged`), then run the champion gate on ``metric``: the new
    version becomes ``champion`` when it strictly beats the champion's stored value in the metric's
    direction (or there is no champion, or it has no such value), else ``challenger``."""
    from mlflow import MlflowClient

    version = register_logged(name, log, metric, tags, what)
    champion = current_champion(MlflowClient(), name)
    previous = metric.stored(champion)
    promote = should_promote(metric.value, previous, metric.higher_is_better, tie_promotes=False)
    alias = names.CHAMPION if promote else names.CHALLENGER
    move_alias(name, version, alias)  # the last step
    decision = Decision(name, version, alias, int(champion.version) if champion else None, previous)
    value, f = metric.value, metric.fmt
    if not promote:
        summary = (f"{name} v{version} is the challenger: {metric.label} {value:{f}} does not beat "
                   f"champion v{decision.previous_champion}'s {previous:{f}}")
    elif champion is None:
        summary = f"{name} v{version} is the new champion (first version)"
    elif previous is None:
        summary = f"{name} v{version} is the new champion (the champion has no {metric.label})"
    else:
        better = ">" if metric.higher_is_better else "<"
        summary = (f"{name} v{version} is the new champion ({metric.label} {value:{f}} {better} "
                   f"v{decision.previous_champion}'s {previous:{f}})")
    tracking.set_tags({names.DECISION_TAG: summary})
    say(f"register: {summary}")
    return decision


def _check_artifacts(model_uri: str) -> None:
    import mlflow

    try:
        listed = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(artifact_uri=model_uri)}
    except Exception as e:  # noqa: BLE001 - any store error means the same: do not register
        raise RuntimeError(f"the logged model {model_uri} cannot be listed in the artifact store ({e}); "
                           f"nothing was registered.") from e
    if "MLmodel" not in listed:
        raise RuntimeError(f"the logged model {model_uri} is missing its MLmodel file in the artifact store; "
                           f"nothing was registered.")


def move_alias(name: str, version: int, alias: str) -> None:
    """The last step of registering: point ``alias`` at ``version``."""
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, str(version))


def stored_accuracy(version) -> float | None:
    """The test accuracy a version was registered with (its own test split), if any."""
    return classifier_metric(float("nan")).stored(version)


def download_package(name: str, version: int, dst: Path) -> Path:
    """The model package (arch.json + weights.pt) of a registered version, from the configured registry."""
    import mlflow

    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))
    return package_in(root)


#: Said whenever weights come from outside the configured registry. Accurate on purpose: our loader
#: uses torch.load(weights_only=True); the risk it guards against is real for other loaders.
UNTRUSTED_WEIGHTS_WARNING = (
    "warning: loading model weights from {uri}, outside the configured registry {registry}. Pickled "
    "weights (.pt/.pth/.pkl) can run arbitrary code when unpickled; visionray loads a model package with "
    "torch.load(weights_only=True), which only rebuilds tensors and plain containers and refuses any other "
    "object, so the file cannot run code here, but load weights only from sources you trust.")


def fetch_package(uri: str, dst: Path, registry: str) -> Path:
    """A model package from ``uri``: ``models:/…`` (the configured registry), or — with a warning —
    ``runs:/…``, another artifact URI, or a local directory (a package or a logged MLflow model)."""
    import mlflow

    if not uri.startswith("models:/"):
        say(UNTRUSTED_WEIGHTS_WARNING.format(uri=uri, registry=registry))
    local = Path(uri).expanduser()
    if "://" not in uri and ":/" not in uri and local.is_dir():
        root = local
    else:
        try:
            root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
        except Exception as e:  # noqa: BLE001 - a bad URI is the user's to fix: say which
            from pipelines.config import ConfigError

            raise ConfigError(f"retrain.init_from={uri} cannot be downloaded ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}).") from None
    return package_in(root)


def package_in(root: Path) -> Path:
    """The package inside a downloaded logged model (the ``package`` artifact its MLmodel names)."""
    import yaml

    from components.packaging import ARCH_FILE

    if (root / ARCH_FILE).is_file():
        return root
    mlmodel = root / "MLmodel"
    if mlmodel.is_file():
        artifacts = yaml.safe_load(mlmodel.read_text())["flavors"]["python_function"].get("artifacts", {})
        if "package" in artifacts:
            return root / artifacts["package"]["path"]
    from pipelines.config import ConfigError

    raise ConfigError(f"{root} holds no visionray model package (arch.json + weights.pt, or an MLflow model "
                      f"logged by visionray).")


def run(cfg: Config, evaluation: Evaluation, num_classes: int, tags: dict[str, str]) -> Decision:
    """Register an evaluated model and run the gate on its task's primary test metric."""
    return register_and_gate(cfg.registered_model_name, lambda: log_model(evaluation, num_classes),
                             evaluation_metric(evaluation), tags)


# --------------------------------------------------------------------------- the retrain lock


class RegistryLock:
    """A lock held in the shared MLflow registry: one that works across a cluster, not only one disk.

    Acquire = create the registered model ``<model>.retrain-lock``: the registry's unique name
    constraint lets exactly one creator win, on a SQLite file or a server alike. The holder and a
    heartbeat (renewed every ``ttl_s / 3`` by a thread) are its tags; release = delete it. A lock
    whose heartbeat is older than ``ttl_s`` (its holder crashed) is broken, with a warning. Before
    promoting, the holder checks :meth:`still_held`, so a holder whose lock was broken never promotes.
    """

    def __init__(self, uri: str, model_name: str, ttl_s: float, holder: str):
        import threading

        self.uri, self.ttl_s, self.holder = uri, ttl_s, holder
        self.name = f"{model_name}{names.LOCK_SUFFIX}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def acquire(self) -> str | None:
        """None when acquired; else one sentence saying who holds it."""
        import threading
        import time

        from mlflow.exceptions import MlflowException

        client = self._client()
        for attempt in range(8):
            try:
                client.create_registered_model(
                    self.name, tags={names.LOCK_HOLDER_TAG: self.holder, names.LOCK_HEARTBEAT_TAG: f"{time.time():.3f}"},
                    description="visionray retrain lock: exists while a retrain of this model runs.")
                self._thread = threading.Thread(target=self._beat, name="visionray-lock", daemon=True)
                self._thread.start()
                return None
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    if "locked" in str(e).lower() and attempt < 7:  # a busy SQLite file: try again
                        time.sleep(0.2 * (attempt + 1))
                        continue
                    raise
            held = self._read(client)
            if held is None:
                continue  # released between our create and our read
            holder, beat = held
            age = time.time() - beat
            if age <= self.ttl_s:
                return (f"another retrain ({holder}) holds the lock {self.name}, renewed {age:.0f} s ago; "
                        f"this one stops without training")
            say(f"warning: breaking the stale retrain lock {self.name} of {holder} (not renewed for {age:.0f} s "
                f"> retrain.lock_ttl_s={self.ttl_s:g})")
            if self._read(client) == held:  # still the stale one: another breaker did not replace it
                with contextlib.suppress(MlflowException):
                    client.delete_registered_model(self.name)
        return f"could not take the lock {self.name} after 8 tries (heavy contention); this retrain stops"

    def _read(self, client) -> tuple[str, float] | None:
        from mlflow.exceptions import MlflowException

        try:
            tags = client.get_registered_model(self.name).tags
        except MlflowException:
            return None
        return tags.get(names.LOCK_HOLDER_TAG, "unknown"), float(tags.get(names.LOCK_HEARTBEAT_TAG, "0") or 0)

    def still_held(self) -> bool:
        held = self._read(self._client())
        return held is not None and held[0] == self.holder

    def _beat(self) -> None:
        import time

        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.still_held():
                    say(f"warning: the retrain lock {self.name} was taken by another retrain; this one will not promote")
                    return
                self._client().set_registered_model_tag(self.name, names.LOCK_HEARTBEAT_TAG, f"{time.time():.3f}")
            except Exception as e:  # noqa: BLE001 - a store hiccup: the next beat tries again
                say(f"warning: could not renew the retrain lock {self.name} ({type(e).__name__}: {e})")

    def release(self) -> None:
        from mlflow.exceptions import MlflowException

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(MlflowException):
            if self.still_held():
                self._client().delete_registered_model(self.name)

    def __enter__(self) -> str | None:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self.release()


# --------------------------------------------------------------------------- RL policies


def policy_signature(example: np.ndarray):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]))]),
                          outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]))


def log_policy(policy_dir: str, example: np.ndarray):
    """Log an exported greedy policy as a pyfunc (code: pipelines/services/rl_serving_model.py)."""
    import mlflow
    import torch

    return mlflow.pyfunc.log_model(
        name="model", python_model=str(_ROOT / "pipelines" / "services" / "rl_serving_model.py"),
        artifacts={"policy": policy_dir}, code_paths=[str(_ROOT / "components"), str(_ROOT / "pipelines")],
        signature=policy_signature(example), input_example=example,
        pip_requirements=[f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
                          f"numpy=={np.__version__}"])


def register_policy(name: str, policy_dir: str, eval_return: float, example: np.ndarray,
                    tags: dict[str, str]) -> Decision:
    """Log and register a policy, and run the gate on its greedy evaluation return."""
    return register_and_gate(name, lambda: log_policy(policy_dir, example), policy_metric(eval_return), tags,
                             what="policy")


def champion_of(name: str):
    """The version of ``name`` the ``champion`` alias points at (its ``.version``, ``.tags``), or None."""
    from mlflow import MlflowClient

    return current_champion(MlflowClient(), name)


def registry_uri() -> str:
    """The model registry this process uses (``tracking.connect`` sets it to the tracking store)."""
    import mlflow

    return mlflow.get_registry_uri()


# --------------------------------------------------------------------------- look-ups for `visionray serve`


class RegistryUnreadable(RuntimeError):
    """The registry at a URI could not be read (unreachable, not a store, ...); the message is the first
    line of what MLflow said."""


@contextlib.contextmanager
def _readable(uri: str):
    """A client on the store at ``uri``; any MLflow error inside becomes :class:`RegistryUnreadable`."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    except MlflowException as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RegistryUnreadable(first) from None


def model_aliases(uri: str, name: str) -> dict[str, str] | None:
    """The aliases (alias -> version) of the registered model ``name`` in the store at ``uri``; None when
    there is no such model. RegistryUnreadable when the store cannot be read."""
    from mlflow.exceptions import MlflowException

    with _readable(uri) as client:
        try:
            model = client.get_registered_model(name)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return {alias: str(version) for alias, version in dict(model.aliases or {}).items()}


def model_versions(uri: str, name: str) -> list[int]:
    """The version numbers of the registered model ``name`` in the store at ``uri``, ascending."""
    with _readable(uri) as client:
        return sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def registered_model_names(uri: str, max_results: int = 100) -> list[str]:
    """The registered models in the store at ``uri`` (at most ``max_results``, sorted), retrain locks left out."""
    with _readable(uri) as client:
        return sorted(m.name for m in client.search_registered_models(max_results=max_results)
                      if not m.name.endswith(names.LOCK_SUFFIX))


def model_input_schema(uri: str, model_uri: str):
    """The input schema of the logged model ``model_uri`` (``models:/…``) in the store at ``uri``, or None
    when it has no signature. Sets this process's tracking and registry URIs to ``uri``."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    signature = mlflow.models.get_model_info(model_uri).signature
    return signature.inputs if signature is not None else None
