"""`visionray` in-process: list, show and the bad-usage exits (2, one line, nothing started). No Ray runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.config import available, describe_pipelines, load_config
from pipelines.entry import cli

REPO = Path(__file__).resolve().parents[2]


_RAY_WAS_UP = False
#: every Ray session a test's CLI call opened (runtime.ray_session, which starts, joins or, in the full suite
#: where the session's Ray is already up, reuses a Ray) and every ray.init: seen here whether or not a Ray
#: was up before, unlike ray.is_initialized(), which is true either way in the full suite
_RAY_INITS: list[str] = []


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every CLI call runs in an empty directory, with no cluster or store named by the environment."""
    import ray

    global _RAY_WAS_UP
    _RAY_WAS_UP = ray.is_initialized()
    from pipelines.services import runtime

    _RAY_INITS.clear()
    for owner, name in ((ray, "init"), (runtime, "ray_session")):
        monkeypatch.setattr(owner, name, _recorded(getattr(owner, name), name))
    monkeypatch.chdir(tmp_path)
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "VISIONRAY_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _recorded(fn, name: str):
    def call(*args, **kwargs):
        _RAY_INITS.append(name)
        return fn(*args, **kwargs)
    return call


def _main(argv: list[str]) -> int:
    """cli.main, with argparse's SystemExit turned into its exit code."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1


def _usage_error(capsys, argv: list[str]) -> str:
    """Assert the contract for bad usage: exit 2, nothing on stdout, one line on stderr; return it."""
    code = _main(argv)
    out, err = capsys.readouterr()
    assert code == cli.EXIT_USAGE == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("visionray: ")
    return lines[0]


def _assert_nothing_started(workdir: Path) -> None:
    import ray

    assert not (workdir / "mlruns").exists(), "a bad-usage exit must not create the MLflow store"
    assert not (workdir / "checkpoints").exists()
    assert _RAY_INITS == [], "a bad-usage exit must not start or join Ray"
    if not _RAY_WAS_UP:  # a slow test's session-wide Ray may already be up when the suites run together
        assert not ray.is_initialized(), "a bad-usage exit must not start Ray"


# --------------------------------------------------------------------------- list, show, help


def test_list_prints_every_pipeline_with_its_description(capsys):
    assert _main(["list"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == len(available("pipeline"))
    for (name, description), line in zip(describe_pipelines(), lines):
        assert line.split()[0] == name
        assert line.rstrip().endswith(description)
    assert err == ""


def test_show_prints_the_used_sections_with_the_values_used(capsys):
    assert _main(["show", "quickstart", "train.epochs=3"]) == 0
    out, err = capsys.readouterr()
    shown = yaml.safe_load(out)
    assert shown["train"]["epochs"] == 3
    assert shown["pipeline"] == "quickstart"
    assert set(shown) - {"pipeline", "description", "kind", "stages", "seed", "resume"} == {
        "data", "model", "train", "cluster", "tracking", "registry"}
    assert shown["registry"]["name"] == "fashion-mnist-classifier"  # not null: the name a run registers
    assert (shown["data"]["image_size"], shown["data"]["channels"]) == (28, 1)  # Fashion-MNIST's, not 32x32x3
    assert "depth" not in shown["model"]  # a convnet has no depth
    full = load_config("quickstart", ["train.epochs=3"]).to_dict()
    assert shown["cluster"] == full["cluster"] and shown["data"]["augment"] == full["data"]["augment"]
    assert len(out.splitlines()) < 100  # it was 225 lines with every section of every pipeline
    assert err == ""


def test_show_with_group_selection(capsys):
    assert _main(["show", "train", "model=resnet56", "data=digits"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["name"] == "resnet" and shown["model"]["depth"] == 56
    assert shown["data"]["name"] == "digits"


def test_show_starts_nothing(capsys, _isolated):
    assert _main(["show", "quickstart"]) == 0
    _assert_nothing_started(_isolated)


def test_help_exits_0(capsys):
    assert _main(["--help"]) == 0
    assert "run" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"]])
def test_help_names_serve(capsys, argv):
    assert _main(argv) == 0
    assert "visionray serve" in capsys.readouterr().out


# --------------------------------------------------------------------------- bad usage: exit 2, one line


@pytest.mark.parametrize("command", ["show", "run"])
@pytest.mark.parametrize("overrides, needles", [
    (["train.epochz=3"], ["train.epochz", "epochs"]),
    (["foo=1"], ["'foo'"]),
    (["train.epochs=abc"], ["train.epochs=abc"]),
    (["train.optimizer=lbfgs"], ["train.optimizer=lbfgs", "adamw"]),
    (["cluster.use_gpu=maybe"], ["cluster.use_gpu=maybe"]),
    (["train.epochs=0"], ["train.epochs"]),
    (["model=nope"], ["model=nope", "resnet20"]),
    (["train.epochs"], ["'train.epochs'", "key=value"]),
    (["pipeline=other"], ["pipeline=other"]),
])
def test_bad_config_exits_2(capsys, _isolated, command, overrides, needles):
    line = _usage_error(capsys, [command, "quickstart", *overrides])
    for needle in needles:
        assert needle in line
    _assert_nothing_started(_isolated)


@pytest.mark.parametrize("command", ["show", "run"])
def test_unknown_pipeline_exits_2(capsys, _isolated, command):
    line = _usage_error(capsys, [command, "nope"])
    assert "'nope'" in line and "quickstart" in line
    _assert_nothing_started(_isolated)


@pytest.mark.parametrize("overrides, needles", [
    (["data=image_folder"], ["data=image_folder", "data.path"]),
    (["data=image_folder", "data.path=/nope"], ["data.path", "/nope"]),
    (["data=digits", "stages=[train]"], ["stages=", "prefix"]),
    (["data=digits", "stages=[ingest,train]"], ["stages=", "prefix"]),
    (["data=digits", "stages=[]"], ["stages=", "prefix"]),
    (["data=digits", "train.precision=fp16"], ["train.precision=fp16", "use_gpu"]),
])
def test_run_preflight_errors_exit_2_before_anything_starts(capsys, _isolated, overrides, needles):
    line = _usage_error(capsys, ["run", "quickstart", *overrides])
    for needle in needles:
        assert needle in line
    _assert_nothing_started(_isolated)


def test_run_contract_spellings_exit_2(capsys, _isolated):
    # the spellings from the brief, without data=digits: quickstart's stage/precision checks come first
    assert "prefix" in _usage_error(capsys, ["run", "quickstart", "stages=[train]"])
    _assert_nothing_started(_isolated)


def test_fp16_is_fine_on_gpu_config(capsys):
    # `show` has no preflight; and preflight accepts fp16 once use_gpu=true
    from pipelines.dispatch import preflight

    preflight(load_config("quickstart", ["data=digits", "train.precision=fp16", "cluster.use_gpu=true"]))


@pytest.mark.parametrize("argv", [["frobnicate"], ["run"], ["show"], ["list", "extra"]])
def test_argparse_errors_exit_2_with_one_line(capsys, _isolated, argv):
    line = _usage_error(capsys, argv)
    assert "--help" in line
    _assert_nothing_started(_isolated)


def test_ui_rejects_other_overrides(capsys, _isolated):
    line = _usage_error(capsys, ["ui", "train.epochs=3"])
    assert "train.epochs=3" in line
    _assert_nothing_started(_isolated)


@pytest.mark.parametrize("argv, needles", [
    (["serve", "no-such-model"], ["'no-such-model'", "mlflow.db"]),  # no store here: nothing registered
    (["serve", "no-such-model@"], ["NAME@alias"]),
    (["serve", "no-such-model/latest"], ["NAME/VERSION"]),
    (["serve", "m", "train.epochs=3"], ["train.epochs=3"]),
])
def test_serve_bad_usage_exits_2_before_anything_starts(capsys, _isolated, argv, needles):
    line = _usage_error(capsys, argv)
    for needle in needles:
        assert needle in line
    _assert_nothing_started(_isolated)


# --------------------------------------------------------------------------- entry points


def _visionray_script() -> str | None:
    beside = Path(sys.executable).parent / "visionray"
    return str(beside) if beside.is_file() else shutil.which("visionray")


def test_python_m_pipelines_list(tmp_path):
    # from a directory that is not the repository: conf/ is found beside the code
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    proc = subprocess.run([sys.executable, "-m", "pipelines", "list"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in available("pipeline"):
        assert name in proc.stdout
    assert not (tmp_path / "mlruns").exists()


def test_console_script_help(tmp_path):
    script = _visionray_script()
    if script is None:
        pytest.skip("the visionray console script is not installed")
    proc = subprocess.run([script, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "list", "show"):
        assert command in proc.stdout


def test_console_script_bad_usage_exit_code(tmp_path):
    script = _visionray_script()
    if script is None:
        pytest.skip("the visionray console script is not installed")
    proc = subprocess.run([script, "show", "quickstart", "train.epochz=1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "train.epochz" in proc.stderr
