"""Worker processes end with the block that started them, however it ends."""

from __future__ import annotations

import time

import pytest
from conftest import alive
from worker_calls import mark_then_sleep

from harness.workers import process_pool


def test_an_error_in_the_parent_stops_the_running_workers(tmp_path):
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="parent failed"), process_pool(2) as pool:
        running = [pool.submit(mark_then_sleep, str(tmp_path), 120) for _ in range(2)]
        queued = pool.submit(time.sleep, 120)
        # Wait until both workers are inside their call (each has left its file).
        deadline = time.monotonic() + 60
        while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = {int(p.name) for p in tmp_path.iterdir()}
        assert len(pids) == 2
        raise RuntimeError("parent failed")
    # Not the 120 s a plain executor's exit would wait for the running calls.
    assert time.monotonic() - start < 60
    assert not any(alive(pid) for pid in pids)
    # The running calls fail and the queued one is dropped, rather than left pending
    # (a cancelled future counts as done, though wait() only sees it once notified).
    futures = [*running, queued]
    deadline = time.monotonic() + 30
    while not all(f.done() for f in futures) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(f.cancelled() or f.exception(timeout=0) is not None for f in futures)


def test_a_normal_exit_waits_for_the_results():
    with process_pool(2) as pool:
        futures = [pool.submit(pow, 2, k) for k in range(5)]
    assert [f.result() for f in futures] == [1, 2, 4, 8, 16]
