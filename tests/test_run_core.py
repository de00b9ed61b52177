"""The run core and the commands around it: worker processes stop on SIGTERM and are killed
when they ignore it; checkpoints resume only the run that made them, with its RNG states and
times; result files keep the best epoch's metrics and the first divergence; the CLI's options
and overrides reach the runs."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import Counter, alive, fake_result

from harness.config import RunConfig
from mtl_envs.errors import ConfigError


# ---------------------------------------------------------------- helpers for worker processes
def _ignore_sigterm_then_sleep(folder: str, seconds: float) -> None:
    """A call that SIGTERM cannot stop (native code holding the signal, a stuck library)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (Path(folder) / str(os.getpid())).write_text("")
    time.sleep(seconds)


def _span(seconds: float) -> tuple[float, float]:
    start = time.monotonic()
    time.sleep(seconds)
    return start, time.monotonic()


def _wait_for_files(folder: Path, n: int, timeout: float = 60) -> set[int]:
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return {int(p.name) for p in folder.iterdir()}


# ---------------------------------------------------------------- workers.py
def test_terminated_exits_with_the_shells_sigterm_status():
    from harness.workers import Terminated

    assert Terminated().code == 128 + signal.SIGTERM == 143


def test_sigterm_raises_only_inside_the_block_and_the_handler_is_put_back():
    from harness.workers import Terminated, process_pool, sigterm_raises

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert signal.getsignal(signal.SIGTERM) is before
    with process_pool(1) as pool:
        assert pool.submit(pow, 2, 3).result() == 8
    assert signal.getsignal(signal.SIGTERM) is before


def test_running_workers_are_stopped_by_sigterm_not_left_for_the_kill_fallback(tmp_path):
    from worker_calls import mark_then_sleep

    from harness.workers import process_pool

    with pytest.raises(RuntimeError, match="parent failed"), process_pool(2) as pool:
        for _ in range(2):
            pool.submit(mark_then_sleep, str(tmp_path), 120)
        assert len(_wait_for_files(tmp_path, 2)) == 2
        processes = list(pool._processes.values())
        raise RuntimeError("parent failed")
    # Terminated at once (SIGTERM), not after a 10 s wait each and SIGKILL. The executor's
    # own thread may reap a worker beside terminate_workers: its status can land a moment
    # after the block ends, and a join that loses that race to the other thread's waitpid
    # returns with the exit code still unknown, so wait for the code itself.
    deadline = time.monotonic() + 10
    while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p.exitcode for p in processes] == [-signal.SIGTERM] * 2


def test_a_worker_that_ignores_sigterm_is_killed(tmp_path):
    from harness.workers import process_pool

    with pytest.raises(RuntimeError, match="parent failed"), process_pool(1) as pool:
        pool.submit(_ignore_sigterm_then_sleep, str(tmp_path), 120)
        (pid,) = _wait_for_files(tmp_path, 1)
        raise RuntimeError("parent failed")
    assert not alive(pid)  # SIGKILL after the 10 s grace


def test_a_normal_exit_returns_once_every_call_has_ended():
    from harness.workers import process_pool

    with process_pool(2) as pool:
        futures = [pool.submit(time.sleep, 1.0) for _ in range(2)]
        processes = list(pool._processes.values())
    assert all(f.done() for f in futures)
    assert not any(p.is_alive() for p in processes)


def test_isolated_calls_run_at_most_workers_at_a_time():
    from harness.workers import isolated_calls

    spans = dict(isolated_calls(_span, {k: (1.0,) for k in range(2)}, workers=1))
    ordered = sorted(spans.values())
    assert all(end <= start for (_, end), (start, _) in zip(ordered, ordered[1:]))


# ---------------------------------------------------------------- lifecycle.py / recording.py


def _toy_config(tmp_path, **changes) -> RunConfig:
    base = RunConfig(
        env_id="AuxLabel-Digits-v1",
        epochs=3,
        output_dir=str(tmp_path),
        tensorboard=False,
        progress=False,
        checkpoint_every=1,
    )
    return dataclasses.replace(base, **changes)


def _toy_run(config, *, crash_at=None, state="counter", extra=None, val=None, trained=None):
    """run_epochs on a counter; ``crash_at``: KeyboardInterrupt at the start of that (0-based)
    epoch, after the checkpoints of the epochs before it."""
    from harness.lifecycle import run_epochs

    counter = Counter()

    def train_epoch(epoch):
        if epoch == crash_at:
            raise KeyboardInterrupt
        counter.value += 1
        if trained is not None:
            trained.append(epoch)
        return {"train/loss": 1.0 / counter.value, "train/draw": float(torch.rand(()))}

    def evaluate(split):
        return {"accuracy": float(counter.value) if val is None else val}

    return run_epochs(
        config=config,
        method="toy",
        seed=0,
        train_epoch=train_epoch,
        evaluate=evaluate,
        extra=extra,
        state=counter if state == "counter" else state,
    )


