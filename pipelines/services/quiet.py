"""What the terminal shows of a run: visionray's stage and epoch lines, real warnings, and little else.

Messages that are known to be harmless are stopped where they start, each by its exact text: a
``logging`` filter on the one logger that emits it, a library's own log level, or, for lines of Ray's
own actors, where visionray runs no code, Ray's skip pattern in ``runtime.RAY_ENV``.
Everything else, warnings and errors alike, still shows. ``visionray run -v`` (``VISIONRAY_VERBOSE=1``,
inherited by every Ray worker and shipped with a submitted job) applies none of it::

    visionray run quickstart -v      # every line Ray, Ray Data, Ray Train and MLflow print
"""

from __future__ import annotations

import logging
import os

#: Set to 1 by ``visionray run -v``: no filters, the libraries' default log levels.
VERBOSE_ENV = "VISIONRAY_VERBOSE"

#: ``logging`` records by logger and message start: notices about settings visionray chose on purpose.
KNOWN_LOG_RECORDS: dict[str, tuple[str, ...]] = {
    # A local Ray uses token authentication since Ray 2.59; the README says so.
    "ray._private.authentication.authentication_token_setup": ("Token authentication is enabled",),
    # visionray turns Ray Data's progress bars off (one line per epoch instead; runtime.RAY_ENV).
    "ray.data._internal.progress": ("Progress bars disabled",),
}

#: MLflow's INFO lines (database set-up, system-metrics monitor start and stop, input-example
#: validation) say nothing a run's own lines do not; its warnings and errors still show.
MLFLOW_LOG_LEVEL = "WARNING"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class DropKnown(logging.Filter):
    """Drops the records of one logger whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def filter_known_records() -> None:
    """Install :data:`KNOWN_LOG_RECORDS` in this process (not with ``-v``)."""
    if verbose():
        return
    for name, prefixes in KNOWN_LOG_RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropKnown) for f in logger.filters):
            logger.addFilter(DropKnown(prefixes))


def quiet_driver(verbose_run: bool = False) -> None:
    """In the driver of ``visionray run``, before MLflow or Ray is imported: ``-v`` or the filters."""
    if verbose_run:
        os.environ[VERBOSE_ENV] = "1"
    if not verbose():
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", MLFLOW_LOG_LEVEL)  # read when mlflow is imported
        # a progress bar per artifact download (the package checks, the register stage's served-form
        # check): three lines each, nothing a user acts on
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        filter_known_records()


def train_log_level() -> str:
    """Ray Train's ``ray.train`` log level in its controller and workers: its per-run INFO lines
    (requesting resources, starting the worker group, setting up the process group) are left out."""
    return "INFO" if verbose() else "WARNING"
