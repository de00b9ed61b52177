"""Worker processes that stop with the command that started them.

A ``ProcessPoolExecutor`` left by an exception waits for its workers to finish their
current call, and a SIGTERM kills the parent outright: either way a worker in the middle of
an hour-long training run goes on alone, holding a core. :func:`process_pool` turns SIGTERM
into an exception while the pool is open and, on any exception (SIGTERM, Ctrl-C, a failure
in the parent), terminates the workers before it propagates.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any


class Terminated(SystemExit):
    """SIGTERM reached the parent: exits with status 128 + 15, as the signal itself would."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread, so that
    ``finally`` blocks run. Elsewhere than the main thread it changes nothing (Python only
    lets the main thread set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop every worker of ``pool`` now and drop the calls not yet started."""
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    # Before 3.14 the executor has no public way to stop a running call; its worker
    # processes are in ``_processes`` (pid -> Process), which shutdown() clears.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` spawned processes (no forked torch state in them) whose workers
    are terminated if the block ends by an exception, SIGTERM included; on a normal exit it
    waits for them as ``with ProcessPoolExecutor(...)`` does."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    with sigterm_raises():
        try:
            yield pool
        except BaseException:
            terminate_workers(pool)
            raise
        pool.shutdown(wait=True)


__all__ = ["Terminated", "process_pool", "sigterm_raises", "terminate_workers"]
