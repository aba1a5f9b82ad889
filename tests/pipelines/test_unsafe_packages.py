"""A crafted package given to the CLI (``transfer.source=``, ``retrain.init_from=``) is refused with exit 2
before anything starts, and the file its payload would create never appears.

    .venv/bin/python -m pytest -q tests/pipelines/test_unsafe_packages.py
"""

from __future__ import annotations

import pytest

from tests import malicious
from tests.pipelines.test_cli import _assert_nothing_started, _usage_error


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty working directory, no cluster or store named by the environment (as test_cli's calls)."""
    import ray

    import tests.pipelines.test_cli as test_cli

    test_cli._RAY_WAS_UP = ray.is_initialized()
    monkeypatch.chdir(tmp_path)
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI", "VISIONRAY_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def archive() -> bytes:
    return malicious.int8_archive()


def _package(fmt: str, directory, marker, archive: bytes):
    if fmt == "plain":
        return malicious.plain_package(directory, marker)
    if fmt == "ensemble":
        return malicious.ensemble_package(directory, marker)
    if fmt == "onnx":  # its weights read from a file outside the package
        marker.with_name("secret.bin").write_bytes(b"\0" * 64)
        return malicious.onnx_package(directory, marker.with_name("secret.bin"))
    return malicious.int8_package(directory, marker, fmt.split("-", 1)[1], archive=archive)


@pytest.mark.parametrize("pipeline, key", [("transfer", "transfer.source"), ("retrain", "retrain.init_from")])
@pytest.mark.parametrize("fmt", ["plain", "ensemble", "int8-weight", "int8-sample_inputs", "int8-expression", "onnx"])
def test_a_malicious_package_is_refused_with_exit_2_and_runs_nothing(capsys, isolated, archive, pipeline, key, fmt):
    marker = isolated / "created-by-the-package"
    package = _package(fmt, isolated / "evil", marker, archive)
    line = _usage_error(capsys, ["run", pipeline, "data=digits", f"{key}={package}"])
    assert f"{key}={package} is refused" in line
    assert ("external file" if fmt == "onnx" else "visionray refuses") in line
    assert not marker.exists()
    _assert_nothing_started(isolated)
