"""Stage ``register``: log the evaluated model as an MLflow pyfunc, register a version, run the gate.

The gate (:func:`register_and_gate`, one for every task): ``champion`` moves to the new version only
when its primary metric beats the current champion's in the metric's direction (classifiers: test
accuracy, higher; policies: greedy return, higher; a char LM's bits per character would be lower);
otherwise the new version becomes ``challenger``. Each version stores the metric as the tags
``primary_metric`` and ``primary_value`` (and the task's own tag, ``test_accuracy``). Alias moves are
the last step, after every tag of the version is written, so nothing half-registered is ever served::

    mlflow models serve -m models:/fashion-mnist-classifier@champion --env-manager local

A version explains itself. Its logged model is named after its architecture (``convnet``,
``resnet20-int8``, ``ppo-policy``), has the metrics it is judged by linked to it (MLflow 3's
logged-model metrics; for a vision model measured on the ingested test split, that dataset too) and
the architecture as its params; the version's description gives the task, data version, test metrics
and the command that reproduces it. One run id: the model is logged *from* the run its metrics are on
(the pipeline's parent run; a compressed variant's method run), so MLflow's source run of the version
and the logged model is the run its ``run_id`` tag names. The register stage's run (the active run while
it registers) lists the model among its outputs and holds the gate's decision.

The pieces (:func:`register_version`, :func:`should_promote`, :func:`move_alias`) are shared with
``retrain``, which decides with its own margin (both models scored on one new test split). :class:`RegistryLock` is the retrain
lock: a registered model in the shared store, so it holds across machines, not only on one disk.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import Config
from pipelines.records import Evaluation
from pipelines.services import names, tracking
from pipelines.services.progress import say


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


#: How a version's description names each task (components.tasks), and a policy.
TASK_WORDS = {"classification": "image classifier", "language_model": "character language model",
              "captioning": "image captioner", "generation": "image generator",
              "segmentation": "semantic segmenter", "detection": "object detector",
              "policy": "reinforcement-learning policy"}


@dataclass(frozen=True)
class ModelCard:
    """What a registered version says about itself: its logged model's name (the architecture), the task,
    the metrics linked to the logged model (MLflow keys) and the architecture's options as its params."""

    model_name: str
    task: str
    metrics: dict[str, float]
    params: dict[str, str] = field(default_factory=dict)


def evaluation_card(evaluation: Evaluation, variant: str | None = None) -> ModelCard:
    """The card of an evaluated model package: named after ``arch.json``'s architecture (plus the
    compression ``variant``), with its test metrics."""
    from components.packaging import ARCH_FILE

    arch_file = Path(evaluation.model_dir) / ARCH_FILE
    arch = json.loads(arch_file.read_text()) if arch_file.is_file() else {}
    name = str(arch.get("name") or "model") + (f"-{variant}" if variant else "")
    params = {k: str(v) for k, v in arch.items() if isinstance(v, (str, int, float, bool)) and k != "name"}
    return ModelCard(name, evaluation.task, {names.metric(names.TEST, k): v for k, v in evaluation.metrics.items()},
                     params)


def policy_card(eval_return: float, tags: dict[str, str]) -> ModelCard:
    """The card of a greedy policy: ``<algo>-policy``, judged by its greedy evaluation return."""
    algo = tags.get(names.RL_ALGO_TAG, "rl")
    return ModelCard(f"{algo}-policy", "policy", {names.RL_EVAL_RETURN_MEAN: eval_return},
                     {k: tags[k] for k in (names.RL_ENV_TAG, names.RL_ALGO_TAG) if k in tags})


