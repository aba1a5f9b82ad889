"""Pipeline ``retrain``: retrain on new data and promote only a model that beats the champion.

    visionray run retrain                                         # Fashion-MNIST, warm start
    visionray run retrain data=digits data.split_seed=1 retrain.min_improvement=0.005
    visionray schedule --cron "0 3 * * *" retrain                 # every night at 3 a.m.

1. ingest the source (cached when unchanged); its content hash is the dataset version;
2. the champion of ``registry.name`` was trained on that version → a no-op, recorded, exit 0,
   before Ray starts (seconds);
3. take the retrain lock in the shared registry (:class:`registry.RegistryLock`); held by another
   retrain → record why and exit 0;
4. preprocess → train (warm-started from the champion's weights with ``retrain.warm_start``) →
   evaluate the challenger and re-score the champion on the SAME new test split;
5. register the challenger with all its tags, log both scores and versions on the run, and only
   then move an alias: ``champion`` when challenger − champion ≥ ``retrain.min_improvement`` and the
   lock is still ours, else ``challenger``.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import Config
from pipelines.flows.kit import shared_paths, test_metrics, workdir_for
from pipelines.flows.kit import stage as _stage
from pipelines.services import names, tracking
from pipelines.services.progress import say
from pipelines.services.registry import should_promote

NOOP, LOCKED, PROMOTED, REJECTED = "no-op", "locked", "promoted", "rejected"


@dataclass(frozen=True)
class RetrainDecision:
    outcome: str  # NOOP | LOCKED | PROMOTED | REJECTED
    summary: str
    challenger_version: int | None = None
    champion_version: int | None = None
    challenger_accuracy: float | None = None
    champion_accuracy: float | None = None


def flow(cfg: Config, parent: tracking.PipelineRun) -> dict[str, Any]:
    from pipelines.services import registry
    from pipelines.stages import ingest

    name = cfg.registered_model_name
    with _stage("ingest", parent, cfg):
        manifest = ingest.run(cfg)
    parent.set_tags({names.DATASET_VERSION: manifest.version})
    ingest.log_dataset_inputs(manifest, ("train",))
    noop = _noop_if_current(name, manifest.version)
    if noop:
        return _record(parent, noop)
    holder = f"{socket.gethostname()} pid {os.getpid()} run {parent.run_id}"
    lock = registry.RegistryLock(parent.uri, name, cfg.retrain.lock_ttl_s, holder)
    why_not = lock.acquire()
    if why_not:
        return _record(parent, RetrainDecision(LOCKED, why_not))
    try:
        # Checked again under the lock: a retrain that held it may have just promoted on this data.
        noop = _noop_if_current(name, manifest.version)
        if noop:
            return _record(parent, noop)
        return _challenge(cfg, parent, manifest, lock)
    finally:
        lock.release()


def _noop_if_current(name: str, data_version: str) -> RetrainDecision | None:
    from pipelines.services import registry

    champion = registry.champion_of(name)
    if champion is None or champion.tags.get(names.DATASET_VERSION) != data_version:
        return None
    return RetrainDecision(NOOP, f"no new data: champion {name} v{champion.version} was trained on dataset "
                                 f"version {data_version}; nothing to retrain",
                           champion_version=int(champion.version))


def _challenge(cfg: Config, parent: tracking.PipelineRun, manifest, lock) -> dict[str, Any]:
    from pipelines.services import registry, runtime
    from pipelines.stages import evaluate, preprocess, train

    name = cfg.registered_model_name
    champion = registry.champion_of(name)
    workdir = workdir_for(cfg, parent.run_id)
    out: dict[str, Any] = {"manifest": manifest}
    with runtime.ray_session(cfg.cluster), tempfile.TemporaryDirectory(prefix="visionray-champion-") as tmp:
        runtime.check_shared_storage(shared_paths(cfg))
        champion_dir = registry.download_package(name, int(champion.version), Path(tmp)) if champion else None
        with _stage("preprocess", parent, cfg):
            prepared = out["prepared"] = preprocess.run(cfg, manifest, workdir)
        init = _warm_start(cfg, prepared, champion, champion_dir, Path(tmp) / "init")
        with _stage("train", parent, cfg) as run_id:
            trained = out["trained"] = train.run(cfg, prepared, parent.uri, run_id, f"{cfg.pipeline}-{parent.run_id}",
                                                 workdir, init_state=init)
        with _stage("evaluate", parent, cfg):
            evaluation = out["evaluation"] = evaluate.run(cfg, prepared, trained)
            champ_acc = evaluate.score_package(cfg, prepared, champion_dir)[1] if champion_dir else None
            scores = {names.RETRAIN_CHALLENGER_ACCURACY: evaluation.test_accuracy}
            if champ_acc is not None:
                scores |= {names.RETRAIN_CHAMPION_ACCURACY: champ_acc,
                           names.RETRAIN_IMPROVEMENT: evaluation.test_accuracy - champ_acc}
            tracking.log_metrics(scores)
        tracking.log_metrics({**test_metrics(evaluation), **scores})
    with _stage("register", parent, cfg):
        tags = {names.DATASET_VERSION: manifest.version, names.GIT_SHA: parent.tags[names.GIT_SHA],
                names.RUN_ID: parent.run_id}
        version = registry.register_version(cfg, evaluation, prepared.num_classes, tags)
        decision = _decide(cfg, version, evaluation.test_accuracy, champion, champ_acc, lock.still_held())
        parent.set_tags({names.RETRAIN_CHALLENGER_VERSION_TAG: str(version),
                         names.RETRAIN_CHAMPION_VERSION_TAG: str(decision.champion_version or "")})
        # Every tag and metric of the version and the run is written: the alias move is the last step.
        registry.move_alias(name, version, names.CHAMPION if decision.outcome == PROMOTED else names.CHALLENGER)
        tracking.set_tags({names.DECISION_TAG: decision.summary, names.RETRAIN_OUTCOME_TAG: decision.outcome})
    out["decision"] = _record(parent, decision)["decision"]
    return out


def _decide(cfg: Config, version: int, challenger: float, champion, champ_acc: float | None,
            lock_held: bool) -> RetrainDecision:
    name, margin = cfg.registered_model_name, cfg.retrain.min_improvement
    champ_v = int(champion.version) if champion else None
    common = dict(challenger_version=version, champion_version=champ_v, challenger_accuracy=challenger,
                  champion_accuracy=champ_acc)
    if not lock_held:
        return RetrainDecision(REJECTED, f"{name} v{version} stays the challenger: the retrain lock was broken "
                                         f"by another retrain while this one ran, so it may not promote", **common)
    if should_promote(challenger, champ_acc, higher_is_better=True, min_improvement=margin):
        why = (f"test accuracy {challenger:.4f} vs champion v{champ_v}'s {champ_acc:.4f} on the same new test "
               f"split (+{challenger - champ_acc:.4f} >= retrain.min_improvement={margin:g})"
               if champ_acc is not None else "no champion yet")
        return RetrainDecision(PROMOTED, f"{name} v{version} is the new champion: {why}", **common)
    return RetrainDecision(REJECTED, f"{name} v{version} is the challenger: test accuracy {challenger:.4f} vs "
                                     f"champion v{champ_v}'s {champ_acc:.4f} on the same new test split "
                                     f"({challenger - champ_acc:+.4f} < retrain.min_improvement={margin:g})",
                           **common)


def _warm_start(cfg: Config, prepared, champion, champion_dir: Path | None, scratch: Path) -> dict | None:
    """The net weights to start from: ``retrain.init_from``, else the champion's; None when they do not fit
    this run's net (training starts from scratch, with a line saying why)."""
    from components.packaging import load_package
    from pipelines.services import registry
    from pipelines.stages.train import model_spec

    if not cfg.retrain.warm_start:
        return None
    if cfg.retrain.init_from:
        source = cfg.retrain.init_from
        package = registry.fetch_package(source, scratch, registry.registry_uri())
    elif champion_dir is not None:
        source, package = f"champion v{champion.version}", champion_dir
    else:
        return None
    model, spec = load_package(package)  # runs no code from the package (components.package_safety)
    wanted = model_spec(cfg, prepared.manifest())
    state = model.net.state_dict()
    differs = spec_differences(spec, wanted)
    if differs and not warm_startable(spec, wanted, state):
        say(f"retrain: warm start skipped: {source}'s weights do not fit model={wanted.name}'s net "
            f"({'; '.join(differs)}); training from scratch")
        return None
    also = f" (its {'; '.join(differs)}: the weights fit this run's net)" if differs else ""
    say(f"retrain: warm start from {source}'s weights{also}")
    return {k: v.clone() for k, v in state.items()}


