"""Credentials stay out of everything visionray writes, and out of what a Ray job uploads or shows.

    .venv/bin/python -m pytest -q tests/pipelines/test_secrets.py
"""

from __future__ import annotations

import zipfile

import pytest

from pipelines.config.secrets import mask, mask_key
from pipelines.services import names

PASSWORD = "hunter2-S3cret"


@pytest.mark.parametrize("text, expected", [
    (f"http://admin:{PASSWORD}@mlflow:5000", "http://admin:***@mlflow:5000"),
    (f"tracking.uri=postgresql://mlflow:{PASSWORD}@db:5432/mlflow x", "tracking.uri=postgresql://mlflow:***@db:5432/mlflow x"),
    (f"ray://ghp_{PASSWORD}0123456789@head:10001", "ray://***@head:10001"),
    (f"s3://bucket/pkg?X-Amz-Signature={PASSWORD}&X-Amz-Date=1", "s3://bucket/pkg?X-Amz-Signature=***&X-Amz-Date=1"),
    (f"https://h/x?token={PASSWORD}", "https://h/x?token=***"),
    ("http://127.0.0.1:8265 and ray://head:10001", "http://127.0.0.1:8265 and ray://head:10001"),  # nothing secret
    ("postgresql://mlflow@postgres:5432/mlflow", "postgresql://mlflow@postgres:5432/mlflow"),  # a user name only
    ("data.path=/data/photos train.lr=0.1", "data.path=/data/photos train.lr=0.1"),
])
def test_credentials_in_any_uri_are_masked(text, expected):
    assert mask(text) == expected
    assert PASSWORD not in mask(text)


def test_a_key_named_like_a_secret_is_masked_whole():
    assert mask_key("tracking.api_key", "abc") == "***"
    assert mask_key("tracking.uri", f"http://u:{PASSWORD}@h") == "http://u:***@h"


def test_a_failed_run_writes_no_credential_anywhere(mlflow_store, capsys):
    """params, config.yaml, the command tag, the description, the error tag, error.txt, the terminal."""
    from pipelines.config import load_config
    from pipelines.services import tracking
    from pipelines.services.progress import say

    secret_uri = f"https://bob:{PASSWORD}@models.example/fashion/pkg"
    override = f"retrain.init_from={secret_uri}"
    cfg = load_config("retrain", ["data=digits", override, "tracking.system_metrics=false"])
    with pytest.raises(RuntimeError):
        with tracking.pipeline_run(cfg, f"visionray run retrain {override}") as parent:
            say(f"retrain: warm start from {secret_uri}")
            tracking.set_tags({names.TRANSFER_SOURCE_TAG: secret_uri})
            raise RuntimeError(f"cannot download {secret_uri}")
    client = mlflow_store.client()
    run = client.get_run(parent.run_id)
    assert run.info.status == "FAILED"
    assert run.data.params["retrain.init_from"] == "https://bob:***@models.example/fashion/pkg"
    written = [*run.data.params.values(), *run.data.tags.values(),
               *(open(client.download_artifacts(parent.run_id, path)).read()
                 for path in (names.CONFIG_ARTIFACT, "error.txt"))]
    assert not [w for w in written if PASSWORD in w]
    assert "bob:***@models.example" in run.data.tags[names.COMMAND]
    assert "bob:***@models.example" in run.data.tags[names.ERROR_TAG]
    err = capsys.readouterr().err
    assert "bob:***@models.example" in err and PASSWORD not in err


def test_a_resumed_run_gets_its_masked_credentials_back_from_the_command_line():
    from pipelines.dispatch import unmasked

    stored = {"tracking": {"uri": "http://u:***@mlflow:5000"}, "seed": 1, "data": {"path": None}}
    current = {"tracking": {"uri": f"http://u:{PASSWORD}@mlflow:5000"}, "seed": 2, "data": {"path": "x"}}
    assert unmasked(stored, current) == {"tracking": {"uri": current["tracking"]["uri"]}, "seed": 1,
                                         "data": {"path": None}}
    other = {"tracking": {"uri": f"http://v:{PASSWORD}@elsewhere:5000"}}  # not the same URI: stays masked
    assert unmasked(stored, other)["tracking"]["uri"] == "http://u:***@mlflow:5000"


def test_the_job_upload_excludes_env_files(tmp_path):
    """Ray's own packaging, with visionray's excludes and without .gitignore: no env file is uploaded."""
    from ray._private.runtime_env.packaging import create_package

    from pipelines.entry.jobs import EXCLUDES

    root = tmp_path / "project"
    (root / "infra" / "mlflow").mkdir(parents=True)
    (root / "infra" / "mlflow" / ".env").write_text(f"POSTGRES_PASSWORD={PASSWORD}\n")
    (root / "infra" / "mlflow" / ".env.example").write_text("POSTGRES_PASSWORD=change-me\n")
    (root / ".env").write_text(f"TOKEN={PASSWORD}\n")
    (root / "prod.env").write_text(f"TOKEN={PASSWORD}\n")
    (root / ".env.local").write_text(f"TOKEN={PASSWORD}\n")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "cli.py").write_text("print('hi')\n")
    create_package(str(root), tmp_path / "pkg.zip", include_gitignore=False, excludes=EXCLUDES)
    uploaded = set(zipfile.ZipFile(tmp_path / "pkg.zip").namelist())
    assert "pipelines/cli.py" in uploaded and "infra/mlflow/.env.example" in uploaded
    assert not {".env", "prod.env", ".env.local", "infra/mlflow/.env"} & uploaded, uploaded


def test_secrets_are_not_sent_with_a_job_unless_asked(monkeypatch, capsys):
    from pipelines.config import ConfigError
    from pipelines.entry import jobs

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    monkeypatch.delenv(jobs.FORWARD_SECRETS_ENV, raising=False)
    env = jobs.runtime_env("http://mlflow:5000")["env_vars"]
    assert env["MLFLOW_TRACKING_USERNAME"] == "bob" and "MLFLOW_TRACKING_PASSWORD" not in env
    assert "MLFLOW_TRACKING_PASSWORD not sent with the job" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="the tracking URI holds a credential"):
        jobs.check_no_credentials(f"http://bob:{PASSWORD}@mlflow:5000", [])
    with pytest.raises(ConfigError, match=r"retrain.init_from=https://b:\*\*\*@h"):
        jobs.check_no_credentials("http://mlflow:5000", [f"retrain.init_from=https://b:{PASSWORD}@h/x"])
    monkeypatch.setenv(jobs.FORWARD_SECRETS_ENV, "1")
    assert jobs.runtime_env("http://mlflow:5000")["env_vars"]["MLFLOW_TRACKING_PASSWORD"] == PASSWORD
    jobs.check_no_credentials(f"http://bob:{PASSWORD}@mlflow:5000", [])


def test_show_prints_the_config_with_its_credentials_masked(capsys):
    from pipelines.entry.cli import main

    assert main(["show", "quickstart", f"tracking.uri=http://bob:{PASSWORD}@mlflow:5000"]) == 0
    out = capsys.readouterr().out
    assert "uri: http://bob:***@mlflow:5000" in out and PASSWORD not in out