def describe_version(card: ModelCard, tags: dict[str, str], source_run_id: str | None, command: str | None,
                     dataset: str | None = None) -> str:
    """A version's description (markdown): what it is, on which data, how it scored, where it comes from
    and the command that trains it again."""
    task = TASK_WORDS.get(card.task, card.task.replace("_", " "))
    lines = [f"**{card.model_name}** {task}" + (f", compressed: {tags[names.COMPRESSION]}"
                                                if tags.get(names.COMPRESSION) else "")]
    if tags.get(names.DATASET_VERSION):
        lines.append(f"data: {dataset or 'dataset'} version {tags[names.DATASET_VERSION]}")
    elif tags.get(names.RL_ENV_TAG):
        lines.append(f"environment: {tags[names.RL_ENV_TAG]}")
    scores = [f"{key} {value:.4f}" for key, value in sorted(card.metrics.items(), key=lambda kv: kv[0].endswith("loss"))
              if math.isfinite(value)]  # the task's own metric first
    if scores:
        lines.append(" · ".join(scores))
    if source_run_id:
        lines.append(f"run: {source_run_id}" + (f" (git {tags[names.GIT_SHA][:12]})" if tags.get(names.GIT_SHA) else ""))
    if command:
        lines.append(f"reproduce: `{command}`")
    return "  \n".join(lines)


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

    from components.packaging import ARCH_FILE
    from components.tasks import build_task

    arch_file = Path(evaluation.model_dir) / ARCH_FILE
    arch = json.loads(arch_file.read_text()) if arch_file.is_file() else {}
    task = build_task(evaluation.task, num_classes=num_classes, model=arch.get("name"))
    size, channels = arch.get("image_size"), arch.get("in_channels")
    shape = ((size, size) if channels == 1 else (size, size, channels)) if size and channels else None
    inputs, outputs = task.served_schema(evaluation.example, {"num_classes": num_classes, "image_shape": shape})

    def schema(specs) -> Schema:
        return Schema([ColSpec("string", s.name) if s.dtype == "string" else
                       TensorSpec(np.dtype(s.dtype), s.shape, s.name) for s in specs])

    def param_type(value) -> str:
        return {bool: "boolean", int: "long", float: "double"}.get(type(value), "string")

    params = task.served_params()
    if all(s.dtype == "uint8" for s in inputs):
        # Images: no input schema. MLflow's would cast a JSON 0.5 to uint8 0 (a black image, answered 200)
        # and refuse N×H×W×1 for a model logged with N×H×W; serving.raw_pixels checks the pixels instead.
        # A task whose output no tensor spec describes (a detector's boxes per image, any number) declares none.
        return ModelSignature(inputs=None, outputs=schema(outputs) if outputs else None,
                              params=ParamSchema([ParamSpec(k, param_type(v), v) for k, v in params.items()])
                              if params else None)
    return ModelSignature(inputs=schema(inputs), outputs=schema(outputs) if outputs else None,
                          params=ParamSchema([ParamSpec(k, param_type(v), v) for k, v in params.items()])
                          if params else None)


def code_paths() -> list[str]:
    """The two packages logged with a model, where they were imported from: on a cluster reached by
    ``ray://`` each is a py_module of its own (runtime.shipped_code), not siblings under one root."""
    import components
    import pipelines

    return [str(Path(components.__file__).parent), str(Path(pipelines.__file__).parent)]


def requirements() -> list[str]:
    import cloudpickle
    import mlflow
    import torch

    # Pinned explicitly: inferring them would load the model in a subprocess (slow) and guess.
    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={np.__version__}", f"cloudpickle=={cloudpickle.__version__}"]


