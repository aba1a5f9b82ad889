"""A quiet terminal: the known-harmless records are dropped by their exact text, real ones still show,
``-v`` keeps everything; a whole quickstart prints its stage and epoch lines and at most 5 others.

    .venv/bin/python -m pytest tests/pipelines/test_quiet.py             # the filters (no Ray)
    .venv/bin/python -m pytest -m slow tests/pipelines/test_quiet.py     # + a digits quickstart, as a user runs it
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

from pipelines.entry import cli
from pipelines.services import quiet, runtime


@pytest.fixture
def quiet_env(monkeypatch):
    """No -v, and the environment and the loggers' filters restored afterwards."""
    for var in (quiet.VERBOSE_ENV, "MLFLOW_LOGGING_LEVEL"):  # set first, so that the teardown restores them
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    saved = {name: list(logging.getLogger(name).filters) for name in quiet.KNOWN_LOG_RECORDS}
    for name in saved:  # as in a fresh process: an in-process CLI test earlier in the session installed them
        logger = logging.getLogger(name)
        logger.filters[:] = [f for f in logger.filters if not isinstance(f, quiet.DropKnown)]
    yield monkeypatch
    for name, filters in saved.items():
        logging.getLogger(name).filters[:] = filters


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _emit(name: str, *records: tuple[int, str]) -> list[str]:
    logger = logging.getLogger(name)
    handler, level, propagate = _Collect(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        for lvl, message in records:
            logger.log(lvl, message)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    return handler.messages


TOKEN = "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out."
BARS = "Progress bars disabled. To enable, set `ray.data.DataContext.get_current().enable_progress_bars = True`."


def test_known_records_are_dropped_and_real_ones_still_show(quiet_env):
    quiet.filter_known_records()
    quiet.filter_known_records()  # twice (driver and worker set-up in one process): one filter
    auth = "ray._private.authentication.authentication_token_setup"
    assert sum(isinstance(f, quiet.DropKnown) for f in logging.getLogger(auth).filters) == 1
    real = "Token authentication failed: the token file /x is empty"
    assert _emit(auth, (logging.WARNING, TOKEN), (logging.ERROR, real)) == [real]
    progress = "ray.data._internal.progress"
    other = "Progress bars for operators disabled. To enable, ..."
    assert _emit(progress, (logging.WARNING, BARS), (logging.WARNING, other)) == [other]
    # the same text from any other logger is not touched
    assert _emit("visionray.test", (logging.WARNING, TOKEN)) == [TOKEN]


def test_verbose_installs_no_filter_and_keeps_rays_log_levels(quiet_env):
    quiet_env.setenv(quiet.VERBOSE_ENV, "1")
    quiet.filter_known_records()
    assert _emit("ray.data._internal.progress", (logging.WARNING, BARS)) == [BARS]
    for key in {**runtime.RAY_ENV, **runtime.LOCAL_RAY_ENV}:
        quiet_env.delenv(key, raising=False)
    env = runtime.ray_env(local=True)
    assert not runtime.QUIET_KEYS & env.keys()
    assert env[quiet.VERBOSE_ENV] == "1"  # shipped to a cluster's workers and a submitted job's driver
    assert env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == runtime.RAY_ENV["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]
    assert quiet.train_log_level() == "INFO"
    quiet_env.delenv(quiet.VERBOSE_ENV)
    assert quiet.train_log_level() == "WARNING"
    assert runtime.QUIET_KEYS <= runtime.ray_env().keys()


def test_the_driver_quiets_mlflow_unless_verbose_or_told_otherwise(quiet_env):
    quiet.quiet_driver()
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    quiet_env.setenv("MLFLOW_LOGGING_LEVEL", "DEBUG")  # the user's own choice wins
    quiet.quiet_driver()
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "DEBUG"
    quiet_env.delenv("MLFLOW_LOGGING_LEVEL")
    quiet.quiet_driver(verbose_run=True)
    assert os.environ[quiet.VERBOSE_ENV] == "1" and "MLFLOW_LOGGING_LEVEL" not in os.environ


def test_rays_skip_pattern_drops_only_the_known_actor_lines():
    skip = re.compile(runtime.RAY_ENV["RAY_DEDUP_LOGS_SKIP_REGEX"])
    known = [
        "/x/ray/data/_internal/execution/interfaces/execution_options.py:436: RayDeprecationWarning: "
        "`ExecutionOptions.exclude_resources` is deprecated and will be removed after January 2027.",
        "  self.exclude_resources = exclude_resources",
        BARS,
        "[2026-12-07 00:49:37,909 E 11049 11049] (gcs_server) gcs_actor_scheduler.cc:538: Failed to kill actor "
        "NIL_ID, return status: Invalid: KillActor RPC failed for actor NIL_ID: RpcError: RPC error: Socket "
        "closed rpc_code: 14",
    ]
    real = [
        "[2026-12-07 00:49:37,909 E 11049 11049] (gcs_server) gcs_actor_scheduler.cc:538: Failed to kill actor "
        "16d8444e, return status: Invalid: KillActor RPC failed for actor 16d8444e: RpcError: RPC error: "
        "Deadline Exceeded rpc_code: 4",
        "/x/ray/data/dataset.py:12: RayDeprecationWarning: `Dataset.foo` is deprecated",
        "  self.resource_limits = resource_limits",
        "ValueError: Progress bars disabled. To enable, this is someone else's error",
        "epoch 1/2 done in 13s  train loss 2.6764",
    ]
    assert [line for line in known if skip.search(line)] == known
    assert [line for line in real if skip.search(line)] == []


def test_v_is_taken_anywhere_after_run():
    parser = cli.build_parser()
    for argv in (["run", "-v", "quickstart", "train.epochs=1"], ["run", "quickstart", "-v", "train.epochs=1"],
                 ["run", "quickstart", "train.epochs=1", "--verbose"]):
        args = parser.parse_args(cli._verbose_first(argv))
        assert args.verbose and args.pipeline == "quickstart" and args.overrides == ["train.epochs=1"]
    assert not parser.parse_args(["run", "quickstart"]).verbose


def test_served_models_define_without_mlflows_type_hint_warning():
    import importlib
    import warnings

    import mlflow.pyfunc  # noqa: F401 - its own import-time warnings are not ours

    from pipelines.services import rl_serving, serving

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.reload(serving)  # class definition is when MLflow inspects predict's hints
        importlib.reload(rl_serving)
    assert [str(w.message) for w in caught] == []


# --------------------------------------------------------------------------- a whole run, as a user runs it

STAGE = re.compile(r"\[visionray \d\d:\d\d:\d\d\] ")
EPOCH = re.compile(r"\bepoch \d+/\d+ ")


def other_lines(output: str) -> list[str]:
    """The lines of a run's terminal output that are neither a stage line nor a worker's epoch line."""
    return [line for line in output.splitlines() if line.strip() and not STAGE.search(line)
            and not EPOCH.search(line)]


@pytest.mark.slow
def test_a_quickstart_prints_its_stages_and_epochs_and_at_most_five_other_lines(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI", quiet.VERBOSE_ENV,
                        *runtime.RAY_ENV, *runtime.LOCAL_RAY_ENV)}
    done = subprocess.run([sys.executable, "-m", "pipelines", "run", "quickstart", "data=digits",
                           "train.epochs=2"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, out[-3000:]
    assert "epoch 2/2 done" in out and "stage register" in out
    others = other_lines(out)
    assert len(others) <= 5, "\n".join(others)
    assert out.endswith("\n")