def spec_differences(source, wanted) -> list[str]:
    """What the source package's spec has that this run's does not, as ``field a, here b`` (the normaliser
    aside: it is refitted on every run's data)."""
    a, b = source.to_dict(), wanted.to_dict()
    return [f"{k} {a.get(k)!r}, here {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k != "normalization" and a.get(k) != b.get(k)]


def warm_startable(source, wanted, state: dict) -> bool:
    """Whether ``state`` (the source's net) can start this run's net: the same task and classes, and every
    tensor the same name and shape. Dropout or test-time views change no weight; a width or depth does."""
    if (source.task, tuple(source.classes)) != (wanted.task, tuple(wanted.classes)):
        return False
    target = wanted.build().net.state_dict()
    return state.keys() == target.keys() and all(state[k].shape == target[k].shape for k in target)


def _record(parent: tracking.PipelineRun, decision: RetrainDecision) -> dict[str, Any]:
    tags = {names.RETRAIN_OUTCOME_TAG: decision.outcome, names.DECISION_TAG: decision.summary}
    if decision.champion_version is not None:
        tags[names.RETRAIN_CHAMPION_VERSION_TAG] = str(decision.champion_version)
    if decision.challenger_version is not None:
        tags[names.RETRAIN_CHALLENGER_VERSION_TAG] = str(decision.challenger_version)
    parent.set_tags(tags)
    say(f"retrain: {decision.outcome}: {decision.summary}")
    return {"decision": decision}
