"""Worker processes end with the block that started them, however it ends."""

from __future__ import annotations

import os
import time
from concurrent.futures import wait

import pytest
from conftest import alive

from harness.workers import process_pool


def test_an_error_in_the_parent_stops_the_running_workers():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="parent failed"), process_pool(2) as pool:
        first = pool.submit(os.getpid)
        pids = {first.result(), pool.submit(os.getpid).result()}
        running = [pool.submit(time.sleep, 120) for _ in range(2)]
        queued = pool.submit(time.sleep, 120)
        time.sleep(0.5)  # both workers are inside their sleep
        raise RuntimeError("parent failed")
    # Not the 120 s a plain executor's exit would wait for the running calls.
    assert time.monotonic() - start < 60
    assert not any(alive(pid) for pid in pids)
    # The running calls fail and the queued one is dropped, rather than left pending.
    done, pending = wait([*running, queued], timeout=30)
    assert not pending
    assert all(f.cancelled() or f.exception() is not None for f in done)


def test_a_normal_exit_waits_for_the_results():
    with process_pool(2) as pool:
        futures = [pool.submit(pow, 2, k) for k in range(5)]
    assert [f.result() for f in futures] == [1, 2, 4, 8, 16]