def model_metadata(model_dir: str) -> dict[str, Any]:
    """What a client reads in the logged model's ``MLmodel`` (``metadata``): its task and class names
    (a segmenter's class id k is ``classes[k]``, background first)."""
    try:
        arch = json.loads((Path(model_dir) / "arch.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: arch[k] for k in ("task", "classes") if k in arch}


def log_model(evaluation: Evaluation, num_classes: int, extra_requirements: tuple[str, ...] = (),
              name: str = "model", model_id: str | None = None):
    """Log a model package as a pyfunc named ``name`` (into the logged model ``model_id`` if given)."""
    import mlflow

    return mlflow.pyfunc.log_model(
        name=name, model_id=model_id, python_model=str(Path(__file__).with_name("serving_model.py")),
        artifacts={"package": evaluation.model_dir},
        code_paths=code_paths(),
        signature=signature(evaluation, num_classes), input_example=evaluation.example,
        pip_requirements=requirements() + list(extra_requirements),
        metadata=model_metadata(evaluation.model_dir) or None)


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
                           lambda model_name, model_id: log_model(evaluation, num_classes, extra_requirements,
                                                                  model_name, model_id),
                           evaluation_metric(evaluation), tags,
                           card=evaluation_card(evaluation, tags.get(names.COMPRESSION)))


#: ``log(model_name, model_id)``: log the model's files into the logged model ``model_id``; returns ModelInfo.
LogModel = Callable[[str, str], Any]


def register_logged(name: str, log: LogModel, metric: PrimaryMetric, tags: dict[str, str],
                    what: str = "model", card: ModelCard | None = None) -> int:
    """Log the model from its source run (the run ``tags["run_id"]`` names, else the active run), check its
    artifacts arrived, link the card's metrics (and the test dataset) to it, and register a version with
    every tag at creation, the primary metric's among them, and a description.

    A failed upload raises before anything is registered: no version ever lacks its files or tags.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus
    from mlflow.exceptions import MlflowException

    card = card or ModelCard("model", what, {metric.key: metric.value})
    client = MlflowClient()
    source = _source_run(client, tags.get(names.RUN_ID))
    model = None
    try:
        model = mlflow.initialize_logged_model(name=card.model_name, source_run_id=source, model_type=card.task,
                                               params=card.params or None)
        info = log(card.model_name, model.model_id)
    except (OSError, MlflowException) as e:  # disk full, a read-only or unreachable artifact store
        if model is not None:
            with contextlib.suppress(Exception):
                mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise RuntimeError(f"uploading the {what} to the artifact store failed ({type(e).__name__}: {e}); "
                           f"nothing was registered or promoted.") from e
    _check_artifacts(info.model_uri)
    dataset = _link_metrics(client, source, model.model_id, card.metrics) if source else None
    version = int(mlflow.register_model(info.model_uri, name, tags={**tags, **metric.tags()}).version)
    command = client.get_run(source).data.tags.get(names.COMMAND) if source else None
    description = describe_version(card, tags, source, command, dataset)
    client.update_model_version(name, str(version), description=description)
    client.set_logged_model_tags(model.model_id, {names.RUN_NOTE_TAG: description})  # the model page's description
    if not client.get_registered_model(name).description:
        task = TASK_WORDS.get(card.task, card.task)
        client.update_registered_model(name, description=(
            f"A {task} registered by visionray. `@{names.CHAMPION}` is the version served; "
            f"`@{names.CHALLENGER}` the latest that did not beat it. Each version's description says what "
            f"it is, what it scored, and the command that trains it again."))
    return version


def _source_run(client, run_id: str | None) -> str | None:
    """The run a version is logged from: ``run_id`` when the store has that run, else the active run."""
    from mlflow.exceptions import MlflowException

    if run_id:
        try:
            return client.get_run(run_id).info.run_id
        except MlflowException:
            pass
    return tracking.active_run_id()


def _link_metrics(client, run_id: str, model_id: str, metrics: dict[str, float]) -> str | None:
    """Link ``metrics`` to the logged model on ``run_id`` (MLflow 3's logged-model metrics), with the test
    split they were measured on when the pipeline ingested one; list the model among the run's outputs.

    A metric the run already has with the same value is linked by logging that very point again with
    the model's id (the store keeps one point), so the run's history gains no duplicate. When ``run_id``
    is the active run, MLflow has already linked its step-0 points itself (without a dataset); those
    stay as they are. Returns the dataset's name, if any."""
    from mlflow.entities import LoggedModelOutput, Metric

    dataset = _test_dataset(client, run_id)
    linked = {m.key for m in client.get_logged_model(model_id).metrics or []}
    now = int(time.time() * 1000)
    batch = []
    for key, value in metrics.items():
        if not math.isfinite(value) or key in linked:
            continue
        same = [m for m in client.get_metric_history(run_id, key) if m.step == 0 and m.value == float(value)]
        batch.append(Metric(key, float(value), same[-1].timestamp if same else now, 0, model_id=model_id,
                            dataset_name=dataset[0] if dataset else None,
                            dataset_digest=dataset[1] if dataset else None, run_id=run_id))
    if batch:
        client.log_batch(run_id, metrics=batch)
    if run_id != tracking.active_run_id():  # the active run's outputs list it already
        client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])
    return dataset[0] if dataset else None


def _test_dataset(client, run_id: str) -> tuple[str, str] | None:
    """(name, digest) of the test split the pipeline of ``run_id`` ingested: an input of its ``ingest``
    stage with context ``test``; None when there is none (RL, text corpora)."""
    root = client.get_run(run_id)
    for _ in range(3):  # a compressed variant's run -> its stage's run -> the pipeline's run
        parent = root.data.tags.get("mlflow.parentRunId")
        if not parent:
            break
        root = client.get_run(parent)
    ingest = client.search_runs([root.info.experiment_id], max_results=1, filter_string=(
        f"tags.`mlflow.parentRunId` = '{root.info.run_id}' and tags.`{names.STAGE_TAG}` = 'ingest'"))
    for run in ingest:
        for inp in run.inputs.dataset_inputs:
            if any(t.key == "mlflow.data.context" and t.value == names.TEST for t in inp.tags):
                return inp.dataset.name, inp.dataset.digest
    return None


def register_and_gate(name: str, log: LogModel, metric: PrimaryMetric, tags: dict[str, str],
                      what: str = "model", card: ModelCard | None = None) -> Decision:
    """Register a version (:func:`register_logged`), then run the gate on ``metric``: the new
    version becomes ``champion`` when it strictly beats the champion's stored value in the metric's
    direction (or there is no champion, or it has no such value), else ``challenger``."""
    from mlflow import MlflowClient

    version = register_logged(name, log, metric, tags, what, card)
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


