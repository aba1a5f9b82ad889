"""``visionray schedule``: the loop driven by an injected clock, launching real (quick) processes.

    .venv/bin/python -m pytest tests/pipelines/test_schedule.py

The clock is fake (hours pass in milliseconds); the runs are real child processes, so overlap is
real: a child that takes 2 s of real time spans several fake minutes.
"""

from __future__ import annotations

import datetime
import sys
import time

import pytest

from pipelines.entry.cli import main
from pipelines.entry.schedule import Scheduler, next_after

EVERY_MINUTE = "* * * * *"


class FakeClock:
    def __init__(self, start: float, real_s: float = 0.0, jumps: dict[int, float] | None = None):
        self.t, self.real_s, self.calls, self.jumps = start, real_s, 0, jumps or {}

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.calls += 1
        self.t += seconds + self.jumps.get(self.calls, 0.0)  # a jump: the machine was suspended
        time.sleep(min(seconds, self.real_s))  # real children make progress meanwhile


def _start() -> float:
    return datetime.datetime(2026, 1, 1, 2, 58, 30).timestamp()  # local time, 30 s before a due minute


def _child(tmp_path, seconds: float) -> list[str]:
    code = (f"import time; f = open({str(tmp_path / 'log')!r}, 'a'); f.write('start\\n'); f.flush(); "
            f"time.sleep({seconds}); f.write('end\\n')")
    return [sys.executable, "-c", code]


def test_runs_at_each_due_time_until_max_runs(tmp_path):
    clock, lines = FakeClock(_start(), real_s=0.05), []  # 20x real time: a quick child ends within the minute
    s = Scheduler(EVERY_MINUTE, _child(tmp_path, 0), max_runs=2, clock=clock, sleep=clock.sleep, log=lines.append)
    assert s.run() == [0, 0]
    assert (tmp_path / "log").read_text() == "start\nend\nstart\nend\n"
    started = [ln for ln in lines if "started" in ln]
    assert len(started) == 2 and not any("skipped" in ln or "missed" in ln for ln in lines)
    assert next_after(EVERY_MINUTE, _start()) == _start() + 30


def test_overlapping_runs_are_skipped_then_coalesced_never_two_at_once(tmp_path):
    clock, lines = FakeClock(_start(), real_s=0.01), []  # 1 fake second per 10 ms: a 2 s child spans minutes
    s = Scheduler(EVERY_MINUTE, _child(tmp_path, 2), max_runs=2, clock=clock, sleep=clock.sleep, log=lines.append)
    assert s.run() == [0, 0]
    assert (tmp_path / "log").read_text() == "start\nend\nstart\nend\n"  # strictly one after the other
    assert any("skipped the run due at" in ln and "is still running" in ln for ln in lines), lines
    assert any("fell due while the last one ran: coalesced into one run now" in ln for ln in lines), lines


def test_runs_missed_while_the_machine_slept_are_coalesced_into_one(tmp_path):
    clock, lines = FakeClock(_start(), real_s=0.05, jumps={1: 600}), []  # the first sleep lasts 10 more minutes
    s = Scheduler(EVERY_MINUTE, _child(tmp_path, 0), max_runs=1, clock=clock, sleep=clock.sleep, log=lines.append)
    assert s.run() == [0]
    missed = [ln for ln in lines if "missed" in ln]
    assert len(missed) == 1 and "missed 11 runs due from 2026-01-01 02:59 to 2026-01-01 03:09" in missed[0], lines
    assert "coalesced into one run now" in missed[0]
    assert (tmp_path / "log").read_text() == "start\nend\n"


def test_a_failing_run_is_logged_and_the_schedule_goes_on(tmp_path):
    clock, lines = FakeClock(_start()), []
    s = Scheduler(EVERY_MINUTE, [sys.executable, "-c", "raise SystemExit(1)"], max_runs=2, clock=clock,
                  sleep=clock.sleep, log=lines.append)
    assert s.run() == [1, 1]
    assert sum("ended with exit status 1" in ln for ln in lines) == 2


@pytest.mark.parametrize("expr", ["61 * * * *", "0 3 * *", "every night", "* * * * * * *"])
def test_a_bad_cron_expression_exits_2_with_one_sentence(expr, capsys):
    assert main(["schedule", "--cron", expr, "retrain"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"visionray: --cron '{expr}' is not a valid") and err.count("\n") == 0
