"""`visionray`'s messages: --version, help when bare, the pipelines in `run --help`, did-you-mean, `show`'s
field help, `models`, the missing-store warning of `ui`, exit 1 for connection failures, shell completion.

    .venv/bin/python -m pytest -q tests/pipelines/test_cli_messages.py
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys

import pytest

from pipelines.config import available, describe_pipelines
from pipelines.entry import cli
from tests.pipelines.test_cli import REPO, _assert_nothing_started, _main, _usage_error


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """As in test_cli: every call runs in an empty directory, with no cluster or store named by the environment."""
    import ray

    import tests.pipelines.test_cli as test_cli

    test_cli._RAY_WAS_UP = ray.is_initialized()
    monkeypatch.chdir(tmp_path)
    # RAY_API_SERVER_ADDRESS names the session Ray's dashboard (runtime.init_local): Ray's job client prefers it
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI", "VISIONRAY_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _free_address() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# --------------------------------------------------------------------------- version and help


def test_version(capsys):
    assert _main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"visionray {importlib.metadata.version('visionray')}"


def test_bare_prints_help_on_stdout_and_exits_2(capsys, _isolated):
    assert _main([]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out.startswith("usage: visionray") and "models" in out and "run" in out
    assert err == ""
    _assert_nothing_started(_isolated)


@pytest.mark.parametrize("command", ["run", "show"])
def test_help_lists_every_pipeline_and_examples(capsys, command):
    assert _main([command, "--help"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name, description in describe_pipelines():
        assert any(ln.split()[:1] == [name] and ln.rstrip().endswith(description) for ln in lines), name
    assert "examples:" in out and f"visionray {command} quickstart" in out


@pytest.mark.parametrize("flag", ["--help", "-h", "--fields"])
def test_show_pipeline_help_prints_each_used_key_with_type_default_and_help(capsys, flag):
    assert _main(["show", "quickstart", "train.epochs=3", flag]) == 0
    out = capsys.readouterr().out
    assert "train.epochs=INT" in out and "passes over the training split (default: 6; quickstart: 3)" in out
    assert "train.optimizer=sgd|momentum|nesterov" in out
    assert "registry.name=TEXT|null" in out and "quickstart: fashion-mnist-classifier" in out
    assert "model.depth=INT" in out and "not used by quickstart" in out  # a convnet has no depth
    assert "knn." not in out and "rl." not in out and "tune." not in out  # sections quickstart does not use


def test_show_pipeline_help_of_an_unknown_pipeline_is_a_usage_error(capsys, _isolated):
    assert "did you mean quickstart?" in _usage_error(capsys, ["show", "quikstart", "--help"])


# --------------------------------------------------------------------------- did you mean


@pytest.mark.parametrize("argv, guess", [
    (["run", "quikstart"], "did you mean quickstart?"),
    (["show", "quickstrat"], "did you mean quickstart?"),
    (["run", "quickstart", "train.epoch=3"], "did you mean train.epochs?"),
    (["run", "quickstart", "trian.epochs=3"], "did you mean train.epochs?"),
    (["show", "quickstart", "data.augment.flipp=true"], "did you mean data.augment.flip?"),
    (["show", "quickstart", "model=resnet21"], "did you mean model=resnet20?"),
    (["show", "quickstart", "modle=resnet20"], "did you mean model?"),
    (["show", "quickstart", "train.optimizer=adamm"], "did you mean train.optimizer=adam?"),
    (["schedule", "--cron", "0 3 * * *", "quikstart"], "did you mean quickstart?"),
    (["rn", "quickstart"], "did you mean run?"),
])
def test_did_you_mean(capsys, _isolated, argv, guess):
    line = _usage_error(capsys, argv)
    assert guess in line
    _assert_nothing_started(_isolated)


def test_no_guess_when_nothing_is_close(capsys, _isolated):
    line = _usage_error(capsys, ["show", "quickstart", "model=zzzzzz"])
    assert "did you mean" not in line and "resnet20" in line  # the list instead


# --------------------------------------------------------------------------- exit 1: connection failures


@pytest.mark.parametrize("argv", [["serve", "m", "tracking.uri={addr}"], ["models", "tracking.uri={addr}"]])
def test_an_unreachable_tracking_server_exits_1(capsys, _isolated, argv):
    addr = _free_address()
    assert _main([a.format(addr=addr) for a in argv]) == cli.EXIT_FAILED
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and addr in err and "not reachable" in err
    _assert_nothing_started(_isolated)


def test_jobs_list_without_a_cluster_exits_1(capsys, _isolated):
    addr = _free_address()
    assert _main(["jobs", "list", "--address", addr]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and addr in err and "cannot reach the Ray cluster" in err


def test_exit_codes_by_error_type():
    from pipelines.config import ConfigError
    from pipelines.services.runtime import ClusterUnavailable
    from pipelines.services.tracking import StoreUnreachable, TrackingUnavailable

    assert cli.exit_code_for(StoreUnreachable("x")) == cli.exit_code_for(ClusterUnavailable("x")) == 1
    assert cli.exit_code_for(ConfigError("x")) == cli.exit_code_for(TrackingUnavailable("resume=x")) == 2
    assert cli.exit_code_for(ZeroDivisionError()) is None  # a bug: a traceback, not a sentence


# --------------------------------------------------------------------------- ui and models without a store


def test_ui_without_a_store_says_where_it_looked(capsys, _isolated):
    line = _usage_error(capsys, ["ui"])
    assert str(_isolated / "mlruns" / "mlflow.db") in line and "tracking.uri=" in line
    _assert_nothing_started(_isolated)


def test_models_without_a_store_says_where_it_looked(capsys, _isolated):
    line = _usage_error(capsys, ["models"])
    assert str(_isolated / "mlruns" / "mlflow.db") in line and "MLFLOW_TRACKING_URI" in line
    _assert_nothing_started(_isolated)


def test_models_lists_versions_aliases_and_test_metrics(capsys, tmp_path):
    from pipelines.services import names
    from tests.conftest import Store, store_context

    with store_context(Store(tmp_path / "store")) as store:
        client = store.client()
        client.search_experiments()  # creates the (empty) store
        assert _main(["models"]) == 0
        assert "no registered models" in capsys.readouterr().err
        exp = client.create_experiment("visionray/quickstart")
        run = client.create_run(exp).info.run_id
        client.log_metric(run, names.TEST_ACCURACY, 0.9123)
        client.log_metric(run, names.TEST_LOSS, 0.25)
        client.create_registered_model("fashion-mnist-classifier")
        for tags in ({names.RUN_ID: run}, {names.PRIMARY_METRIC_TAG: names.TEST_ACCURACY,
                                           names.PRIMARY_VALUE_TAG: "0.8"}):
            client.create_model_version("fashion-mnist-classifier", source=(store.root / "m").as_uri(), tags=tags)
        client.set_registered_model_alias("fashion-mnist-classifier", names.CHAMPION, "1")
        client.set_registered_model_alias("fashion-mnist-classifier", names.CHALLENGER, "2")
        client.create_registered_model("fashion-mnist-classifier" + names.LOCK_SUFFIX)  # not a model
        assert _main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("fashion-mnist-classifier") and "2 versions" in out[0]
    v2, v1 = out[1:3]  # newest first
    assert v2.split()[:2] == ["v2", "challenger"] and "test/accuracy 0.8" in v2
    assert v1.split()[:2] == ["v1", "champion"] and "test/accuracy 0.9123" in v1 and "test/loss 0.25" in v1
    assert run[:12] in v1
    assert not any(names.LOCK_SUFFIX in ln for ln in out)


# --------------------------------------------------------------------------- shell completion


def test_completers():
    assert cli._complete_pipeline() == available("pipeline")
    assert "model=resnet20" in cli._complete_override("model=res")
    assert "train.optimizer=" in cli._complete_override("train.opt")
    assert "train.optimizer=adamw" in cli._complete_override("train.optimizer=")
    assert cli._complete_override("cluster.use_gpu=") == ["cluster.use_gpu=true", "cluster.use_gpu=false"]


@pytest.mark.parametrize("line, expected", [
    ("visionray run quick", {"quickstart"}),
    ("visionray show quickstart train.optim", {"train.optimizer="}),
    ("visionray mod", {"models"}),
])
def test_argcomplete_completes_the_console_script(tmp_path, line, expected):
    pytest.importorskip("argcomplete")
    out = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
    proc = subprocess.run([sys.executable, "-m", "pipelines"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert {c.strip() for c in out.read_text().split("\x0b")} == expected
