"""Fixtures for the slow end-to-end tests: a real local Ray, a real MLflow SQLite store, the real config.

    .venv/bin/python -m pytest -m slow tests/pipelines        # ~4 min on 2 cores
    .venv/bin/python -m pytest -m "not slow"                   # the fast unit tests only

Nothing is mocked. One local Ray serves the whole session (``pipelines.services.runtime.ray_session`` reuses an
initialised Ray and leaves it up); each store is a temporary directory the test runs in, so the
relative defaults (``data/``, ``checkpoints/``, ``mlruns/``) land there too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

# A developer's warm local Ray (`visionray up`) is never the tests' runtime: their own record directory.
os.environ["VISIONRAY_STATE_DIR"] = tempfile.mkdtemp(prefix="vr-state-")

#: The real quickstart recipe, shrunk to what a 2-core CI machine trains in well under a minute:
#: digits is scikit-learn's bundled 8x8 set (offline, ~1.8k images), two workers like the default.
SHRINK = ("data=digits", "train.epochs=2", "train.batch_size=64", "cluster.num_workers=2",
          "cluster.max_failures=0", "tracking.system_metrics=false")


def shrunk_config(pipeline: str = "quickstart", *extra: str):
    """The REAL ``conf/pipeline/<pipeline>.yaml``, shrunk; ``extra`` overrides win over the shrink."""
    from pipelines.config import load_config

    return load_config(pipeline, [*SHRINK, *extra])


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A local Ray for the session (token auth left on, as Ray sets it for local clusters)."""
    import logging

    import ray

    # A short path: Ray's Unix sockets live under it and must stay below ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="vr-", dir="/tmp")
    from pipelines.services.runtime import init_local

    init_local(2, _temp_dir=temp_dir, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
        os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def session_ray_address(ray_local) -> str:
    """The session Ray's GCS address. A CLI subprocess given it as ``RAY_ADDRESS`` joins this Ray instead of
    starting one of its own (15-30 s on 2 busy cores); it authenticates as any local driver does: it inherits
    ``RAY_AUTH_MODE=token`` (set by ``ray.init``) and reads Ray's token file."""
    import ray

    assert os.environ.get("RAY_AUTH_MODE", "token") == "token"
    return ray.get_runtime_context().gcs_address


def _reset_mlflow(uri: str | None) -> None:
    import mlflow
    from mlflow.tracking import fluent

    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # A pipeline run sets MLflow's active experiment (mlflow.set_experiment), which MLflow 3 also writes
    # to os.environ["MLFLOW_EXPERIMENT_ID"]; nothing unsets either. In the next store that experiment id
    # does not exist, and a bare mlflow.start_run() fails there.
    fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


@dataclass(frozen=True)
class Store:
    root: Path  # the working directory of the runs: data/, checkpoints/, mlruns/

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlruns' / 'mlflow.db'}"

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


@contextlib.contextmanager
def store_context(store: Store) -> Iterator[Store]:
    """Run inside ``store``: its directory is the cwd, ``MLFLOW_TRACKING_URI`` points at its database."""
    store.root.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(store.root)
        mp.setenv("MLFLOW_TRACKING_URI", store.uri)
        # mlflow.set_registry_uri also writes MLFLOW_REGISTRY_URI into os.environ and never removes it;
        # patched here so that it is undone and a later subprocess cannot inherit another test's store.
        mp.setenv("MLFLOW_REGISTRY_URI", store.uri)
        _reset_mlflow(store.uri)
        try:
            yield store
        finally:
            _reset_mlflow(None)


@pytest.fixture
def mlflow_store(tmp_path: Path) -> Iterator[Store]:
    with store_context(Store(tmp_path)) as store:
        yield store


@dataclass(frozen=True)
class QuickstartRun:
    store: Store
    run_id: str  # the parent run
    cfg: object
    outputs: dict
    pristine: Path  # the store's directory as the run left it, before any test added to it

    def copy_store(self, dest: Path) -> Store:
        """A store of its own holding just this run (v1 the champion), for a test that moves the champion.

        The copied database still names the original's artifact paths for this run (read only from
        then on); what the copy's own runs log lands under ``dest``.
        """
        shutil.copytree(self.pristine, dest)
        return Store(dest)


@pytest.fixture(scope="session")
def quickstart_run(ray_local, tmp_path_factory) -> QuickstartRun:
    """One shrunk quickstart run for the session, read by test_e2e, test_serve, test_compress, test_toolkit
    (as a transfer source) and, through ``copy_store``, test_retrain: one training instead of five.

    Tests that add runs (a second version, a failure) do so in this store through ``store_context``
    and must keep version 1 the champion; a test that may move the champion works on ``copy_store``.
    """
    from pipelines.dispatch import run_pipeline

    store = Store(tmp_path_factory.mktemp("quickstart"))
    cfg = shrunk_config("quickstart")
    with store_context(store):
        result = run_pipeline(cfg, command="test")
    pristine = tmp_path_factory.mktemp("quickstart-pristine") / "store"
    shutil.copytree(store.root, pristine)
    return QuickstartRun(store, result.run_id, cfg, result.outputs, pristine)
