"""Where a training run's first seconds go: from the process's start to its first optimizer step.

    startup.begin()                          # the driver, as a pipeline starts
    startup.mark("ray")                      # ... and each time a phase ends
    config["startup"] = startup.timeline()   # handed to the Ray Train workers with their config
    # rank 0, after its first step:
    metrics = startup.breakdown([*config["startup"], ("worker_group", startup.launched()), ("workers", t_loop),
                                 ("worker_setup", t_ready),
                                 ("first_step", time.time())])

A timeline is a list of ``(phase, wall-clock time when it ended)``, starting at ``("launch", the process's
start)``; :func:`breakdown` turns it into ``perf/startup/<phase>_s`` (consecutive differences) and
``perf/startup_s`` (the whole span). The driver marks ``python`` (interpreter, imports, the config and its checks),
``tracking`` (the checks before anything starts, the MLflow runs), ``ray`` (the runtime), each stage
before ``train``, and ``train_setup`` (datasets planned, trainer built); rank 0 adds ``worker_group`` (Ray Train's controller
scheduling the worker group, up to rank 0's process starting), ``workers`` (that process's imports and Ray
Train's process group, up to the training function), ``worker_setup`` (the model, DDP, the optimiser) and ``first_step``. Wall-clock times
across processes: on one machine they share a clock; across nodes they are as good as its sync.
"""

from __future__ import annotations

import time

from pipelines.services import names

_MARKS: list[tuple[str, float]] = []
_LAUNCH: list[float] = []  # when the current pipeline's timeline starts; empty before the first pipeline
_FROM_PROCESS_START: list[bool] = [False]


def launched() -> float:
    """When this process started (wall clock, seconds since the epoch)."""
    import psutil

    return psutil.Process().create_time()


def count_from_process_start() -> None:
    """This process was started to run one pipeline (``visionray run``): its start-up counts from the
    process's own start, interpreter and imports included."""
    _FROM_PROCESS_START[0] = True


def begin() -> None:
    """A pipeline starts: its timeline counts from now, or, in a ``visionray run`` process
    (:func:`count_from_process_start`), from the process's start, with ``python`` marked now."""
    _MARKS.clear()
    if _FROM_PROCESS_START[0]:
        _FROM_PROCESS_START[0] = False  # once: a second pipeline in the same process counts from its own start
        _LAUNCH[:] = [launched()]
        mark("python")
    else:
        _LAUNCH[:] = [time.time()]


def mark(phase: str) -> None:
    """The phase named ``phase`` ends now (in this process's timeline)."""
    _MARKS.append((phase, time.time()))


def timeline() -> list[tuple[str, float]]:
    """This pipeline's marks so far, after ``("launch", when it started)``; outside a pipeline (a sweep
    trial's process, which trains but never called :func:`begin`), from the process's start."""
    return [("launch", _LAUNCH[0] if _LAUNCH else launched()), *_MARKS]


def breakdown(marks: list[tuple[str, float]]) -> dict[str, float]:
    """``perf/startup/<phase>_s`` for each phase (the time since the mark before it; a phase marked twice
    adds up) and ``perf/startup_s``, from the first mark to the last."""
    if len(marks) < 2:
        raise ValueError("a start-up timeline needs its launch and at least one phase")
    out: dict[str, float] = {}
    for (_, before), (phase, at) in zip(marks, marks[1:]):
        key = names.startup_phase(phase)
        out[key] = out.get(key, 0.0) + max(0.0, at - before)
    out[names.STARTUP_SECONDS] = max(0.0, marks[-1][1] - marks[0][1])
    return out


def summary(metrics: dict[str, float]) -> str:
    """One terminal line: the total, then each phase over a second, largest first."""
    phases = {k.removeprefix(names.STARTUP_PHASE_PREFIX).removesuffix("_s"): v for k, v in metrics.items()
              if k.startswith(names.STARTUP_PHASE_PREFIX)}
    big = sorted(((v, k) for k, v in phases.items() if v >= 1.0), reverse=True)
    return (f"first step {metrics[names.STARTUP_SECONDS]:.1f} s after launch"
            + (" (" + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for v, k in big) + ")" if big else ""))
