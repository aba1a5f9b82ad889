"""pipelines.services.startup: the timeline from a run's launch to its first training step."""

from __future__ import annotations

import time

import pytest

from pipelines.services import names, startup


def test_the_breakdown_is_each_phase_since_the_mark_before_it_and_the_whole_span():
    marks = [("launch", 100.0), ("python", 103.5), ("ray", 110.0), ("ingest", 110.25), ("first_step", 121.0)]
    out = startup.breakdown(marks)
    assert out == {names.startup_phase("python"): 3.5, names.startup_phase("ray"): 6.5,
                   names.startup_phase("ingest"): 0.25, names.startup_phase("first_step"): 10.75,
                   names.STARTUP_SECONDS: 21.0}
    phases = sum(v for k, v in out.items() if k.startswith(names.STARTUP_PHASE_PREFIX))
    assert phases == pytest.approx(out[names.STARTUP_SECONDS])  # the phases account for all of it


def test_a_phase_marked_twice_adds_up_and_a_clock_step_back_counts_as_zero():
    out = startup.breakdown([("launch", 0.0), ("stage", 2.0), ("other", 1.5), ("stage", 4.0)])
    assert out[names.startup_phase("stage")] == 4.5 and out[names.startup_phase("other")] == 0.0
    with pytest.raises(ValueError):
        startup.breakdown([("launch", 0.0)])


def test_the_summary_names_the_big_phases_largest_first():
    out = startup.breakdown([("launch", 0.0), ("python", 3.0), ("tracking", 3.2), ("workers", 9.0)])
    assert startup.summary(out) == "first step 9.0 s after launch (workers 5.8, python 3.0)"


def test_a_cli_run_counts_from_the_process_start_and_a_later_pipeline_from_its_own():
    startup.count_from_process_start()
    startup.begin()
    first = startup.timeline()
    assert first[0] == ("launch", startup.launched()) and [p for p, _ in first[1:]] == ["python"]
    before = time.time()
    startup.begin()  # a second pipeline in the same process
    startup.mark("ray")
    second = startup.timeline()
    assert second[0][1] >= before and [p for p, _ in second[1:]] == ["ray"]


def test_only_the_visionray_process_itself_counts_from_its_start(capsys):
    """A caller handing ``main`` its arguments (a test, a script) started long before the run: a run it
    starts later counts from its own start, even when this call stopped before any pipeline began."""
    from pipelines.entry import cli

    assert cli.main(["run", "transfer"]) == 2  # no transfer.source: refused before the pipeline starts
    before = time.time()
    startup.begin()
    assert startup.timeline()[0][1] >= before