#: Said whenever weights come from outside the configured registry. Accurate on purpose: what the loaders
#: check is components.package_safety; what they cannot check is whether the weights are any good.
UNTRUSTED_WEIGHTS_WARNING = (
    "warning: loading model weights from {uri}, outside the configured registry {registry}. A pickled "
    "file can run arbitrary code when unpickled; visionray loads a model package without running code from it: weights with torch.load(weights_only=True), "
    "int8 programs only after checking that they hold no pickled object and call only tensor operations, "
    "ONNX graphs without external files; a package that fails a check is refused. It cannot tell whether "
    "the weights are what they claim to be: load weights only from sources you trust.")


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
    return register_and_gate(cfg.registered_model_name,
                             lambda model_name, model_id: log_model(evaluation, num_classes, (), model_name, model_id),
                             evaluation_metric(evaluation), tags, card=evaluation_card(evaluation))


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


def log_policy(policy_dir: str, example: np.ndarray, name: str = "model", model_id: str | None = None):
    """Log an exported greedy policy as a pyfunc (code: pipelines/services/rl_serving_model.py)."""
    import mlflow
    import torch

    return mlflow.pyfunc.log_model(
        name=name, model_id=model_id, python_model=str(Path(__file__).with_name("rl_serving_model.py")),
        artifacts={"policy": policy_dir}, code_paths=code_paths(),
        signature=policy_signature(example), input_example=example,
        pip_requirements=[f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
                          f"numpy=={np.__version__}"])


def register_policy(name: str, policy_dir: str, eval_return: float, example: np.ndarray,
                    tags: dict[str, str]) -> Decision:
    """Log and register a policy, and run the gate on its greedy evaluation return."""
    return register_and_gate(name, lambda model_name, model_id: log_policy(policy_dir, example, model_name, model_id),
                             policy_metric(eval_return), tags, what="policy", card=policy_card(eval_return, tags))


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


def model_listing(uri: str, max_results: int = 100) -> list[dict[str, Any]]:
    """The registered models in the store at ``uri`` for `visionray models` (retrain locks left out), by
    name, each ``{"name", "description", "versions"}`` with its versions newest first: ``{"version",
    "aliases", "tags", "metrics", "run_id", "created_ms"}``, where ``metrics`` are the ``test/*`` metrics of
    the version's run (its ``run_id`` tag, else MLflow's source run). RegistryUnreadable when the store
    cannot be read."""
    from mlflow.exceptions import MlflowException

    test_prefix = names.metric(names.TEST, "")
    out = []
    with _readable(uri) as client:
        for m in sorted(client.search_registered_models(max_results=max_results), key=lambda m: m.name):
            if m.name.endswith(names.LOCK_SUFFIX):
                continue
            aliases: dict[str, list[str]] = {}
            for alias, version in dict(m.aliases or {}).items():
                aliases.setdefault(str(version), []).append(alias)
            versions = []
            for v in sorted(client.search_model_versions(f"name = '{m.name}'"), key=lambda v: -int(v.version)):
                tags = dict(v.tags or {})
                run_id = tags.get(names.RUN_ID) or v.run_id
                try:
                    metrics = client.get_run(run_id).data.metrics if run_id else {}
                except MlflowException:  # the run was deleted
                    metrics = {}
                versions.append({"version": int(v.version), "aliases": sorted(aliases.get(str(v.version), [])),
                                 "tags": tags, "run_id": run_id or "", "created_ms": v.creation_timestamp,
                                 "metrics": {k: val for k, val in sorted(metrics.items()) if k.startswith(test_prefix)}})
            out.append({"name": m.name, "description": m.description or "", "versions": versions})
    return out


def version_run_id(uri: str, name: str, version: int) -> str | None:
    """The run a version of ``name`` came from (its ``run_id`` tag, else MLflow's source run), or None when
    there is no such version."""
    from mlflow.exceptions import MlflowException

    with _readable(uri) as client:
        try:
            v = client.get_model_version(name, str(version))
        except MlflowException:
            return None
        return dict(v.tags or {}).get(names.RUN_ID) or v.run_id or None


# --------------------------------------------------------------------------- a registered model as a tool


def fetch_registered(uri: str, dst: Path, key: str, hint: str = "") -> Path:
    """The package of the registered model ``uri`` (``models:/NAME@alias`` or ``models:/NAME/version``) in
    the configured registry, downloaded under ``dst``: a model another pipeline uses as a tool (the
    generator's FID judge, ``generate.fid_model``). A ConfigError naming ``key`` when it is not there."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipelines.config import ConfigError

    if not uri.startswith("models:/"):
        raise ConfigError(f"{key}={uri} must name a registered model: models:/NAME@alias or models:/NAME/VERSION.")
    import os

    # a logged model is ~150 files (the package and the code that serves it): no progress bar per file
    before = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except MlflowException as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{key}={uri} is not registered in {registry_uri()} ({first}){hint}") from None
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = before
    return package_in(root)
