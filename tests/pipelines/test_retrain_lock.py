"""The retrain lock on a real MLflow SQLite store: one holder among many, stale locks broken, release.

    .venv/bin/python -m pytest tests/pipelines/test_retrain_lock.py
"""

from __future__ import annotations

import threading
import time

from pipelines.services import names
from pipelines.services.registry import PrimaryMetric, RegistryLock, should_promote


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
    """retrain's margin rule: challenger - champion >= retrain.min_improvement."""
    assert should_promote(0.90, None, True, 0.5)  # no champion: the first model is promoted
    assert should_promote(0.91, 0.90, True, 0.01 - 1e-9)
    assert not should_promote(0.905, 0.90, True, 0.01)
    assert should_promote(0.89, 0.90, True, -0.02)  # a negative margin tolerates a small loss
    assert should_promote(0.90, 0.90, True, 0.0)  # a tie meets a zero margin


def test_the_gate_follows_the_metric_direction():
    # higher is better (accuracy, return): the larger value wins
    assert should_promote(0.92, 0.91, True, 0.0) and not should_promote(0.90, 0.91, True, 0.0)
    # lower is better (bits per character): the smaller value wins, the margin is a decrease
    assert should_promote(1.40, 1.50, False, 0.0) and not should_promote(1.60, 1.50, False, 0.0)
    assert should_promote(1.40, 1.50, False, 0.05) and not should_promote(1.48, 1.50, False, 0.05)
    assert should_promote(1.55, 1.50, False, -0.1)
    # the register stage's "beats" is strict: a tie stays the challenger, in either direction
    assert not should_promote(0.91, 0.91, True, tie_promotes=False)
    assert not should_promote(1.5, 1.5, False, tie_promotes=False)
    assert should_promote(1.5, None, False, tie_promotes=False)


class _Version:
    def __init__(self, **tags: str):
        self.tags = tags


def test_the_stored_primary_metric_falls_back_to_the_task_tag():
    metric = PrimaryMetric(names.TEST_ACCURACY, 0.9, True, "test accuracy", names.TEST_ACCURACY_TAG)
    assert metric.tags() == {names.PRIMARY_METRIC_TAG: "test/accuracy", names.PRIMARY_VALUE_TAG: "0.900000",
                             names.TEST_ACCURACY_TAG: "0.900000"}
    assert metric.stored(_Version(**metric.tags())) == 0.9
    assert metric.stored(_Version(test_accuracy="0.8")) == 0.8  # registered before primary_metric
    assert metric.stored(_Version(primary_metric="test/bpc", primary_value="1.2", test_accuracy="0.7")) == 0.7
    assert metric.stored(_Version()) is None and metric.stored(None) is None
    assert metric.stored(_Version(test_accuracy="nan")) is None
