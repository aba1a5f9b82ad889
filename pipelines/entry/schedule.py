"""``visionray schedule``: run a pipeline on a cron schedule from one machine, until stopped.

    visionray schedule --cron "0 3 * * *" retrain                   # every night at 3 a.m., local time
    visionray schedule --cron "*/15 * * * *" retrain data.path=/data/incoming

Each due run is ``python -m pipelines run PIPELINE …`` in its own process, so one run's crash, leak
or Ray runtime never touches the next. Never two at once: a time that falls due while a run is still
going is skipped and logged, and when that run ends the skipped times are coalesced into one run.
Times missed while the machine slept are likewise logged and coalesced into one run on waking.
Cron expressions are parsed by croniter (five fields, the machine's local time). On a cluster use
the Kubernetes ``CronJob`` / ``RayCronJob`` manifests instead: this is the one-machine scheduler.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from pipelines.config import ConfigError
from pipelines.services.progress import say


def check_cron(expr: str) -> None:
    from croniter import croniter

    if not croniter.is_valid(expr) or len(expr.split()) != 5:
        raise ConfigError(f"--cron '{expr}' is not a valid five-field cron expression "
                          f"(minute hour day-of-month month day-of-week, e.g. '0 3 * * *').")


def next_after(expr: str, t: float) -> float:
    """The first due time strictly after ``t`` (epoch seconds), in the machine's local time zone."""
    from croniter import croniter

    return croniter(expr, datetime.datetime.fromtimestamp(t).astimezone()).get_next(float)


def run_command(pipeline: str, overrides: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "pipelines", "run", pipeline, *overrides]


def _at(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


@dataclass
class Scheduler:
    """The loop. ``clock`` and ``sleep`` are injectable so a test can drive hours in milliseconds."""

    expr: str
    command: list[str]
    max_runs: int = 0  # stop after this many runs have finished (0: until stopped)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    poll_s: float = 1.0  # how often a running child is checked
    idle_s: float = 60.0  # longest sleep while idle, so a wall-clock jump (suspend) is seen soon
    log: Callable[[str], None] = say
    exit_codes: list[int] = field(default_factory=list)

    def run(self) -> list[int]:
        check_cron(self.expr)
        started, proc, skipped = 0, None, 0
        due = next_after(self.expr, self.clock())
        self.log(f"schedule: '{self.expr}' → {' '.join(self.command[3:])}; next run at {_at(due)}")
        try:
            while True:
                now = self.clock()
                if proc is not None and proc.poll() is not None:
                    self.exit_codes.append(proc.returncode)
                    self.log(f"schedule: run {started} (pid {proc.pid}) ended with exit status {proc.returncode}")
                    proc = None
                    if self.max_runs and len(self.exit_codes) >= self.max_runs:
                        return self.exit_codes
                    if skipped:
                        self.log(f"schedule: {skipped} run(s) fell due while the last one ran: coalesced "
                                 f"into one run now")
                        skipped = 0
                        proc, started = self._start(started)
                        continue
                if now >= due:
                    missed = self._missed_since(due, now)
                    if proc is not None:
                        skipped += 1 + missed
                        self.log(f"schedule: skipped the run due at {_at(due)}"
                                 + (f" (and {missed} more)" if missed else "")
                                 + f": run {started} (pid {proc.pid}) is still running")
                    elif not self.max_runs or started < self.max_runs:
                        if missed:
                            self.log(f"schedule: missed {missed + 1} runs due from {_at(due)} to "
                                     f"{_at(self._last_due(due, now))} (the machine slept or was busy): "
                                     f"coalesced into one run now")
                        proc, started = self._start(started)
                    due = next_after(self.expr, now)
                    self.log(f"schedule: next run at {_at(due)}")
                wait = min(due - self.clock(), self.poll_s if proc is not None else self.idle_s)
                self.sleep(max(0.0, wait))
        except KeyboardInterrupt:
            self.log("schedule: stopped" + (f"; waiting for run {started} (pid {proc.pid}) to stop" if proc else ""))
            if proc is not None:
                proc.wait(timeout=120)
            return self.exit_codes

    def _start(self, started: int) -> tuple[subprocess.Popen, int]:
        proc = subprocess.Popen(self.command)
        self.log(f"schedule: run {started + 1} started (pid {proc.pid}): {' '.join(self.command[3:])}")
        return proc, started + 1

    def _missed_since(self, due: float, now: float) -> int:
        """How many further due times passed in (due, now]: the ones a sleep or a long run swallowed."""
        n, t = 0, next_after(self.expr, due)
        while t <= now and n < 10_000:
            n, t = n + 1, next_after(self.expr, t)
        return n

    def _last_due(self, due: float, now: float) -> float:
        t = due
        while (nxt := next_after(self.expr, t)) <= now:
            t = nxt
        return t
