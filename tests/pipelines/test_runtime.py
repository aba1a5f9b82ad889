"""pipelines.services.runtime pieces that need no Ray."""

from __future__ import annotations

import subprocess
import sys

import psutil


def test_a_failed_start_kills_only_the_processes_it_started():
    from pipelines.services.runtime import _kill_new_children

    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        before = {c.pid for c in psutil.Process().children(recursive=True)}
        newer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        _kill_new_children(before)
        newer.wait(timeout=10)
        assert not psutil.pid_exists(newer.pid)  # killed (and reaped)
        assert older.poll() is None  # left alone
    finally:
        older.kill()
        older.wait()
