"""When the store fails: an artifact upload that fails registers nothing; a lost MLflow server mid-run
fails the run cleanly and leaves no half-registered version; weights from outside the registry warn.

    .venv/bin/python -m pytest tests/pipelines/test_store_failures.py            # fast ones
    .venv/bin/python -m pytest -m slow tests/pipelines/test_store_failures.py    # + a real mlflow server
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from pipelines.records import Evaluation
from pipelines.services import names, registry, tracking
from pipelines.services.runtime import free_port
from tests.conftest import shrunk_config

MODEL = "digits-classifier"


def _evaluation(tmp_path) -> Evaluation:
    """A real (untrained) model package, as the evaluate stage hands it to register."""
    from components.packaging import ModelSpec, save_package

    spec = ModelSpec(name="softmax", in_channels=1, num_classes=10, image_size=8,
                     classes=tuple(str(i) for i in range(10)))
    package = save_package(tmp_path / "package", spec.build(), spec)
    return Evaluation.of_classifier(model_dir=str(package), test_loss=2.3, test_accuracy=0.1,
                                    example=np.zeros((2, 8, 8), dtype=np.uint8))


def _in_run(store):
    import mlflow

    exp = tracking.ensure_experiment(names.experiment_name("quickstart"), store.uri)
    return mlflow.start_run(experiment_id=exp)


def test_a_failed_artifact_upload_registers_and_promotes_nothing(mlflow_store, tmp_path):
    # Root ignores read-only permissions, so the upload is made to fail the way a full or broken
    # disk does: the directory the model's files go to cannot be created (a file is in the way).
    (mlflow_store.root / "mlruns" / "artifacts").mkdir(parents=True, exist_ok=True)
    (mlflow_store.root / "mlruns" / "artifacts" / "models").write_text("not a directory")
    with _in_run(mlflow_store), pytest.raises(RuntimeError, match="uploading the model to the artifact store "
                                                               "failed.*nothing was registered or promoted"):
        registry.register_version(shrunk_config("quickstart"), _evaluation(tmp_path), 10, {})
    client = mlflow_store.client()
    assert client.search_model_versions(f"name='{MODEL}'") == []


def test_registry_weights_load_quietly_and_outside_weights_warn(mlflow_store, tmp_path, capsys):
    with _in_run(mlflow_store) as run:
        version = registry.register_version(shrunk_config("quickstart"), _evaluation(tmp_path), 10,
                                            {names.RUN_ID: run.info.run_id})
    v = mlflow_store.client().get_model_version(MODEL, str(version))
    assert v.tags[names.TEST_ACCURACY_TAG] == "0.100000" and v.tags[names.RUN_ID] == run.info.run_id
    package = registry.fetch_package(f"models:/{MODEL}/{version}", tmp_path / "a", mlflow_store.uri)
    assert (package / "weights.pt").is_file()
    assert "warning" not in capsys.readouterr().err
    # a package directory and the run's logged model (named after its architecture): both load, with a warning
    for i, outside in enumerate((str(tmp_path / "package"), f"runs:/{run.info.run_id}/softmax")):
        fetched = registry.fetch_package(outside, tmp_path / f"b{i}", mlflow_store.uri)
        assert (fetched / "weights.pt").read_bytes() == (package / "weights.pt").read_bytes(), outside
        err = capsys.readouterr().err
        assert f"loading model weights from {outside}, outside the configured registry" in err
        assert "can run arbitrary code" in err and "weights_only=True" in err


# --------------------------------------------------------------------------- a real mlflow server


@pytest.mark.slow
def test_losing_the_mlflow_server_mid_run_fails_cleanly_and_registers_nothing(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from tests.pipelines.test_fault_tolerance import Cli

    port, db = free_port(), tmp_path / "server" / "mlflow.db"
    db.parent.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
         "--artifacts-destination", str(tmp_path / "server" / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{address}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
                time.sleep(1)
        # Bounded client retries so the test sees the failure in minutes, not the default ~4.
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        cli = Cli(["run", "quickstart", "data=digits", "train.batch_size=16", "train.epochs=6",
                   "cluster.num_workers=2", "cluster.max_failures=0", "tracking.system_metrics=false",
                   f"tracking.uri={address}"], tmp_path)
        try:
            cli.wait_for("epoch 1/6 done")
            os.killpg(server.pid, signal.SIGKILL)  # the server dies mid-training
            server.wait(timeout=30)
            started = time.monotonic()
            rc = cli.finish(timeout=500)
            failed_in = time.monotonic() - started
        finally:
            cli.kill()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert rc == 1, cli.output[-3000:]
    assert address in cli.output and "the quickstart run failed" in cli.output
    print(f"failed cleanly {failed_in:.0f} s after the server was killed:",
          *[ln.strip() for ln in cli.lines if ln.startswith("visionray:") or "unreachable" in ln], sep="\n  ")
    # What the server stored, read straight from its database: nothing registered half-done.
    client = MlflowClient(f"sqlite:///{db}", f"sqlite:///{db}")
    assert client.search_model_versions(f"name='{MODEL}'") == []
    for v in client.search_model_versions():  # whatever exists must be complete
        assert v.tags.get(names.TEST_ACCURACY_TAG) and names.TEST_ACCURACY in client.get_run(v.run_id).data.metrics
