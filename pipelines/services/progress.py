"""What the terminal shows: one line per stage and per epoch, with an ETA; no progress-bar spam."""

from __future__ import annotations

import sys
import time


def say(message: str) -> None:
    from pipelines.config.secrets import mask

    print(f"[visionray {time.strftime('%H:%M:%S')}] {mask(message)}", file=sys.stderr, flush=True)


def eta(elapsed_s: float, done: int, total: int) -> str:
    if done <= 0 or total <= done:
        return "0s" if total <= done else "?"
    return duration(elapsed_s / done * (total - done))


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
