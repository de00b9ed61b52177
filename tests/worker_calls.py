"""Calls for worker processes of the tests: importable by a spawned worker (the tests folder
is on the path it inherits) without the cost of conftest's imports."""

from __future__ import annotations

import os
import time
from pathlib import Path


def mark_then_sleep(folder: str, seconds: float) -> None:
    """Leave a file named by this process's id in ``folder``, then sleep: the caller knows
    the worker is inside its call."""
    (Path(folder) / str(os.getpid())).write_text("")
    time.sleep(seconds)


def exit_if_negative(value: int) -> int:
    """``value``, or the process ends at once (as a worker killed for memory does) when it
    is negative."""
    if value < 0:
        os._exit(1)
    return value
