"""Worker processes that stop with the command that started them.

A ``ProcessPoolExecutor`` left by an exception waits for its workers to finish their
current call, and a SIGTERM kills the parent outright: either way a worker in the middle of
an hour-long training run goes on alone, holding a core. :func:`process_pool` turns SIGTERM
into an exception while the pool is open and, on any exception (SIGTERM, Ctrl-C, a failure
in the parent), terminates the workers before it propagates; a worker whose parent was
killed outright (SIGKILL) ends itself within a second.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any


class Terminated(SystemExit):
    """SIGTERM reached the parent. A ``SystemExit`` (status 128 + 15, a shell's view of the
    signal) so that only cleanup catches it; ``mtl-envs`` then ends by the signal itself."""

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


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """SIGTERM and SIGINT ignored within the block (main thread only): a second signal must
    not cut short the cleanup that the first one started."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kinds = (signal.SIGTERM, signal.SIGINT)
    previous = {kind: signal.signal(kind, signal.SIG_IGN) for kind in kinds}
    try:
        yield
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)


def terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop every worker of ``pool`` now, drop the calls not yet started, and reap the
    workers (SIGTERM, then SIGKILL for one still alive after 10 s)."""
    # The executor's worker processes (pid -> Process): the only way to stop a running call
    # before Python 3.14, and on 3.14 the way to reap them, which its terminate_workers()
    # does not. shutdown() clears the mapping, so it is copied first.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    if not processes and hasattr(pool, "terminate_workers"):  # the mapping renamed: 3.14+
        pool.terminate_workers()
        return
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """Worker initializer: a daemon thread ends this process once ``parent`` is gone (its
    parent id changes), as PyTorch's DataLoader workers watch theirs. That covers what no
    handler can: the parent killed by SIGKILL or the OOM killer."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _spawned_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` spawned processes (no forked torch state in them) whose workers
    are terminated if the block ends by an exception, SIGTERM included, and end by themselves
    if the parent dies outright; on a normal exit it waits for them as
    ``with ProcessPoolExecutor(...)`` does."""
    pool = _spawned_pool(workers)
    with sigterm_raises():
        try:
            yield pool
            pool.shutdown(wait=True)
        except BaseException:
            with _signals_ignored():
                terminate_workers(pool)
            raise


def isolated_calls(
    fn: Callable[..., Any], calls: Mapping[Hashable, tuple[Any, ...]], workers: int
) -> Iterator[tuple[Hashable, Any]]:
    """``fn(*args)`` for each ``key: args`` of ``calls``, each in a spawned process of its
    own, at most ``workers`` at a time; yields ``(key, result)`` as they end, the result
    being the exception where the call raised or its process died.

    One shared pool fails every call it holds once any worker dies (a run killed for
    memory, a crash in native code): ``BrokenProcessPool`` reaches the calls of the other
    workers, running or queued. Here such a death fails only its own call. The processes
    stop with the caller as :func:`process_pool`'s do (SIGTERM, Ctrl-C, an exception, or
    the generator closed early).
    """
    queue = list(calls.items())
    running: dict[Future, tuple[Hashable, ProcessPoolExecutor]] = {}
    with sigterm_raises():
        try:
            while queue or running:
                while queue and len(running) < workers:
                    key, args = queue.pop(0)
                    pool = _spawned_pool(1)
                    running[pool.submit(fn, *args)] = (key, pool)
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    key, pool = running.pop(future)
                    pool.shutdown(wait=True)
                    error = future.exception()
                    yield key, future.result() if error is None else error
        except BaseException:
            with _signals_ignored():
                for _, pool in running.values():
                    terminate_workers(pool)
            raise


__all__ = ["Terminated", "isolated_calls", "process_pool", "sigterm_raises", "terminate_workers"]
