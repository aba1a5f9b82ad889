"""What a sweep's trials cost: trial CPU-seconds as wall time × the CPUs the trial holds.

    clock = trial_clock()                  # a Tune callback: when each trial started and ended
    tune.RunConfig(callbacks=[clock, ...])
    seconds = clock.seconds()              # trial id -> wall seconds, start to end, whatever ended it

``bench/asha_compute_ratio`` is the ASHA round's trial CPU-seconds over the same search's without ASHA.
Counting epochs instead missed work: an epoch cut by the loss rule or by ASHA's stop counted as zero,
and a wide model's epoch counted the same as a narrow one's. The clock runs on the driver from Tune's
start of a trial to Tune's end of it (completed, stopped by ASHA, or failed), so a cut epoch's time is
in it; times the CPUs the trial's Ray Train workers reserve, it is the compute the cluster gave the
trial. A trial the driver did not see start (a restored sweep) falls back to Tune's ``time_total_s``.
"""

from __future__ import annotations

import time
from typing import Any


def trial_clock():
    from ray import tune

    class TrialClock(tune.Callback):
        def __init__(self):
            self.started: dict[str, float] = {}
            self.ended: dict[str, float] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started.setdefault(trial.trial_id, time.monotonic())

        def on_trial_complete(self, iteration, trials, trial, **info):  # finished, or stopped by ASHA
            self.ended[trial.trial_id] = time.monotonic()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.ended[trial.trial_id] = time.monotonic()

        def seconds(self) -> dict[str, float]:
            return {t: self.ended[t] - s for t, s in self.started.items() if t in self.ended}

    return TrialClock()


def add_cpu_seconds(rows: list[dict[str, Any]], seconds: dict[str, float], cpus_per_trial: float) -> None:
    """Sets each row's ``cpu_s``: its wall seconds (the clock's, else Tune's ``time_total_s``) × the CPUs it held."""
    for row in rows:
        wall = seconds.get(row["trial_id"], row.get("time_total_s") or 0.0)
        row["wall_s"], row["cpu_s"] = wall, wall * cpus_per_trial
