"""The charlm pipeline end to end on a tiny config: Jane Austen (``make data``), a real local Ray, a real
MLflow store; the registered model answers ``/invocations`` over HTTP from MLflow's own scoring app.

    .venv/bin/python -m pytest -m slow tests/pipelines/test_charlm.py
"""

from __future__ import annotations

import pytest

from pipelines.services import names
from tests.conftest import shrunk_config
from tests.scoring import post, serve_in_thread

#: A small LSTM and a few hundred steps: the test checks the path, not the recipe (docs/results.md has that).
TINY = ("data=austen", "charlm.hidden=64", "charlm.embed=32", "charlm.layers=1", "train.epochs=2",
        "train.max_steps_per_epoch=60", "train.batch_size=32", "train.bptt=64", "charlm.sample_chars=80",
        "charlm.ngram_order=3")


def _austen_or_skip():
    from components.data.errors import DataError
    from components.data.sources import locate_austen

    try:
        locate_austen()
    except DataError as e:
        pytest.skip(f"Jane Austen's novels are not installed here (make data fetches them): {e}")


@pytest.mark.slow
def test_charlm_trains_measures_registers_and_serves_text(ray_local, mlflow_store):
    _austen_or_skip()
    from pipelines.dispatch import run_pipeline

    cfg = shrunk_config("charlm", *TINY)
    result = run_pipeline(cfg, command="test")
    client = mlflow_store.client()
    parent = client.get_run(result.run_id)
    metrics = parent.data.metrics
    vocab = len(result.outputs["prepared"].vocab)
    assert vocab == 82  # 81 characters in the six novels + the id for characters never seen
    # Learned something: well below a uniform guess over the vocabulary (log2 82 = 6.36 bits).
    assert metrics["test/bpc"] < 4.5, metrics
    assert 1.5 < metrics[names.NGRAM_BPC] < 4.0  # the order-3 baseline on the same test split
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    train = next(r for r in runs if r.data.tags.get(names.STAGE_TAG) == "train")
    history = client.get_metric_history(train.info.run_id, "val/bpc")
    assert sorted(m.step for m in history) == [1, 2]  # epochs are numbered from 1
    assert names.CHARS_PER_S in train.data.metrics and "train/bpc" in train.data.metrics
    samples = {a.path for a in client.list_artifacts(train.info.run_id, names.CHARLM_SAMPLES_DIR)}
    assert samples == {f"{names.CHARLM_SAMPLES_DIR}/epoch_001.txt", f"{names.CHARLM_SAMPLES_DIR}/epoch_002.txt"}
    text = client.download_artifacts(train.info.run_id, f"{names.CHARLM_SAMPLES_DIR}/epoch_002.txt")
    assert "temperature 0.5" in open(text).read()

    decision = result.outputs["decision"]
    assert decision.name == "austen-charlm"
    server, thread, base = serve_in_thread(f"models:/austen-charlm@{names.CHAMPION}")
    try:
        generated = post(f"{base}/invocations", {"dataframe_split": {"columns": ["prompt"],
                                                                      "data": [["It is a truth"], ["Emma"]]},
                                                  "params": {"max_new_chars": 40, "seed": 3}})["predictions"]
        again = post(f"{base}/invocations", {"inputs": {"prompt": ["It is a truth", "Emma"]},
                                              "params": {"max_new_chars": 40, "seed": 3}})["predictions"]
        scored = post(f"{base}/invocations", {"inputs": {"prompt": ["It is a truth universally"]},
                                               "params": {"mode": "bpc"}})["predictions"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert [len(t) for t in generated["text"]] == [40, 40]
    assert generated == again  # the same seed, the same continuation
    assert 0 < scored["bpc"][0] < 6.4


def test_a_binary_file_in_a_text_corpus_exits_2_naming_it(tmp_path):
    import subprocess
    import sys

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Some words.\n")
    (corpus / "b.bin").write_bytes(b"\x00\x01\x02binary")
    done = subprocess.run([sys.executable, "-m", "pipelines", "run", "charlm", "data=text",
                           f"data.path={corpus}"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "b.bin" in done.stderr and not (tmp_path / "mlruns").exists()  # nothing started
