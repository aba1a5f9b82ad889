"""``visionray serve NAME[@alias|/version]``: a registered model over HTTP, as ``mlflow models serve``.

    visionray serve fashion-mnist-classifier                 # @champion, on http://127.0.0.1:5001
    visionray serve fashion-mnist-classifier/7 --port 8080   # one version
    curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d '{"inputs": [...]}'

The registry is checked first (an unknown model, alias or version, or an unreachable store, is a usage
error and nothing starts). Then ``python -m mlflow models serve --env-manager local`` runs with this
interpreter's bin directory first on PATH: MLflow execs ``uvicorn`` by name, which from a shell without
the venv activated would not be found. Ctrl-C (or SIGTERM) stops the server and everything it started.
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
from dataclasses import dataclass
from pathlib import Path

from pipelines.config.secrets import mask
from pipelines.services import names

DEFAULT_PORT = 5001  # beside `visionray ui` on 5000
_STOP_GRACE_S = 15.0


class ServeError(ValueError):
    """A model, alias, version or port the user named that cannot be served; the message says which."""


@dataclass(frozen=True)
class Target:
    name: str
    alias: str | None  # exactly one of alias and version is set
    version: str | None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


def parse_target(spec: str) -> Target:
    """``NAME`` (= ``NAME@champion``), ``NAME@alias`` or ``NAME/version``; a ``models:/`` prefix is fine."""
    spec = spec.removeprefix("models:/").strip()
    if "@" in spec:
        name, _, alias = spec.partition("@")
        if not name or not alias:
            raise ServeError(f"'{spec}' is not NAME@alias (e.g. fashion-mnist-classifier@champion).")
        return Target(name, alias, None)
    if "/" in spec:
        name, _, version = spec.rpartition("/")
        if not name or not version.isdigit():
            raise ServeError(f"'{spec}' is not NAME/VERSION with a version number "
                             f"(e.g. fashion-mnist-classifier/3).")
        return Target(name, None, version)
    if not spec:
        raise ServeError("name a registered model to serve (e.g. fashion-mnist-classifier).")
    return Target(spec, names.CHAMPION, None)


def resolve_version(uri: str, target: Target) -> str:
    """The version ``target`` names in the registry at ``uri``; ServeError if there is none."""
    from pipelines.services import registry

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ServeError(f"no registered model '{target.name}': there is no MLflow store at "
                         f"{uri[len('sqlite:///'):]} (run a pipeline first, or set MLFLOW_TRACKING_URI).")
    try:
        aliases = registry.model_aliases(uri, target.name)
        if aliases is None:
            raise ServeError(f"no registered model '{target.name}' in the MLflow store {uri} "
                             f"({_known_models(uri)}).")
        if target.alias:
            if target.alias not in aliases:
                known = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
                raise ServeError(f"registered model '{target.name}' has no alias '{target.alias}' "
                                 f"(its aliases: {known}; NAME/VERSION serves a version).")
            return str(aliases[target.alias])
        versions = registry.model_versions(uri, target.name)
        if int(target.version) not in versions:
            known = ", ".join(map(str, versions)) or "none"
            raise ServeError(f"registered model '{target.name}' has no version {target.version} "
                             f"(its versions: {known}).")
        return target.version
    except registry.RegistryUnreadable as e:
        raise ServeError(f"cannot read registered model '{target.name}' from the MLflow store {uri} "
                         f"({e}).") from None


def _known_models(uri: str) -> str:
    from pipelines.services import registry

    known = registry.registered_model_names(uri)
    if not known:
        return "nothing is registered there yet; `visionray run quickstart` registers one"
    shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
    return f"registered: {shown}"


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # As uvicorn binds: a port a stopped server left in TIME_WAIT is free, a listening one is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ServeError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another with --port.") \
                from None


def example_request(uri: str, model_uri: str, url: str) -> str:
    """A curl line that posts one all-zero input of the model's signature, or a hint if it has none."""
    generic = f"curl -s {url}/invocations -H 'Content-Type: application/json' -d '{{\"inputs\": [...]}}'"
    try:
        from pipelines.services import registry

        schema = registry.model_input_schema(uri, model_uri)
    except Exception:  # noqa: BLE001 - only the example is lost; the server reports real problems
        return generic
    if schema is None:
        return generic
    post = f"curl -s {url}/invocations -H 'Content-Type: application/json'"
    if schema.is_tensor_spec() and len(schema.inputs) == 1:
        spec = schema.inputs[0]
        shape, kind = tuple(spec.shape[1:]), spec.type.kind
        if any(d is None or d < 0 for d in shape):
            return generic
        expr = "0.0" if kind == "f" else "0"
        for d in reversed(shape):
            expr = f"[{expr}] * {d}"
        # Built by python3 rather than typed out: one 28×28 image is 784 numbers.
        return f"python3 -c 'import json; print(json.dumps({{\"inputs\": [{expr}]}}))' | {post} -d @-"
    if not schema.is_tensor_spec():
        row = {c.name: ("" if str(c.type) == "string" else 0) for c in schema.inputs if c.name}
        if row:
            return f"{post} -d '{json.dumps({'dataframe_records': [row]})}'"
    return generic


