"""A pipeline through ``ray://`` against a real local Ray head, as the README's cluster mode runs it.

    flock /tmp/visionray-measure.lock env RAY_worker_niceness=0 PYTHONPATH=$PWD \\
        .venv/bin/python tests/pipelines/client_mode_run.py quickstart [key=value ...]

Starts ``ray start --head --block`` on 127.0.0.1 in a temp dir (token authentication with a token of its
own, a Ray Client server port), runs ``visionray run PIPELINE`` with ``RAY_ADDRESS=ray://127.0.0.1:PORT``
in an empty working directory (the default SQLite store there, which the head on this machine reaches
too), prints the exit status, the wall time and the pipeline runs in the store, and stops the head by
process id (never ``ray stop``, which would stop every Ray on the machine).
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines.services.runtime import free_ports
from tests.pipelines.test_jobs import BIN, clean_env, stop_tree, wait_http


def main(argv: list[str]) -> int:
    root = Path(tempfile.mkdtemp(prefix="vrc-", dir="/tmp"))  # short: Ray's Unix sockets live below it
    token = secrets.token_hex(32)
    dash, cport, gcs, agent, agent_grpc, env_agent, metrics = free_ports(7)
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--ray-client-server-port={cport}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
           f"--metrics-export-port={metrics}", f"--temp-dir={root / 'ray'}", "--disable-usage-stats"]
    log = root / "ray.log"
    run = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` stops it: still stop the head
    with open(log, "w") as out:
        head = subprocess.Popen(cmd, env=clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{dash}/api/version", head, log)
        work = root / "work"
        work.mkdir()
        started = time.perf_counter()
        run = subprocess.Popen([sys.executable, "-m", "pipelines", "run", *argv], cwd=work,
                               env=clean_env(RAY_AUTH_TOKEN=token, RAY_ADDRESS=f"ray://127.0.0.1:{cport}"))
        returncode = run.wait()
        wall = time.perf_counter() - started
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
        exp = client.get_experiment_by_name(f"visionray/{argv[0]}")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        print(f"client mode: exit {returncode}, {wall:.0f} s wall; {len(parents)} pipeline run(s): "
              + ", ".join(f"{r.info.status} test/accuracy={r.data.metrics.get('test/accuracy', float('nan')):.4f}"
                          for r in parents), flush=True)
        return returncode
    finally:
        if run is not None and run.poll() is None:
            run.terminate()
            run.wait(timeout=30)
        stop_tree(head)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
