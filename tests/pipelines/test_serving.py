"""The registered champion behind a REAL ``mlflow models serve``: raw pixels in, classes out.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_serving.py

Reuses the session's shrunk quickstart run (its version 1 is the champion), starts the server the
way the contract tells users to, and talks JSON to it over HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipelines.services import names
from pipelines.services.runtime import free_port

pytestmark = pytest.mark.slow

MODEL = "digits-classifier"
STARTUP_S = 120


def _get(url: str, timeout: float = 5.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status


def _post_json(url: str, body: dict, timeout: float = 60.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if _get(url) == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"mlflow models serve did not answer {url} within {STARTUP_S} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """The server runs in its own process group (bash → uvicorn → workers): end all of it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def test_champion_serves_raw_images_over_http(quickstart_run, tmp_path):
    from components.data.sources import digits

    store = quickstart_run.store
    assert str(store.client().get_model_version_by_alias(MODEL, names.CHAMPION).version) == "1"
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # `mlflow models serve` runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "MLFLOW_REGISTRY_URI": store.uri,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@{names.CHAMPION}",
             "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", "1"],
            cwd=store.root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(proc, f"{base}/ping", log)
        raw = digits().splits["all"]
        images, labels = raw.images[:4, ..., 0], raw.labels[:4]  # N×8×8 uint8, as users have them
        answer = _post_json(f"{base}/invocations", {"inputs": images.tolist()})
        predictions = answer["predictions"]
        classes = np.asarray(predictions["class"])
        probs = np.asarray(predictions["probabilities"], dtype=np.float64)
        assert classes.shape == (4,)
        assert set(classes.tolist()) <= set(range(10))
        assert probs.shape == (4, 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        np.testing.assert_array_equal(classes, probs.argmax(axis=1))
        assert (classes == labels).sum() >= 2, f"predicted {classes.tolist()} for digits {labels.tolist()}"
    finally:
        _stop(proc)
