"""The compress pipeline end to end on a shrunk config: real Ray Train fine-tunes, a real MLflow store.

    .venv/bin/python -m pytest -q -m slow tests/pipelines/test_compress.py     # several minutes on 2 cores

Every registered variant is loaded back from the store as the MLflow pyfunc that ``mlflow models serve``
runs and predicts raw uint8 images.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.services import names
from tests.conftest import shrunk_config, store_context

# Two fine-tunes on Ray Train (centroids, low-rank factors) instead of four: the pruning mask's hook is the same
# mechanism and has its own unit test; prune and deep here are one-shot.
QUICK = ("compress.finetune_epochs=1", "compress.finetune=[kmeans,lowrank]", "compress.latency_repeats=2", "compress.calibration_rows=256",
         "compress.sparsity=0.5", "compress.clusters=16", "compress.qat_steps=20",
         "compress.methods=[prune,kmeans,deep,int8_static,int8_dynamic,onnx,lowrank,ternary,binary,bf16,int8_qat]")


@pytest.mark.slow
def test_every_variant_is_registered_measured_and_serves_raw_images(quickstart_run):
    import mlflow

    from components.compression.package import package_bytes
    from pipelines.dispatch import run_pipeline
    from pipelines.stages.evaluate import test_split

    with store_context(quickstart_run.store) as store:
        cfg = shrunk_config("compress", *QUICK)
        result = run_pipeline(cfg, command="test")
        client, name = store.client(), cfg.registered_model_name
        versions = {v.tags.get(names.COMPRESSION): v for v in client.search_model_versions(f"name='{name}'")}
        registered = set(cfg.compress.methods) - {"bf16"}
        assert registered <= set(versions), f"missing: {registered - set(versions)}"
        assert str(client.get_model_version_by_alias(name, names.CHAMPION).version) == "1"  # never moved

        variants = {v.method: v for v in result.outputs["variants"]}
        base = variants["fp32"]
        assert package_bytes(variants["deep"].model_dir) == variants["deep"].size_bytes
        assert variants["deep"].size_bytes < base.size_bytes / 3 and variants["prune"].size_bytes < base.size_bytes
        assert variants["kmeans"].size_bytes < base.size_bytes / 4  # 4-bit indices instead of fp32

        children = client.search_runs([client.get_experiment_by_name(names.experiment_name("compress")).experiment_id],
                                      filter_string=f"tags.`{names.STAGE_TAG}` = 'compress'")
        methods = {r.data.tags.get(names.COMPRESS_METHOD_TAG): r for r in children}
        assert set(cfg.compress.methods) <= set(methods)
        # every model timed alone: the fp32 baseline (eager and compiled) on the stage run, each speed-up the
        # ratio of that baseline to the method's own latency, the drift between the start and the end logged
        stage_run = next(r for r in client.search_runs(
            [methods["prune"].info.experiment_id], filter_string=f"tags.`{names.STAGE_TAG}` = 'compress'")
            if r.info.run_id == methods["prune"].data.tags["mlflow.parentRunId"])
        base = stage_run.data.metrics
        assert {names.COMPRESS_COMPILED_LATENCY_MS, names.COMPRESS_BASELINE_DRIFT} <= set(base)
        assert [v.method for v in result.outputs["variants"][:2]] == ["fp32", "fp32_compiled"]
        assert base[names.COMPRESS_LATENCY_MS] == pytest.approx(variants["fp32"].latency_b64)
        for method in cfg.compress.methods:
            metrics = methods[method].data.metrics
            assert metrics[names.COMPRESS_SPEEDUP] == pytest.approx(
                base[names.COMPRESS_LATENCY_MS] / metrics[names.COMPRESS_LATENCY_MS], rel=1e-6), method
            assert metrics[names.COMPRESS_SPEEDUP_VS_COMPILED] == pytest.approx(
                base[names.COMPRESS_COMPILED_LATENCY_MS] / metrics[names.COMPRESS_LATENCY_MS], rel=1e-6), method
            assert metrics[names.COMPRESS_SIZE_RATIO] == pytest.approx(
                base[names.COMPRESS_SIZE_BYTES] / metrics[names.COMPRESS_SIZE_BYTES], rel=1e-6), method
            assert names.COMPRESS_FALLBACK_TAG not in methods[method].data.tags, method  # int8 compiled here
        assert names.COMPRESS_FAILED_TAG not in client.get_run(result.run_id).data.tags
        assert methods["onnx"].data.metrics[names.COMPRESS_ONNX_MAX_DIFF] < 1e-3
        assert methods["int8_qat"].data.metrics["compress/qat_steps"] == 20
        assert len(client.get_metric_history(methods["int8_qat"].info.run_id, "compress/qat_loss")) == 2
        assert methods["prune"].data.metrics[names.COMPRESS_SPARSITY] == pytest.approx(0.5, abs=1e-3)

        artifacts = {f.path for f in client.list_artifacts(result.run_id, "compress")}
        assert {"compress/report.md", "compress/pareto.png"} <= artifacts

        images, labels = test_split(result.outputs["prepared"])
        raw = images[:64, ..., 0]  # N×H×W uint8, as a client sends grey images
        for method in sorted(registered):
            model = mlflow.pyfunc.load_model(f"models:/{name}/{versions[method].version}")
            out = model.predict(raw)
            assert out["class"].shape == (64,) and out["probabilities"].shape == (64, 10), method
            accuracy = float((out["class"] == labels[:64]).mean())
            floor = 0.3 if method in ("binary", "ternary") else 0.8
            assert accuracy > floor, f"{method}: {accuracy}"
            assert np.allclose(out["probabilities"].sum(1), 1, atol=1e-3)


@pytest.mark.slow
def test_a_failed_method_fails_the_run_with_exit_1_after_registering_the_others(quickstart_run, tmp_path,
                                                                                 monkeypatch, capsys):
    from pipelines.entry.cli import main
    from pipelines.flows import compress
    from tests.conftest import SHRINK

    def crashes(ctx, directory, run_id):  # a method failing for reasons of its own (an exporter's crash)
        raise RuntimeError("the exporter crashed")

    monkeypatch.setitem(compress.METHODS, "ternary", crashes)
    overrides = [*SHRINK, "compress.methods=[ternary,prune]", "compress.finetune=[]", "compress.latency_repeats=2"]
    with store_context(quickstart_run.copy_store(tmp_path / "store")) as store:
        rc = main(["run", "compress", *overrides])
        err = capsys.readouterr().err
        assert rc == 1, err[-3000:]
        assert "ternary (RuntimeError: the exporter crashed)" in err
        client, name = store.client(), shrunk_config("compress", *overrides).registered_model_name
        # the method after the failed one still ran, was measured and registered; the champion did not move
        versions = {v.tags.get(names.COMPRESSION) for v in client.search_model_versions(f"name='{name}'")}
        assert "prune" in versions and "ternary" not in versions
        assert str(client.get_model_version_by_alias(name, names.CHAMPION).version) == "1"
        runs = client.search_runs([client.get_experiment_by_name(names.experiment_name("compress")).experiment_id])
        by_method = {r.data.tags.get(names.COMPRESS_METHOD_TAG): r for r in runs}
        assert by_method["ternary"].info.status == "FAILED" and by_method["prune"].info.status == "FINISHED"
        parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
        assert parent.info.status == "FAILED" and parent.data.tags[names.COMPRESS_FAILED_TAG] == "ternary"
