"""``visionray submit`` and ``visionray jobs``: pipeline runs as Ray jobs on a cluster (Ray Jobs API).

    export MLFLOW_TRACKING_URI=http://mlflow.example:5000      # a server: the cluster must reach it
    export RAY_AUTH_TOKEN=$(ssh head ray get-auth-token)       # or RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token
    visionray submit --address http://head.example:8265 --follow quickstart train.epochs=3
    visionray jobs list --address http://head.example:8265
    visionray jobs logs --follow quickstart-20250101-120000-1a2b

The job's working directory is this project (code and conf/, without .venv, data, mlruns, checkpoints,
.git or any ``.env`` file); its entrypoint is the same CLI, ``python -m pipelines run PIPELINE key=value …``, so a job
runs exactly what ``visionray run`` runs on a laptop. Inside the job ``RAY_ADDRESS`` names the
cluster, and ``runtime.ray_session`` connects to it without shipping the packages again.

Secrets: the Ray dashboard and the Jobs API show every job's entrypoint and ``runtime_env`` (its
env_vars included) to anyone who can reach the dashboard. So ``MLFLOW_TRACKING_PASSWORD`` and
``MLFLOW_TRACKING_TOKEN`` are not sent with a job, and a tracking URI or override holding a password is
refused, unless ``VISIONRAY_FORWARD_SECRETS=1`` says to send them anyway (visible there). Give the
cluster its own credentials instead: environment variables on the head (``infra/ray/kuberay/raycluster.yaml``
reads them from a Kubernetes Secret), which a job's driver inherits.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import time
from pathlib import Path

from pipelines.config import ConfigError
from pipelines.config.secrets import mask
from pipelines.services import names
from pipelines.services.runtime import ClusterUnavailable

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # Ray's default dashboard (Jobs API) port on the head
#: Left out of the job's working directory: environments, data, stores and caches are per machine.
EXCLUDES = ["/.venv/", "/data/", "/mlruns/", "/mlartifacts/", "/checkpoints/", "/.git/", "/.ci/",
            "__pycache__/", "*.pyc", ".pytest_cache/", ".ruff_cache/", "*.egg-info/", "/ray_results/",
            # credentials: infra/mlflow/.env and any other env file (.env.example, secret-free, stays)
            ".env", "*.env", ".env.*", "!.env.example"]
#: Passed to the job when set here: who logs in to MLflow and how (none of them secret).
FORWARDED_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_INSECURE_TLS", "VISIONRAY_DEBUG")
#: Secrets, sent only with VISIONRAY_FORWARD_SECRETS=1: the dashboard shows a job's env_vars.
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
FORWARD_SECRETS_ENV = "VISIONRAY_FORWARD_SECRETS"
EXIT = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}


class JobNotFound(LookupError):
    """No job with that id on the cluster; the message names the id and the address."""


def dashboard_address(given: str | None) -> str:
    """``--address``, else ``$RAY_ADDRESS`` when it is the dashboard's URL, else the local default."""
    address = given or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    if "://" not in address:
        address = "http://" + address
    if not address.startswith(("http://", "https://")):
        where = "--address" if given else "RAY_ADDRESS"
        raise ConfigError(f"{where}={address} is not the Ray dashboard's URL that jobs are submitted to; "
                          f"pass --address http://HEAD:8265.")
    return address.rstrip("/")


def auth_token() -> str | None:
    """Ray's token, looked up as Ray does: ``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def connect(address: str | None):
    """A ``JobSubmissionClient`` that sends the token; user errors name the address."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = dashboard_address(address)
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        client = JobSubmissionClient(url, headers=headers)
        client.list_jobs()  # /api/version is open to anyone: this request proves the token
    except AuthenticationError:
        raise ClusterUnavailable(_token_sentence(url, token)) from None
    except (ConnectionError, OSError) as e:
        raise ClusterUnavailable(f"cannot reach the Ray cluster at {url} ({_reason(e)}); check --address "
                                 f"and that the head's dashboard is up.") from None
    except RuntimeError as e:
        raise ClusterUnavailable(f"the Ray cluster at {url} refused the request ({_reason(e)}).") from None
    return client


def _token_sentence(url: str, token: str | None) -> str:
    if token is None:
        return (f"the Ray cluster at {url} requires an authentication token: set RAY_AUTH_TOKEN (or "
                f"RAY_AUTH_TOKEN_PATH) to the token that `ray get-auth-token` prints on the head.")
    return (f"the Ray cluster at {url} rejected the authentication token; set RAY_AUTH_TOKEN (or "
            f"RAY_AUTH_TOKEN_PATH) to the token that `ray get-auth-token` prints on the head.")


