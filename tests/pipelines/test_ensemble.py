"""Pipeline ``ensemble`` on a real MLflow store (and, marked slow, a real local Ray).

The sweep's trials are made here by hand to the sweep contract (child runs of the sweep's run, tagged
``visionray.stage=trial``, metric ``train/best_val_accuracy``, artifact ``best_model/``), so this test
does not depend on the sweep pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from components.models import Normalize
from components.packaging import ModelSpec, load_package, save_package
from pipelines.services import names
from tests.conftest import shrunk_config

DIGITS = ModelSpec(name="convnet", in_channels=1, num_classes=10, image_size=8,
                   classes=tuple(str(i) for i in range(10)), width=8)


def make_sweep(store, root: Path, accuracies, under_stage: bool = False) -> tuple[str, list[str]]:
    """A finished sweep run with one trial per accuracy (a model package each); returns (sweep id, trial ids)."""
    from pipelines.services.tracking import ensure_experiment

    client = store.client()
    exp = ensure_experiment(names.experiment_name(names.SWEEP_PIPELINE), store.uri)
    sweep = client.create_run(exp, run_name="sweep-test", tags={names.PIPELINE_TAG: names.SWEEP_PIPELINE}).info.run_id
    holder = sweep
    if under_stage:
        holder = client.create_run(exp, run_name="sweep", tags={"mlflow.parentRunId": sweep,
                                                                names.STAGE_TAG: "sweep"}).info.run_id
    trials = []
    for i, acc in enumerate(accuracies):
        trial = client.create_run(exp, run_name=f"trial-{i}", tags={"mlflow.parentRunId": holder,
                                                                    names.STAGE_TAG: names.TRIAL_STAGE}).info.run_id
        if acc is not None:  # None: a trial that failed before its first epoch
            client.log_metric(trial, names.BEST_VAL_ACCURACY, acc)
            torch.manual_seed(i)
            package = save_package(root / f"trial-{i}", DIGITS.build(Normalize(torch.tensor([0.3]), torch.tensor([0.3]))),
                                   DIGITS)
            client.log_artifacts(trial, str(package), names.BEST_MODEL_ARTIFACT)
        client.set_terminated(trial)
        trials.append(trial)
    if under_stage:
        client.set_terminated(holder)
    client.set_terminated(sweep)
    return sweep, trials


def test_sweep_trials_are_found_and_ranked_by_best_val_accuracy(mlflow_store, tmp_path):
    from pipelines.config import ConfigError
    from pipelines.flows.ensemble import resolve_sweep_run, trial_runs

    uri = mlflow_store.uri
    with pytest.raises(ConfigError, match="no finished sweep run"):
        resolve_sweep_run(uri, "last")
    first, _ = make_sweep(mlflow_store, tmp_path / "a", [0.6, 0.8])
    sweep, trials = make_sweep(mlflow_store, tmp_path / "b", [0.5, None, 0.9, 0.7], under_stage=True)
    assert resolve_sweep_run(uri, "last") == sweep
    assert resolve_sweep_run(uri, first) == first
    ranked = [t.run_id for t in trial_runs(uri, sweep)]
    assert ranked == [trials[2], trials[3], trials[0]]  # the failed trial (no metric) is left out
    with pytest.raises(ConfigError, match="no such MLflow run"):
        resolve_sweep_run(uri, "0" * 32)


def test_extra_runs_are_seeds_then_architectures_each_with_its_own_seed_and_no_hooks():
    from pipelines.flows.ensemble import member_configs

    cfg = shrunk_config("ensemble", "ensemble.members=[snapshots,ema,seeds,models]", "ensemble.seeds=2",
                        "ensemble.models=[resnet20,vgg]", "train.snapshots=2", "train.ema_decay=0.9")
    runs = member_configs(cfg)
    assert [n for n, _, _ in runs] == [f"seed-{cfg.seed + 1}", f"seed-{cfg.seed + 2}", "model-resnet20", "model-vgg"]
    assert [s for _, s, _ in runs] == ["seeds", "seeds", "models", "models"]
    assert [c.seed for _, _, c in runs] == [cfg.seed + i for i in (1, 2, 3, 4)]  # no two runs share a seed
    assert [c.model.name for _, _, c in runs] == [cfg.model.name, cfg.model.name, "resnet", "vgg"]
    assert all(c.train.snapshots == 0 and c.train.ema_decay == 0 for _, _, c in runs)  # those are the shared run's
    assert all(c.train.epochs == cfg.train.epochs and c.data == cfg.data for _, _, c in runs)  # same recipe
    assert member_configs(shrunk_config("ensemble", "ensemble.members=[snapshots]", "train.snapshots=2")) == []


def test_a_misspelt_or_missing_architecture_is_a_config_error_before_anything_trains():
    from pipelines.config import ConfigError
    from pipelines.flows.ensemble import check

    with pytest.raises(ConfigError, match=r"ensemble.models=resnet21 is not a known model config.*resnet20"):
        check(shrunk_config("ensemble", "ensemble.members=[models]", "ensemble.models=[resnet21]", "train.snapshots=2"))
    with pytest.raises(ConfigError, match="ensemble.models"):
        shrunk_config("ensemble", "ensemble.members=[models]", "train.snapshots=2")


@pytest.mark.slow
def test_ensemble_pipeline_registers_one_model_that_predicts_raw_images(ray_local, mlflow_store, tmp_path):
    import mlflow

    from components.ensembles import member_names
    from pipelines.dispatch import run_pipeline
    from pipelines.stages.evaluate import test_split

    _, trials = make_sweep(mlflow_store, tmp_path / "trials", [0.5, 0.9, 0.7])
    # Extra runs: one architecture (seeds are the same member_configs path, checked without training above).
    cfg = shrunk_config("ensemble", "ensemble.members=[sweep,snapshots,ema,models]", "ensemble.sweep_run=last",
                        "ensemble.top_k=2", "train.snapshots=2", "train.ema_decay=0.9", "ensemble.models=[mlp]")
    result = run_pipeline(cfg, command="test")
    client = mlflow_store.client()
    parent = client.get_run(result.run_id)
    expected = [f"trial-{trials[1][:8]}", f"trial-{trials[2][:8]}", "snapshot-1", "snapshot-2", "ema", "model-mlp"]
    built = result.outputs["built"]
    package = built.trained.best_checkpoint
    assert [m.name for m in built.members] == expected  # every candidate, scored side by side below
    # ensemble.select=greedy (the default): the package holds the members chosen on val, in that order
    assert built.chosen and set(built.chosen) <= set(expected) and len(set(built.chosen)) == len(built.chosen)
    assert member_names(package) == built.chosen
    # ensemble.models: another architecture, trained in its own run nested under the ensemble stage's run, with
    # its own curves, packaged as such
    extra_run = client.get_run(built.members[-1].origin)
    stage_run = client.get_run(extra_run.data.tags["mlflow.parentRunId"])
    assert extra_run.info.run_name == "model-mlp" and stage_run.data.tags[names.STAGE_TAG] == "ensemble"
    assert names.VAL_ACCURACY in extra_run.data.metrics
    assert load_package(built.members[-1].package)[1].name == "mlp"

    # Side by side: each member, the ensemble, the best single member, EMA vs raw final weights.
    m = parent.data.metrics
    assert m[names.ENSEMBLE_MEMBERS] == len(built.chosen)
    member_accuracy = {member: m[names.ensemble_member_metric(member, "test_accuracy")] for member in expected}
    # the trained members learned the digits (chance 0.1); the fake sweep's trials are untrained nets
    assert min(member_accuracy[k] for k in ("snapshot-1", "snapshot-2", "ema", "model-mlp")) > 0.5, member_accuracy
    assert m[names.ENSEMBLE_BEST_MEMBER_TEST_ACCURACY] in member_accuracy.values()
    assert m[names.ENSEMBLE_GAIN] == pytest.approx(m[names.TEST_ACCURACY] - m[names.ENSEMBLE_BEST_MEMBER_TEST_ACCURACY])
    # a paired difference of two accuracies on n test images has a standard error of at most 1/sqrt(n)
    images, labels = test_split(result.outputs["prepared"])
    bound = 1 / np.sqrt(len(labels))
    assert 0 <= m[names.ENSEMBLE_GAIN_STDERR] <= bound and 0 <= m[names.ENSEMBLE_EMA_GAIN_STDERR] <= bound
    # the logged test accuracy is the registered package's, recomputed here on the whole test split
    ensemble_model, _ = load_package(package)
    assert m[names.TEST_ACCURACY] == pytest.approx(
        float((ensemble_model.predict_uint8(images)[0].numpy() == labels).mean()), abs=1e-6)
    assert m[names.ENSEMBLE_EMA_GAIN] == pytest.approx(m[names.ENSEMBLE_EMA_TEST_ACCURACY]
                                                       - m[names.ENSEMBLE_RAW_TEST_ACCURACY])
    table = json.loads(Path(client.download_artifacts(result.run_id, names.ENSEMBLE_TABLE_ARTIFACT,
                                                      str(tmp_path / "dl"))).read_text())
    rows = [dict(zip(table["columns"], r)) for r in table["data"]]
    assert [r["model"] for r in rows][:7] == [*expected, "ensemble"]
    assert [r["model"] for r in rows[:6] if r["in_ensemble"]] == [n for n in expected if n in built.chosen]
    assert {"raw final weights"} <= {r["model"] for r in rows}
    assert any(r["model"].startswith("best single: ") for r in rows)

    # One registered model: it loads back from the store and takes raw uint8 images like any other.
    version = result.outputs["decision"].version
    served = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model_name}/{version}")
    out = served.predict(images[:16, :, :, 0])
    probs = out["probabilities"]
    assert probs.shape == (16, 10) and out["class"].shape == (16,)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    ensemble, _ = load_package(package)
    members = [load_package(Path(package) / "members" / d)[0] for d in sorted(p.name for p in (Path(package) / "members").iterdir())]
    mean = torch.stack([mm.predict_uint8(images[:16])[1] for mm in members]).mean(0).numpy()
    np.testing.assert_allclose(probs, mean, atol=1e-5)
    assert (out["class"] == mean.argmax(1)).all()
