"""MLflow's scoring app (what ``mlflow models serve`` runs) in the test process, and a JSON POST to it."""

from __future__ import annotations

import json
import threading
import time
import urllib.request


def serve_in_thread(model_uri: str):
    """MLflow's scoring app (what ``mlflow models serve`` runs) on a free loopback port, in this process."""
    import uvicorn
    from mlflow.pyfunc import load_model, scoring_server

    from pipelines.services.runtime import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(scoring_server.init(load_model(model_uri)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the scoring app did not start"
        time.sleep(0.1)
    return server, thread, f"http://127.0.0.1:{port}"


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())