def _reason(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(e).__name__


def tracking_uri_for_cluster(configured: str | None) -> str:
    """The MLflow URI the job logs to: it must be a server, since the cluster cannot read local files."""
    from pipelines.services import tracking

    uri = tracking.resolve_uri(configured)
    if tracking.is_local_uri(uri):
        raise ConfigError(f"the tracking store {uri} is a local file that the Ray cluster cannot reach; set "
                          f"tracking.uri or MLFLOW_TRACKING_URI to an MLflow server (http://HOST:5000).")
    try:
        tracking.check_store(uri, timeout_s=5)
    except tracking.TrackingUnavailable as e:  # the cluster may still reach it (a service inside it)
        print(f"visionray: warning: {mask(str(e))} The job needs to reach it from the cluster.", file=sys.stderr)
    return uri


def entrypoint(pipeline: str, overrides: list[str]) -> str:
    """The job's command: the same CLI as ``visionray run``."""
    return shlex.join(["python", "-m", "pipelines", "run", pipeline, *overrides])


def runtime_env(uri: str) -> dict:
    from pipelines.services import runtime, tracking

    env = {**runtime.ray_env(), "MLFLOW_TRACKING_URI": uri, "VISIONRAY_GIT_SHA": tracking.git_sha(), "PYTHONUNBUFFERED": "1"}
    env.update({k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)})
    secrets_here = [k for k in SECRET_ENV if os.environ.get(k)]
    if forward_secrets():
        env.update({k: os.environ[k] for k in secrets_here})
    elif secrets_here:
        print(f"visionray: {' and '.join(secrets_here)} not sent with the job: the Ray dashboard shows a job's "
              f"environment to anyone who reaches it. The cluster needs its own (an environment variable on the "
              f"head); {FORWARD_SECRETS_ENV}=1 sends them anyway.", file=sys.stderr)
    return {"working_dir": str(ROOT), "excludes": EXCLUDES, "env_vars": env}


def forward_secrets() -> bool:
    return os.environ.get(FORWARD_SECRETS_ENV, "").lower() in ("1", "true", "yes")


def check_no_credentials(uri: str, overrides: list[str]) -> None:
    """A password in the tracking URI or an override would show in the dashboard with the job: refuse it."""
    if forward_secrets():
        return
    for what, text in [("the tracking URI", uri), *((f"the override {mask(o)}", o) for o in overrides)]:
        if mask(text) != text:
            raise ConfigError(f"{what} holds a credential, which the Ray dashboard would show with the job; give "
                              f"the cluster MLFLOW_TRACKING_USERNAME/PASSWORD in its own environment, or set "
                              f"{FORWARD_SECRETS_ENV}=1 to send it anyway.")


def submit(pipeline: str, overrides: list[str], address: str | None, follow: bool) -> int:
    """Validate here (config, tracking URI, cluster, token), then submit; with ``follow``, the job's status."""
    from pipelines.config import load_config
    from pipelines.dispatch import validate_stages

    cfg = load_config(pipeline, overrides)  # a wrong key stops here, before anything is sent
    validate_stages(cfg)
    uri = tracking_uri_for_cluster(cfg.tracking.uri)
    check_no_credentials(uri, overrides)
    client = connect(address)
    job_id = f"{pipeline}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    client.submit_job(entrypoint=entrypoint(pipeline, overrides), submission_id=job_id,
                      runtime_env=runtime_env(uri), metadata={names.PIPELINE_TAG: pipeline})
    print(job_id)
    sys.stdout.flush()
    if not follow:
        print(f"visionray: submitted; `visionray jobs logs --follow {job_id}` streams its output.", file=sys.stderr)
        return 0
    return follow_job(client, job_id)


def follow_job(client, job_id: str) -> int:
    """Stream the job's output until it ends; its status as an exit code (0 succeeded, 1 otherwise)."""
    import asyncio

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        asyncio.run(stream())
        status = _wait_for_end(client, job_id)
    except KeyboardInterrupt:
        print(f"visionray: stopped following; the job keeps running (`visionray jobs stop {job_id}` stops it).",
              file=sys.stderr)
        return 130
    info = client.get_job_info(job_id)
    if status != "SUCCEEDED":
        print(f"visionray: job {job_id} {status.lower()}: {(info.message or '').strip()}", file=sys.stderr)
    return EXIT.get(status, 1)


def _wait_for_end(client, job_id: str, timeout_s: float = 60) -> str:
    # The log stream closes when the driver exits; the status turns terminal a moment later.
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in EXIT or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def jobs(action: str, job_id: str | None, address: str | None, follow: bool = False) -> int:
    """``visionray jobs list|status|logs|stop [JOB_ID]``."""
    if action != "list" and not job_id:
        raise ConfigError(f"visionray jobs {action} needs a JOB_ID (see visionray jobs list).")
    client = connect(address)
    if action == "list":
        rows = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
        for j in rows:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((j.start_time or 0) / 1000))
            print(f"{j.submission_id or j.job_id}  {str(j.status.value):<9}  {started}  {j.entrypoint}")
        return 0
    _require(client, job_id, dashboard_address(address))
    if action == "status":
        info = client.get_job_info(job_id)
        print(f"{job_id}  {info.status.value}  {(info.message or '').strip()}")
        return 0
    if action == "logs":
        if follow:
            return follow_job(client, job_id)
        print(client.get_job_logs(job_id), end="")
        return 0
    stopped = client.stop_job(job_id)
    print(f"{job_id}  {'stopping' if stopped else 'already ' + str(client.get_job_status(job_id).value).lower()}")
    return 0


def _require(client, job_id: str, url: str) -> None:
    try:
        client.get_job_info(job_id)
    except RuntimeError as e:
        if "404" in str(e) or "does not exist" in str(e):
            raise JobNotFound(f"no job {job_id} on the Ray cluster at {url} (see visionray jobs list).") from None
        raise ClusterUnavailable(f"the Ray cluster at {url} refused the request ({_reason(e)}).") from None
