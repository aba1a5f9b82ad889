"""``visionray serve``: the registry checks (fast), and the champion served from a fresh shell (slow).

    .venv/bin/python -m pytest tests/pipelines/test_serve.py            # both; the slow one trains once

The slow test starts the console script the way a user does before activating the venv: PATH without
``.venv/bin`` (``mlflow models serve`` alone fails there with exit 127, because it execs ``uvicorn`` by
name), then posts raw pixels and compares with the model's own predictions. ``visionray serve`` runs the
contract's ``mlflow models serve -m models:/NAME@champion --env-manager local``, so this one server start
covers both ways a user serves a model (a server start costs ~30 s on two busy cores).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipelines.entry import cli
from pipelines.services import names
from pipelines.services.runtime import free_port

MODEL = "digits-classifier"
STARTUP_S = 60  # a bound: ~30 s measured on two busy shared cores (imports mlflow twice, torch once)


def _usage_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()  # what creating the store printed
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == cli.EXIT_USAGE, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("visionray: "), err
    return lines[0]


# --------------------------------------------------------------------------- fast: bad usage, exit 2


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real SQLite store holding only model 'm', version 1, alias champion (no files behind it)."""
    from tests.conftest import Store, store_context

    with store_context(Store(tmp_path_factory.mktemp("registry"))) as store:
        client = store.client()
        client.create_registered_model("m")
        client.create_model_version("m", source=(store.root / "nowhere").as_uri())
        client.set_registered_model_alias("m", names.CHAMPION, "1")
        yield store


@pytest.mark.parametrize("spec, needles", [
    ("no-such-model", ["'no-such-model'", "registered: m"]),
    ("m@staging", ["'m'", "'staging'", "champion -> 1"]),
    ("m/7", ["'m'", "version 7", "versions: 1"]),
])
def test_serve_unknown_model_alias_or_version_exits_2(capsys, registry, spec, needles):
    line = _usage_line(capsys, ["serve", spec, "--port", str(free_port())])
    for needle in needles:
        assert needle in line, line


def test_serve_on_a_store_with_nothing_registered_exits_2(capsys, mlflow_store):
    mlflow_store.client().search_registered_models()  # creates the empty store
    line = _usage_line(capsys, ["serve", "no-such-model"])
    assert "'no-such-model'" in line and "nothing is registered" in line


def test_serve_port_in_use_exits_2(capsys, registry):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _usage_line(capsys, ["serve", "m", "--port", str(port)])
    assert f"127.0.0.1:{port}" in line and "--port" in line


# --------------------------------------------------------------------------- slow: a real server


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _post_json(url: str, body: dict, timeout: float = 30.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_serve_champion_from_a_shell_without_the_venv(quickstart_run, tmp_path):
    import mlflow

    from pipelines.stages.evaluate import test_split
    from tests.conftest import store_context

    store = quickstart_run.store
    images, labels = test_split(quickstart_run.outputs["prepared"])
    raw = images[..., 0]  # N×H×W uint8, as users hold grey images
    with store_context(store):
        expected = mlflow.pyfunc.load_model(f"models:/{MODEL}@{names.CHAMPION}").predict(raw)["class"]

    script = Path(sys.executable).parent / "visionray"
    assert script.is_file(), "the visionray console script is not installed beside this interpreter"
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)),
           "MLFLOW_TRACKING_URI": store.uri}
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(script), "serve", f"{MODEL}@{names.CHAMPION}", "--port", str(port)],
                                cwd=store.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while not _answers(f"{base}/ping"):
            assert proc.poll() is None, f"visionray serve exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no answer within {STARTUP_S} s:\n{log.read_text()}"
            time.sleep(0.5)
        answer = _post_json(f"{base}/invocations", {"inputs": raw.tolist()})["predictions"]
        classes, probs = np.asarray(answer["class"]), np.asarray(answer["probabilities"], dtype=np.float64)
        assert classes.shape == (len(raw),) and probs.shape == (len(raw), 10)
        np.testing.assert_array_equal(classes, expected)
        np.testing.assert_array_equal(classes, probs.argmax(axis=1))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        assert (classes == labels).mean() > 0.8, f"served test accuracy {(classes == labels).mean():.3f}"
        # N×H×W×1 as the README promises; 0..1-normalised floats are a 400 saying so, not a black image's 200
        four_d = _post_json(f"{base}/invocations", {"inputs": raw[:8, ..., None].tolist()})["predictions"]
        np.testing.assert_array_equal(np.asarray(four_d["class"]), expected[:8])
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post_json(f"{base}/invocations", {"inputs": (raw[:2] / 255.0).tolist()})
        assert refused.value.code == 400 and "0..1-normalised" in refused.value.read().decode()
        printed = log.read_text()
        assert f"{base}/invocations" in printed and "curl -s" in printed

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0, log.read_text()
        assert "server stopped" in log.read_text()
        deadline = time.monotonic() + 10
        while _answers(f"{base}/ping"):  # the server went with it, not only visionray
            assert time.monotonic() < deadline, "the model server still answers after Ctrl-C"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the server dies with it (parent-death signal)
            proc.wait(timeout=10)