def _checkpoint_path(tmp_path) -> Path:
    return tmp_path / "AuxLabel-Digits-v1/toy/seed0/checkpoint.pt"


def test_a_run_part_without_state_dict_is_refused():
    from harness.lifecycle import TrainingState, stateless

    class Labeller:
        pass

    with pytest.raises(TypeError, match=r"Run part 'labeller' \(Labeller\) has no state_dict"):
        TrainingState(learner=Counter(), labeller=Labeller())
    kept = TrainingState(learner=Counter(), labeller=stateless(Labeller()), agent=None)
    assert list(kept.parts) == ["learner"]


def test_checkpoint_every_is_run_control_and_may_change_on_resume(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _toy_run(_toy_config(tmp_path), crash_at=2)
    trained = []
    done = _toy_run(_toy_config(tmp_path, resume=True, checkpoint_every=2), trained=trained)
    assert trained == [2] and done["status"] == "completed"
    again = _toy_run(_toy_config(tmp_path, resume=True, checkpoint_every=5))
    assert again == done  # the finished run is reused


def test_made_with_needs_every_key_to_match(tmp_path):
    from harness.lifecycle import _comparable, made_with

    config = _toy_config(tmp_path)
    stored = _comparable(config)
    assert made_with(config, stored)
    assert made_with(dataclasses.replace(config, resume=True, seeds=[4]), stored)  # run control
    assert not made_with(dataclasses.replace(config, epochs=9), stored)  # one key differs
    assert not made_with(config, None)  # a result that records no config


def test_a_checkpoint_without_settings_is_not_continued_with_settings(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _toy_run(_toy_config(tmp_path), crash_at=2)  # checkpoint with settings {}
    with pytest.raises(ConfigError, match=r"checkpoint.pt from another config \(`agent` None"):
        _toy_run(_toy_config(tmp_path, resume=True), extra={"agent": {"gamma": 0.9}})


def test_without_resume_a_finished_run_is_run_again(tmp_path):
    first = _toy_run(_toy_config(tmp_path))
    trained = []
    second = _toy_run(_toy_config(tmp_path), trained=trained)
    assert trained == [0, 1, 2] and second["wall_time_s"] != first["wall_time_s"]


def test_without_resume_a_checkpoint_is_not_continued(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _toy_run(_toy_config(tmp_path), crash_at=2)
    trained = []
    result = _toy_run(_toy_config(tmp_path), trained=trained)
    assert trained == [0, 1, 2] and len(result["epochs"]) == 3


def test_resume_restores_the_global_rng_state(tmp_path):
    torch.manual_seed(0)
    reference = _toy_run(_toy_config(tmp_path / "ref"))
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        _toy_run(_toy_config(tmp_path / "cut"), crash_at=2)
    torch.manual_seed(0)  # a fresh process seeds as the run did at its start
    resumed = _toy_run(_toy_config(tmp_path / "cut", resume=True))
    draws = [[e["train/draw"] for e in r["epochs"]] for r in (reference, resumed)]
    assert draws[0] == draws[1]


def test_a_runner_without_state_cannot_resume_a_checkpoint(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _toy_run(_toy_config(tmp_path), crash_at=2)
    with pytest.raises(ConfigError, match=r"toy cannot resume from .*checkpoint.pt: it keeps no"):
        _toy_run(_toy_config(tmp_path, resume=True), state=None)


def test_resume_without_state_warns_that_it_starts_over(tmp_path):
    with pytest.warns(UserWarning, match="toy keeps no checkpoint; resume=true starts it over"):
        _toy_run(_toy_config(tmp_path, resume=True), state=None)


def test_ties_keep_the_first_best_epoch(tmp_path):
    result = _toy_run(_toy_config(tmp_path, checkpoint_every=0), val=0.5)
    assert result["best"]["epoch"] == 1


def test_times_before_the_checkpoint_count_in_the_resumed_result(tmp_path):
    from mtl_envs.io import load_checkpoint, save_checkpoint

    with pytest.raises(KeyboardInterrupt):
        _toy_run(_toy_config(tmp_path), crash_at=2)
    path = _checkpoint_path(tmp_path)
    payload = load_checkpoint(path)
    payload["recorder"]["elapsed"] = 1000.0  # as if the first process ran for 1000 s,
    payload["recorder"]["checkpoint_time"] = 100.0  # 100 of them writing checkpoints
    save_checkpoint(path, payload)
    result = _toy_run(_toy_config(tmp_path, resume=True))
    assert result["wall_time_s"] >= 1000.0
    assert result["checkpoint_time_s"] >= 100.0
    assert result["train_time_s"] >= 900.0 - result["eval_time_s"]


def test_result_json_is_replaced_whole_never_rewritten_in_place(tmp_path):
    _toy_run(_toy_config(tmp_path))
    path = tmp_path / "AuxLabel-Digits-v1/toy/seed0/result.json"
    snapshot = tmp_path / "snapshot.json"
    os.link(path, snapshot)  # a reader's view of the old file (same inode)
    old = snapshot.read_text()
    _toy_run(_toy_config(tmp_path, epochs=2))
    # A reader of the old file never sees it change under it: a new file was renamed into
    # place (a rewrite in place would truncate it first, and a crash would leave half).
    assert snapshot.read_text() == old
    assert len(json.loads(path.read_text())["epochs"]) == 2
    assert [p.name for p in path.parent.iterdir() if p.name != "result.json"] == []


def test_best_keeps_the_validation_metrics_of_its_epoch(tmp_path):
    result = _toy_run(_toy_config(tmp_path, eval_every=1, checkpoint_every=0))
    assert result["best"]["epoch"] == 3 and result["best"]["val/accuracy"] == 3.0


def test_the_first_divergence_is_the_one_recorded(tmp_path):
    from harness.recording import EpochRecorder

    recorder = EpochRecorder(_toy_config(tmp_path), "toy", 0, lambda split: {"accuracy": 1.0})
    recorder.mark_diverged(2)
    recorder.mark_diverged(3)
    recorder.close()
    assert recorder.diverged_epoch == 2


# ---------------------------------------------------------------- results.py


def test_a_result_without_its_own_times_and_best_takes_them_from_the_run(tmp_path):
    from harness.results import make_result, write_result

    config = RunConfig(output_dir=str(tmp_path), env_id="LossWeighting-Cubic-v1")
    final = {"test/mean_mse": 1.0}
    made = make_result(config, "ew", 0, final=final, wall_time_s=5.0)
    assert made["train_time_s"] == 5.0 and made["best"] == final
    best = {"test/mean_mse": 0.5, "epoch": 2}
    made = make_result(config, "ew", 0, final=final, best=best, wall_time_s=5.0, train_time_s=3.0)
    assert made["train_time_s"] == 3.0 and made["best"] == best
    written = write_result(config, "etap", 0, final, setting="B=2", wall_time_s=7.0)
    assert written["train_time_s"] == 7.0  # a search's T is its whole time
    on_disk = json.loads(
        (tmp_path / "LossWeighting-Cubic-v1/etap/B=2/seed0/result.json").read_text()
    )
    assert on_disk["train_time_s"] == 7.0 and on_disk["setting"] == "B=2"


def test_a_result_records_how_many_runs_shared_the_machine(tmp_path):
    from harness.results import concurrent_runs, make_result

    config = RunConfig(output_dir=str(tmp_path), env_id="LossWeighting-Cubic-v1")
    final = {"test/mean_mse": 1.0}
    assert make_result(config, "ew", 0, final=final)["concurrent_runs"] == 1  # alone
    with concurrent_runs(3):
        assert make_result(config, "ew", 0, final=final)["concurrent_runs"] == 3
        with concurrent_runs(None):  # a Ray cluster: not known
            assert make_result(config, "ew", 0, final=final)["concurrent_runs"] is None
        assert make_result(config, "ew", 0, final=final)["concurrent_runs"] == 3
    assert make_result(config, "ew", 0, final=final)["concurrent_runs"] == 1


def test_one_seed_at_two_settings_is_two_runs(tmp_path):
    from harness.results import load_results

    for setting in ("B=2", "B=3"):
        path = tmp_path / "etap" / setting / "seed0" / "result.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(fake_result("etap", 0, 0.5, setting=setting)))
    assert sorted(r["setting"] for r in load_results([tmp_path])) == ["B=2", "B=3"]


# ---------------------------------------------------------------- cli.py
def _write_config(tmp_path, **values):
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def fake_probe_runs(monkeypatch):
    """The (env kwargs, policy, seed) of each run a probe starts, none of them trained."""
    from harness import probe as probe_module
    from harness.probe import ProbeRun

    ran = []

    def fake_run(env_id, env_kwargs, name, seed, *rest):
        ran.append((dict(env_kwargs), name, seed))
        return ProbeRun(name, seed, 1.0, 0.5, 0.5, 1.0)

    monkeypatch.setattr(probe_module, "_probe_run", fake_run)
    return ran


def test_an_unknown_option_with_a_value_is_not_taken_for_an_override(tmp_path, capsys):
    from harness.cli import main

    config = _write_config(tmp_path, method="ew", env_id="LossWeighting-Cubic-v1")
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(config), "--epochs=2"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --epochs=2" in capsys.readouterr().err


def test_probe_overrides_may_follow_its_options_and_data_root_reaches_the_runs(
    tmp_path, fake_probe_runs
):
    from harness.cli import main

    out = tmp_path / "probe.json"
    data = str(tmp_path / "data")
    argv = ["probe", "LossWeighting-Cubic-v1", "--seeds", "1", "--policies", "random"]
    assert main([*argv, "--out", str(out), "--data-root", data, "epochs=3"]) == 0
    assert fake_probe_runs == [({"epochs": 3, "data_root": data}, "random", 0)]
    written = json.loads(out.read_text())
    assert written["env_kwargs"] == {"epochs": 3}  # the machine's data path is not kept
    assert not out.with_name("probe.json.partial").exists()  # the finished probe's runs


def test_sweep_data_root_reaches_every_run(tmp_path, monkeypatch):
    import harness.sweep
    from harness.cli import main

    config = tmp_path / "sweep.yaml"
    config.write_text(
        "base: {env_id: LossWeighting-Cubic-v1, epochs: 3}\ngrid: {method: [ew]}\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    seen = []

    def fake_sweep(sweep, progress):
        seen.append(sweep.base_values())
        return {"done": ["ew"], "skipped": [], "failed": []}

    monkeypatch.setattr(harness.sweep, "run_sweep", fake_sweep)
    assert main(["sweep", str(config), "--data-root", str(tmp_path / "data")]) == 0
    assert seen[0]["env_kwargs"]["data_root"] == str(tmp_path / "data")


def test_compare_which_best_reads_the_best_epoch(tmp_path, capsys):
    from harness.cli import main
    from mtl_envs.io import atomic_write_json

    for seed in (0, 1):
        result = fake_result("ew", seed, 0.5, best={"test/accuracy": 0.9, "epoch": 1})
        atomic_write_json(tmp_path / f"ew/seed{seed}/result.json", result)
    assert main(["compare", str(tmp_path), "--which", "best"]) == 0
    out = capsys.readouterr().out
    assert "90.00" in out and "50.00" not in out


def test_run_prints_no_normalized_score_off_the_reference_protocol():
    from harness.cli import _normalized

    def run(epochs):
        return {
            "method": "ew",
            "env_id": "LossWeighting-CubicScales-v1",
            "seed": 0,
            "final": {"test/mean_nmse": 0.3},
            "config": {"epochs": epochs, "env_kwargs": {}},
            "epochs": [{"epoch": e + 1} for e in range(epochs)],
        }

    env_id, metric = "LossWeighting-CubicScales-v1", "test/mean_nmse"
    assert _normalized(env_id, metric, 0.3, run(100)).startswith(" (normalized ")
    assert _normalized(env_id, metric, 0.3, run(8)) == (
        " (not normalized: trained under another protocol than the reference scores)"
    )


# ---------------------------------------------------------------- timing.py
def test_timed_counts_calls_and_adds_time_even_when_the_call_raises():
    from harness.timing import CALLS, TIMERS, reset_timers, timed

    reset_timers()

    def boom():
        time.sleep(0.01)
        raise ValueError("boom")

    slow = timed("slow", lambda: time.sleep(0.01))
    slow()
    slow()
    with pytest.raises(ValueError):
        timed("boom", boom)()
    assert CALLS == {"slow": 2, "boom": 1}
    assert TIMERS["slow"] >= 0.02 and TIMERS["boom"] >= 0.01
    reset_timers()
    assert not CALLS and not TIMERS


def test_checkpoints_fall_every_checkpoint_every_epochs(tmp_path):
    from mtl_envs.io import load_checkpoint

    with pytest.raises(KeyboardInterrupt):
        _toy_run(_toy_config(tmp_path, epochs=5, checkpoint_every=2), crash_at=3)
    assert load_checkpoint(_checkpoint_path(tmp_path))["epoch"] == 2  # after epochs 2, 4, ...
    trained = []
    _toy_run(_toy_config(tmp_path, epochs=5, checkpoint_every=2, resume=True), trained=trained)
    assert trained == [2, 3, 4]
