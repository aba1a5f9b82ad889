"""The retrain lock on a real MLflow SQLite store: one holder among many, stale locks broken, release.

    .venv/bin/python -m pytest tests/pipelines/test_retrain_lock.py
"""

from __future__ import annotations

import threading
import time

from pipelines.flows.retrain import should_promote
from pipelines.services import names
from pipelines.services.registry import RegistryLock


def _race(uri: str, n: int, ttl_s: float = 60) -> tuple[list[RegistryLock], dict[int, str | None]]:
    locks = [RegistryLock(uri, "digits-classifier", ttl_s, f"holder-{i}") for i in range(n)]
    barrier, results = threading.Barrier(n), {}

    def take(i: int) -> None:
        barrier.wait()
        results[i] = locks[i].acquire()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return locks, results


def test_exactly_one_of_many_takes_the_lock_and_release_frees_it(mlflow_store):
    locks, results = _race(mlflow_store.uri, 6)
    winners = [i for i, why in results.items() if why is None]
    assert len(results) == 6 and len(winners) == 1, results
    for i, why in results.items():
        if i not in winners:
            assert f"holder-{winners[0]}" in why and "holds the lock digits-classifier.retrain-lock" in why
    winner = locks[winners[0]]
    assert winner.still_held()
    assert not locks[(winners[0] + 1) % 6].still_held()
    winner.release()
    assert not winner.still_held()
    later = RegistryLock(mlflow_store.uri, "digits-classifier", 60, "later")
    assert later.acquire() is None
    later.release()
    assert [m.name for m in mlflow_store.client().search_registered_models()] == []


def test_a_stale_lock_is_broken_with_a_warning_and_its_holder_may_not_promote(mlflow_store, capsys):
    crashed = RegistryLock(mlflow_store.uri, "digits-classifier", 5, "crashed")
    assert crashed.acquire() is None
    crashed._stop.set()  # the holder "crashes": no more heartbeats
    client = mlflow_store.client()
    client.set_registered_model_tag(crashed.name, names.LOCK_HEARTBEAT_TAG, f"{time.time() - 60:.3f}")
    fresh = RegistryLock(mlflow_store.uri, "digits-classifier", 5, "fresh")
    assert fresh.acquire() is None
    assert "breaking the stale retrain lock digits-classifier.retrain-lock of crashed" in capsys.readouterr().err
    assert fresh.still_held() and not crashed.still_held()
    crashed.release()  # not ours any more: must not delete the new holder's lock
    assert fresh.still_held()
    fresh.release()


def test_the_gate_rule():
    assert should_promote(0.90, None, 0.5)  # no champion: the first model is promoted
    assert should_promote(0.91, 0.90, 0.01 - 1e-9)
    assert not should_promote(0.905, 0.90, 0.01)
    assert should_promote(0.89, 0.90, -0.02)  # a negative margin tolerates a small loss