def child_env(uri: str) -> dict[str, str]:
    """The server's environment: this store, and this interpreter's bin dir first on PATH (uvicorn)."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
            "PATH": bin_dir + (os.pathsep + path if path else "")}


def serve(uri: str, spec: str, host: str, port: int, workers: int) -> int:
    """Check, then serve until Ctrl-C; 0 when stopped by the user, 1 when the server itself failed."""
    target = parse_target(spec)
    if workers < 1:
        raise ServeError(f"--workers must be at least 1, not {workers}.")
    version = resolve_version(uri, target)
    check_port(host, port)
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    print(f"visionray: serving {target} (version {version}) from {mask(uri)} at {url}/invocations; Ctrl-C stops it.\n"
          f"  try: {example_request(uri, target.model_uri, url)}", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", target.model_uri, "--env-manager", "local",
           "-h", host, "-p", str(port), "-w", str(workers)]
    return _run_until_stopped(cmd, child_env(uri), f"{url}/ping")


def _run_until_stopped(cmd: list[str], env: dict[str, str], ping: str) -> int:
    # Its own session, so that stopping ends mlflow, uvicorn and its workers together; and a parent-death
    # signal, so that a visionray killed outright (SIGKILL) does not leave the server running.
    proc = subprocess.Popen(_dying_with_parent(cmd), env=env, start_new_session=True)
    ready = False
    try:
        with _StopSignal():
            while proc.poll() is None:
                if not ready and _answers(ping):
                    ready = True
                    print(f"visionray: ready ({ping} answers).", file=sys.stderr, flush=True)
                time.sleep(0.5)
    except KeyboardInterrupt:
        with _StopSignal(ignore=True):  # a second Ctrl-C must not abandon the server half-stopped
            _stop_group(proc)
        print("visionray: server stopped.", file=sys.stderr)
        return 0
    print(f"visionray: the model server exited with status {proc.returncode} (its output is above).",
          file=sys.stderr)
    return 1


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


# Set after exec rather than in a preexec_fn, which may deadlock the child when threads are running
# (MLflow's clients start some). PR_SET_PDEATHSIG (1) survives the exec into mlflow; if visionray died
# before it was set, the getppid check catches it.
_PDEATHSIG_EXEC = ("import ctypes, os, signal, sys\n"
                   "try:\n    ctypes.CDLL('libc.so.6').prctl(1, signal.SIGTERM)\nexcept OSError:\n    pass\n"
                   "if os.getppid() != int(sys.argv[1]):\n    sys.exit(0)\n"
                   "os.execvp(sys.argv[2], sys.argv[2:])")


def _dying_with_parent(cmd: list[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-c", _PDEATHSIG_EXEC, str(os.getpid()), *cmd]


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group, SIGKILL to what is left after the grace period."""
    for sig, wait_s in ((signal.SIGTERM, _STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()  # reaps mlflow's process; uvicorn, orphaned, is reaped by init
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


class _StopSignal:
    """While serving, Ctrl-C and SIGTERM raise KeyboardInterrupt (SIGINT may have come in ignored);
    with ``ignore=True`` both are ignored (while the server stops)."""

    def __init__(self, ignore: bool = False):
        self._handler = signal.SIG_IGN if ignore else self._raise

    def __enter__(self) -> None:
        self._old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    @staticmethod
    def _raise(*_: object) -> None:
        raise KeyboardInterrupt
