"""What a user sees: `visionray ui` on a real quickstart store, loaded in a real browser (headless Chromium).

    .venv/bin/python -m pytest -q -m slow tests/pipelines/test_dashboard_browser.py

Needs Debian's ``chromium`` (``.ci/run`` installs it as root); skipped, saying so, where it is absent.
``--dump-dom`` after ``--virtual-time-budget`` gives the DOM once MLflow's React app has fetched and drawn
the runs: the landing view's table (run names, the chosen metric columns and their values) is in it.
Metric columns that do not fit the window are not drawn (the grid virtualises columns), so the window is
as wide as a laptop's and the test looks for the first ones only.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.services import names

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                    "(.ci/run installs it as root: apt-get install chromium)")
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _text(dom: str) -> str:
    """The page's visible text, one ' | ' between elements."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S)
    return html.unescape(re.sub(r"(\s*\|\s*)+", " | ", re.sub(r"<[^>]+>", " | ", dom)))


def _dump_dom(url: str, budget_ms: int = 15000) -> str:
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                          f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _wait_for(url: str, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > end:
                raise AssertionError(f"{url} did not answer within {deadline_s:.0f} s") from None
        time.sleep(0.3)


@pytest.fixture(scope="module")
def dashboard(quickstart_run, tmp_path_factory):
    """`visionray ui` on a copy of the session's quickstart store as that run left it (other tests add pipeline
    runs of their own to the shared store, and the landing is the newest): (landing URL, base URL, store)."""
    tmp_path = tmp_path_factory.mktemp("ui")
    port = _free_port()
    store = quickstart_run.copy_store(tmp_path / "store")
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "MLFLOW_REGISTRY_URI": store.uri,
           "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "ui.err").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", "ui", "--port", str(port)], cwd=store.root,
                            env=env, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    try:
        landing = proc.stdout.readline().strip()
        base = f"http://127.0.0.1:{port}"
        assert landing.startswith(f"{base}/#/experiments/"), (landing, (tmp_path / "ui.err").read_text())
        # ~5 s on an idle 2-core machine; minutes when the machine is saturated by other work
        _wait_for(f"{base}/health", 180)
        yield landing, base, store
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _latest_family(client):
    """The newest pipeline run of the store (other tests may add runs to it) and its stage runs."""
    exp = client.get_experiment_by_name(names.experiment_name("quickstart"))
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=200)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


@needs_chromium
def test_the_landing_page_shows_the_latest_runs_stages_in_order_and_its_test_accuracy(quickstart_run, dashboard):
    landing, _, store = dashboard
    assert "workflowType=machine_learning" in landing
    parent, children = _latest_family(store.client())
    assert parent.info.run_id == quickstart_run.run_id
    started = time.monotonic()
    text = _text(_dump_dom(landing))
    assert time.monotonic() - started < 60
    # the model-training view (not GenAI's Overview of traces), on the saved view of the latest run
    assert "| Runs |" in text and "Token Usage" not in text, text[:1500]
    assert f"visionray: latest run ({parent.info.run_name})" in text
    # its stages top-down, then the pipeline run itself
    stage_names = [f"{i}-{s}" for i, s in enumerate(quickstart_run.cfg.stages, start=1)]
    assert sorted(c.info.run_name for c in children) == stage_names
    rows = [f"| {n} |" for n in [*stage_names, parent.info.run_name]]
    positions = [text.find(r) for r in rows]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), list(zip(rows, positions))
    # the test-accuracy column and the parent's value in it
    assert f"| {names.TEST_ACCURACY} |" in text
    assert repr(parent.data.metrics[names.TEST_ACCURACY]) in text


@needs_chromium
def test_the_run_report_is_in_the_artifact_viewer_and_renders(quickstart_run, dashboard, tmp_path):
    _, base, store = dashboard
    client = store.client()
    run_id = quickstart_run.run_id
    experiment_id = client.get_run(run_id).info.experiment_id
    # MLflow's artifact viewer draws report.html in a sandboxed frame (from a blob URL, so its DOM is not
    # in the page's dump) ... (on a server just started: `visionray ui` turns MLflow 3.18's job executor off,
    # whose start-up otherwise leaves this view on "loading" for the first ~20 s)
    url = f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{names.REPORT_ARTIFACT}?workflowType=machine_learning"
    for _ in range(3):  # a loaded machine: the server's first artifact loads can outlast one dump's budget
        viewer = _dump_dom(url, budget_ms=30000)
        if re.search(r'<iframe[^>]*class="mlflow-html-iframe"', viewer):
            break
    assert re.search(r'<iframe[^>]*class="mlflow-html-iframe"', viewer), _text(viewer)[:1500]
    # ... so the page it draws is loaded on its own: the headline first, then the stages and the figures
    page = Path(client.download_artifacts(run_id, names.REPORT_ARTIFACT, str(tmp_path)))
    text = _text(_dump_dom(page.as_uri(), budget_ms=2000))
    accuracy = client.get_run(run_id).data.metrics[names.TEST_ACCURACY]
    assert text.index(f"| {accuracy:.4g} | {names.TEST_ACCURACY} |") < text.index("| Stages |") < text.index("| Figures |")
    assert "train: plots/curves.png" in text and "evaluate: plots/confusion_matrix.png" in text
