"""Seconds spent inside chosen functions, summed over calls, and the number of calls: how
benchmarks split a run's time.

Usage::

    time_method(PPO, "train", "ppo_updates")  # every PPO.train call now adds to TIMERS
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

TIMERS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that adds its wall time to ``TIMERS[name]`` and one to ``CALLS[name]`` on
    every call."""

    def wrapper(*args, **kwargs):
        CALLS[name] += 1
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMERS[name] += time.perf_counter() - start

    return wrapper


def time_method(cls: type, method: str, name: str) -> None:
    """Time every call of ``cls.method`` (subclasses that inherit it included)."""
    setattr(cls, method, timed(name, getattr(cls, method)))


def reset_timers() -> None:
    """Forget every time and count so far."""
    TIMERS.clear()
    CALLS.clear()
