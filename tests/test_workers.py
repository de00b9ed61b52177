"""Worker processes end with the block that started them, however it ends."""

from __future__ import annotations

import time

import pytest
from conftest import alive
from worker_calls import exit_if_negative, mark_then_sleep

from harness.workers import isolated_calls, process_pool


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


def test_a_dead_worker_fails_only_its_own_call():
    # In one shared pool the death of key "a"'s process fails every call: BrokenProcessPool.
    calls = {"a": (-1,), "b": (1,), "c": (2,), "d": (3,)}
    results = dict(isolated_calls(exit_if_negative, calls, workers=2))
    assert isinstance(results.pop("a"), Exception)
    assert results == {"b": 1, "c": 2, "d": 3}


def test_closing_isolated_calls_early_stops_the_running_ones(tmp_path):
    calls = {
        "slow1": (str(tmp_path), 120),
        "slow2": (str(tmp_path), 120),
        "fast": (str(tmp_path), 0),
    }
    start = time.monotonic()
    finished = isolated_calls(mark_then_sleep, calls, workers=3)
    assert next(finished) == ("fast", None)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.iterdir())) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = {int(p.name) for p in tmp_path.iterdir()}
    finished.close()
    assert time.monotonic() - start < 60
    assert len(pids) == 3 and not any(alive(pid) for pid in pids)
