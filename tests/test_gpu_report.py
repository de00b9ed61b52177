"""The GPU check's report tables: steady epochs and 200-epoch hours worked by hand, skipped
and failed parts shown with their reason."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.gpu_report import format_gpu_report, steady_seconds


def test_steady_epoch_is_the_median_after_the_first():
    assert steady_seconds([30.0, 18.0, 22.0, 20.0]) == 20.0  # the 30 s start-up epoch left out
    assert steady_seconds([30.0, 18.0]) == 18.0
    # The median, not the mean (17.0 here), so that one slow epoch does not move it.
    assert steady_seconds([40.0, 30.0, 10.0, 11.0, 30.0, 10.0]) == 11.0
    assert steady_seconds([12.5]) == 12.5  # one epoch: all there is


def _report() -> dict:
    return {
        "device": {
            "torch": "2.11.0",
            "cuda": True,
            "device": "NVIDIA H200",
            "cuda_version": "13.0",
            "bf16": True,
        },
        "budget_s": 420,
        "elapsed_s": 401.2,
        "data": {"train_images": 45000, "tiled_from": 10000},
        "protocol": {
            "stl": {"epoch_seconds": [30.0, 18.0, 22.0, 20.0], "eval_seconds": 6.0},
            "ppo": {
                "epoch_seconds": [60.0, 55.0],
                "eval_seconds": 6.5,
                "split": {"ppo updates": 40.0, "rollout": 12.0, "train-main": 5.5},
                "agent_backbone": "vgg16",
                "cudnn_deterministic": True,
            },
            "human": {"epoch_seconds": [24.0], "eval_seconds": 6.1},
            "maxl": {
                "epoch_seconds": [50.0, 40.0],
                "eval_seconds": None,
                "stopped": "stopped after 2 epochs: out of time",
            },
        },
        "batched_vector": {
            "LossWeighting-Cubic-v1": {
                "where": "cuda:0",
                "max_rel_diff_obs": 2.5e-7,
                "max_rel_diff_reward": 3.0e-6,
                "single_steps_per_s": 410.4,
                "steps_per_s": {"32": 11000.7, "8": 3000.2},  # JSON files sort their keys
            },
            "LossWeighting-Digits10-v1": {"error": "RuntimeError: Expected all tensors on cuda"},
        },
        "precision": {
            "amp=False channels_last=False": {
                "epoch_seconds": [9.0, 4.0, 5.0],
                "test_accuracy": 0.2534,
            },
            "amp=True channels_last=True": {"skipped": "out of budget"},
        },
        "ids": {"AuxLabel-Digits-v1": "ok on cuda:0 (0.3 s)"},
    }


def test_report_tables_work_out_the_hours_and_keep_the_reasons():
    text = format_gpu_report(_report())
    assert text.startswith(
        "Device: NVIDIA H200; torch 2.11.0, CUDA 13.0, bfloat16 True. Budget 420 s, used 401 s."
    )
    assert "tiled to full size from 10000 real images (timings only)" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    # The methods in the protocol's order, whatever the JSON's.
    methods = [name for name in rows if name in ("stl", "ppo", "human", "maxl")]
    assert methods == ["stl", "human", "maxl", "ppo"]
    # stl: steady 20 s, so 200 epochs are 200 * 20 / 3600 = 1.11 h.
    assert rows["stl"] == "| stl | 4 epochs | 30.0 | 20.0 | 6.0 | 1.11 |  |"
    # ppo: one later cycle of 55 s; 200 cycles are 200 * 55 / 3600 = 3.06 h.
    assert rows["ppo"].startswith("| ppo | 2 cycles | 60.0 | 55.0 | 6.5 | 3.06 |")
    # Against two steady stl epochs: 55 / (2 * 20) = 1.375.
    assert rows["ppo"].endswith(
        "| cycle / two stl epochs 1.38; ppo updates 40.0 s, rollout 12.0 s, "
        "train-main 5.5 s per cycle; agent backbone vgg16; "
        "cuDNN deterministic (SB3's seeding sets it) |"
    )
    # human: one epoch, so no steady epoch; 200 * 24 / 3600 = 1.33 h is an upper bound.
    assert rows["human"] == "| human | 1 epoch | 24.0 | - | 6.1 | <= 1.33 |  |"
    # maxl stopped for time before its evaluation: 200 * 40 / 3600 = 2.22 h.
    assert (
        rows["maxl"]
        == "| maxl | 2 epochs | 50.0 | 40.0 | - | 2.22 | stopped after 2 epochs: out of time |"
    )
    assert "Expected all tensors on cuda" in rows["LossWeighting-Digits10-v1"]
    cubic = rows["LossWeighting-Cubic-v1"]
    assert (
        cubic
        == "| LossWeighting-Cubic-v1 | cuda:0 | 2.5e-07 | 3.0e-06 | 410 | K=8: 3000, K=32: 11001 |"
    )
    # The precision run's steady epoch is the median of 4 and 5 s.
    assert (
        rows["amp=False channels_last=False"]
        == "| amp=False channels_last=False | 3 | 4.50 | 25.34 |  |"
    )
    assert rows["amp=True channels_last=True"].endswith("| out of budget |")
    assert rows["AuxLabel-Digits-v1"] == "| AuxLabel-Digits-v1 | ok on cuda:0 (0.3 s) |"


def test_device_line_names_the_tf32_flags_and_a_missing_cuda_device():
    report = _report()
    report["device"].update(tf32_convolutions=True, tf32_matmuls=False)
    assert format_gpu_report(report).splitlines()[0] == (
        "Device: NVIDIA H200; torch 2.11.0, CUDA 13.0, bfloat16 True, TF32 convolutions True, "
        "matmuls False. Budget 420 s, used 401 s."
    )
    report["device"] = {"torch": "2.11.0", "cuda": False}
    assert format_gpu_report(report).splitlines()[0] == (
        "Device: no CUDA device (CPU); torch 2.11.0. Budget 420 s, used 401 s."
    )


def test_hours_only_for_the_papers_training_set():
    report = _report()
    report["data"] = {"train_images": 500}
    text = format_gpu_report(report)
    stl = next(line for line in text.splitlines() if line.startswith("| stl"))
    assert stl == "| stl | 4 epochs | 30.0 | 20.0 | 6.0 | - |  |"
    assert "Protocol data: 500 training images, as given." in text.splitlines()


def test_a_section_stopped_part_way_keeps_its_rows_and_says_why():
    report = _report()
    report["errors"] = {"ids": "RuntimeError: CUDA error: out of memory"}
    text = format_gpu_report(report)
    assert "| AuxLabel-Digits-v1 | ok on cuda:0 (0.3 s) |" in text
    assert text.rstrip().endswith("ids stopped early: RuntimeError: CUDA error: out of memory.")


@pytest.mark.parametrize(
    ("section", "title"),
    [
        ("protocol", "Protocol timings"),
        ("batched_vector", "Batched vector form"),
        ("precision", "Precision options"),
        ("ids", "Every id stepped"),
    ],
)
def test_a_section_that_never_ran_says_why(section, title):
    report = _report()
    report[section] = {"error": "ValueError: boom"}
    lines = format_gpu_report(report).splitlines()
    assert f"{title}: skipped (ValueError: boom)." in lines
    assert not any(line.startswith("| error |") for line in lines)  # not a row of its own


def _gpu_check_module():
    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_protocol(
    monkeypatch,
    budget: float,
    fail_stl: bool = False,
    deadlines: dict | None = None,
    tiled: bool = False,
    saved: list | None = None,
) -> dict:
    """run_protocol with runs that take no time: an stl epoch 'costs' 10 s, its evaluation
    5 s and its start-up 2 s, so the epochs each method gets follow from the shares.
    ``saved`` gets a copy of the results at every save."""
    gpu_check = _gpu_check_module()

    def fake_run(method, env_kwargs, epochs, out, seconds):
        if fail_stl and method == "stl":
            raise RuntimeError("no kernel image is available")
        if deadlines is not None:
            deadlines[method] = seconds
        return {
            "epoch_seconds": [10.0] * epochs,
            "eval_seconds": 5.0,
            "wall_seconds": 10 * epochs + 7,
            "test_accuracy": 0.5,
        }

    monkeypatch.setattr(gpu_check, "timed_run", fake_run)
    results: dict = {}
    save = lambda: saved is not None and saved.append(json.loads(json.dumps(results)))  # noqa: E731
    return gpu_check.run_protocol({}, tiled, 3, budget, "out", results, save)


def _protocol_epochs(monkeypatch, budget: float, **kwargs) -> dict:
    results = _run_protocol(monkeypatch, budget, **kwargs)
    return {m: len(r.get("epoch_seconds", [])) for m, r in results.items()}


def test_protocol_epochs_follow_the_budget_shares(monkeypatch):
    # Budget 200 s; shares 0.15 / 0.5 / 0.1 / 0.25 of the time left, each against the rest.
    # ppo: 200 * 0.5 / 0.85 = 117.6 s < 7 + 14 * 10 = 147 s for a cycle, but 147 < 0.8 * 200:
    # one cycle. human: 200 * 0.1 / 0.35 = 57.1 s, (57.1 - 7) // 12 = 4 -> 3 (the cap).
    # maxl: all 200 s, (200 - 7) // 30 = 6 -> 3.
    deadlines: dict[str, float] = {}
    epochs = _protocol_epochs(monkeypatch, 200.0, deadlines=deadlines)
    assert epochs == {"stl": 3, "ppo": 1, "human": 3, "maxl": 3}
    # Each run stops at its epoch's end past its own deadline: stl may take all the time
    # left, the one PPO cycle 0.8 of it, the others their shares (the fake runs take none).
    assert deadlines["stl"] == pytest.approx(200.0, abs=0.5)
    assert deadlines["ppo"] == pytest.approx(160.0, abs=0.5)
    assert deadlines["human"] == pytest.approx(200 * 0.1 / 0.35, abs=0.5)
    # Budget 150 s: 147 s is over 0.8 * 150, so no cycle; human (42.9 - 7) // 12 = 2.
    assert _protocol_epochs(monkeypatch, 150.0) == {"stl": 3, "ppo": 0, "human": 2, "maxl": 3}


def test_without_stl_the_others_run_one_epoch_each(monkeypatch):
    results = _run_protocol(monkeypatch, 200.0, fail_stl=True)
    assert results["stl"] == {"error": "RuntimeError: no kernel image is available"}
    epochs = {m: len(r.get("epoch_seconds", [])) for m, r in results.items()}
    assert epochs == {"stl": 0, "ppo": 1, "human": 1, "maxl": 1}


def test_each_run_is_saved_as_running_before_it_starts(monkeypatch):
    """A check killed during a run leaves the run's marker; once done, its measurements."""
    saved: list = []
    results = _run_protocol(monkeypatch, 200.0, saved=saved)
    assert saved[0] == {"stl": {"running": "3 epochs from 0 s"}}
    assert saved[1] == {"stl": results["stl"]}
    assert saved[2] == {"stl": results["stl"], "ppo": {"running": "1 epochs from 0 s"}}
    assert saved[-1] == results and results["stl"]["test_accuracy"] == 0.5


def test_tiled_data_keeps_no_test_accuracy(monkeypatch):
    """Tiled copies of test images were trained on: their accuracy means nothing."""
    results = _run_protocol(monkeypatch, 200.0, tiled=True)
    assert set(results) == {"stl", "ppo", "human", "maxl"}
    assert not any("test_accuracy" in run for run in results.values())
    assert results["stl"]["eval_seconds"] == 5.0


def test_precision_runs_start_only_while_the_longest_so_far_fits(monkeypatch):
    gpu_check = _gpu_check_module()
    calls, walls = [], iter([10.0, 150.0])

    def fake_run(method, env_kwargs, epochs, out, seconds):
        calls.append((method, env_kwargs, epochs, out, seconds))
        return {"epoch_seconds": [1.0] * epochs, "wall_seconds": next(walls)}

    monkeypatch.setattr(gpu_check, "timed_run", fake_run)
    results = gpu_check.run_precision({"backbone": "x"}, 2, 100.0, "out", {}, lambda: None)
    # The second run's 150 s no longer fit in the 100 s left: the last two are skipped.
    assert [(c[1]["amp"], c[1]["channels_last"]) for c in calls] == [(False, False), (False, True)]
    assert all(c[0] == "stl" and c[1]["backbone"] == "x" and c[2] == 2 for c in calls)
    assert [c[3] for c in calls] == [
        "out/amp=False channels_last=False",
        "out/amp=False channels_last=True",
    ]
    assert all(c[4] == pytest.approx(100.0, abs=1.0) for c in calls)
    assert list(results) == [
        "amp=False channels_last=False",
        "amp=False channels_last=True",
        "amp=True channels_last=False",
        "amp=True channels_last=True",
    ]
    assert results["amp=True channels_last=False"] == {"skipped": "out of budget"}
    assert results["amp=True channels_last=True"] == {"skipped": "out of budget"}


def test_ppo_split_is_the_mean_of_the_cycles_after_the_first():
    ppo_split = _gpu_check_module().ppo_split
    # TIMERS are running totals: cycle 2 learns 5 s (3 s of updates), cycle 3 6 s (4 s).
    timers = [
        {"learn": 6.0, "ppo_updates": 4.0},
        {"learn": 11.0, "ppo_updates": 7.0},
        {"learn": 17.0, "ppo_updates": 11.0},
    ]
    split = ppo_split([10.0, 8.0, 9.0], timers)
    assert split == {"ppo updates": 3.5, "rollout": 2.0, "train-main": 3.0}
    # One cycle: that one, start-up and all.
    assert ppo_split([10.0], timers[:1]) == {"ppo updates": 4.0, "rollout": 2.0, "train-main": 4.0}


def test_timed_run_keeps_the_epochs_and_why_a_run_stopped(monkeypatch):
    gpu_check = _gpu_check_module()
    calls = []

    def fake_run_quietly(method, env_id, **kwargs):
        calls.append((method, env_id, kwargs))
        gpu_check.CLOCK.seconds += [10.0, 8.0]
        gpu_check.CLOCK.timers += [{"learn": 6.0, "ppo_updates": 4.0}] * 2
        if method == "stl":
            raise gpu_check.OutOfTime("stopped after 2 epochs: out of time")
        return {"eval_time_s": 3.0, "final": {"test/accuracy": 0.25}}

    monkeypatch.setattr(gpu_check, "run_quietly", fake_run_quietly)
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        ppo = gpu_check.timed_run("ppo", {"backbone": "small_cnn"}, 3, "out/ppo", 60.0)
        stl = gpu_check.timed_run("stl", {"backbone": "small_cnn"}, 3, "out/stl", 60.0)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    assert calls[0] == (
        "ppo",
        gpu_check.PROTOCOL_ID,
        {
            "env_kwargs": {"backbone": "small_cnn"},
            "epochs": 3,
            "eval_every": 3,
            "output_dir": "out/ppo",
        },
    )
    assert ppo["eval_seconds"] == 3.0 and ppo["test_accuracy"] == 0.25
    assert ppo["epoch_seconds"] == [10.0, 8.0] and ppo["agent_backbone"] == "small_cnn"
    assert ppo["split"] == {"ppo updates": 0.0, "rollout": 0.0, "train-main": 8.0}
    # The clock starts afresh for each run; a run stopped for time has no evaluation.
    assert stl["epoch_seconds"] == [10.0, 8.0] and stl["eval_seconds"] is None
    assert stl["stopped"] == "stopped after 2 epochs: out of time"
    assert not {"test_accuracy", "split", "agent_backbone"} & set(stl)


def test_relative_differences_are_against_the_single_envs_largest_value():
    rel = _gpu_check_module()._max_rel_diff
    assert rel(np.array([1.0, 2.5]), np.array([1.0, -2.0])) == pytest.approx(4.5 / 2.0)
    assert rel(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == pytest.approx(0.25)
    assert rel(np.array([1e-12]), np.zeros(1)) == pytest.approx(1.0)  # no division by zero


def test_a_section_that_fails_part_way_keeps_what_it_wrote(monkeypatch, tmp_path, capsys):
    """The check's own loop over sections: a section that raises after writing some rows
    keeps them, with its error under ``errors``; one that wrote nothing is the error."""
    from harness.recording import EpochRecorder

    gpu_check = _gpu_check_module()
    # main() patches these process-wide: put them back after the test.
    for name in ("set_random_seed", "learn", "train"):
        monkeypatch.setattr(gpu_check.PPO, name, getattr(gpu_check.PPO, name))
    monkeypatch.setattr(EpochRecorder, "record", EpochRecorder.record)
    cubic = _report()["batched_vector"]["LossWeighting-Cubic-v1"]

    def part_way(budget, results):
        results["LossWeighting-Cubic-v1"] = cubic
        raise RuntimeError("CUDA error: out of memory")

    def at_once(budget, results):
        raise RuntimeError("CUDA error: out of memory")

    out = tmp_path / "gpu.json"
    argv = ["gpu_check.py", "--sections", "batched_vector", "--budget-s", "5", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(gpu_check, "check_batched_vector", part_way)
    gpu_check.main()
    report = json.loads(out.read_text())
    assert report["batched_vector"] == {"LossWeighting-Cubic-v1": cubic}
    assert report["errors"] == {"batched_vector": "RuntimeError: CUDA error: out of memory"}
    monkeypatch.setattr(gpu_check, "check_batched_vector", at_once)
    gpu_check.main()
    report = json.loads(out.read_text())
    assert report["batched_vector"] == {"error": "RuntimeError: CUDA error: out of memory"}
    assert "errors" not in report
    assert "Batched vector form: skipped (RuntimeError: CUDA error: out of memory)." in (
        capsys.readouterr().out
    )


@pytest.fixture(scope="module")
def two_batch_data_root(tmp_path_factory) -> Path:
    """Fake data with 300 CIFAR-100 training images: a 200-image subset gives two batches of
    100, the fewest in which RL-AUX's PPO rollouts can compare batch rewards. Every dataset
    holds 300 training images, so that each id's training split (270 after validation) has
    room for the reward's default batch of 256 distinct images."""
    from conftest import write_fake_cifar10, write_fake_cifar100, write_fake_svhn

    root = tmp_path_factory.mktemp("data_two_batches")
    write_fake_cifar100(root, per_fine=3)
    write_fake_cifar10(root, per_batch=60)
    write_fake_svhn(root, n_train=300)
    return root


def _gpu_check(data_root, out, *args: str) -> dict:
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    command = [sys.executable, str(script), "--data-root", str(data_root), "--subset", "200"]
    command += ["--protocol-epochs", "2", "--epochs", "1", "--out", str(out), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "No CUDA device" in done.stdout
    report = json.loads(out.read_text())
    assert report["device"]["cuda"] is False
    return report


def test_gpu_check_runs_on_the_cpu(two_batch_data_root, tmp_path):
    sections = ["--sections", "protocol", "precision", "--budget-s", "300"]
    report = _gpu_check(two_batch_data_root, tmp_path / "gpu.json", *sections)
    assert "batched_vector" not in report and "ids" not in report
    assert report["data"] == {"train_images": 200}
    for method in ("stl", "ppo", "human", "maxl"):  # 300 s: plenty for 200 images, busy CPU too
        run = report["protocol"][method]
        assert len(run["epoch_seconds"]) == 2 and 0.0 <= run["test_accuracy"] <= 1.0
    assert set(report["protocol"]["ppo"]["split"]) == {"ppo updates", "rollout", "train-main"}
    for run in report["precision"].values():
        assert len(run["epoch_seconds"]) == 1 and 0.0 <= run["test_accuracy"] <= 1.0


@pytest.mark.slow
def test_gpu_check_every_section_on_the_cpu(two_batch_data_root, tmp_path):
    report = _gpu_check(two_batch_data_root, tmp_path / "gpu.json", "--budget-s", "240")
    cubic = report["batched_vector"]["LossWeighting-Cubic-v1"]
    assert cubic["where"] == "cpu" and cubic["max_rel_diff_obs"] < 1e-4
    assert set(cubic["steps_per_s"]) == {"8", "32"}
    for env_id, status in report["ids"].items():
        if "CIFAR100Small" in env_id:  # a 5,000-image subset of the fake files' 300 images
            assert "train_subset" in status
        else:
            assert status.startswith(("ok", "skipped")), (env_id, status)


def test_a_runs_deadline_never_passes_the_checks_end():
    clock = _gpu_check_module().EpochClock()
    clock.end = time.perf_counter() + 100.0
    clock.deadline(3, 10.0)
    assert clock.stop_at < clock.end - 80 and clock.epochs == 3
    clock.deadline(3, 1_000.0)
    assert clock.stop_at == clock.end


def test_past_its_deadline_a_run_stops_only_where_another_epoch_would_follow(monkeypatch):
    gpu_check = _gpu_check_module()
    recorded = []
    monkeypatch.setattr(gpu_check.EpochRecorder, "record", lambda r, e, m: recorded.append(e))
    clock = gpu_check.EpochClock()
    clock.install()
    recorder = SimpleNamespace(start=time.perf_counter())
    clock.deadline(1, -1.0)  # already past it
    gpu_check.EpochRecorder.record(recorder, 0, {})  # the last epoch: recorded, evaluated
    assert recorded == [0]
    clock.clear()
    clock.deadline(2, -1.0)
    with pytest.raises(gpu_check.OutOfTime, match="after 1 epochs"):
        gpu_check.EpochRecorder.record(recorder, 0, {})  # a second epoch would follow


def test_runs_stopped_or_killed_keep_their_rows():
    report = _report()
    report["precision"]["amp=True channels_last=False"] = {
        "epoch_seconds": [9.0, 4.0],
        "stopped": "stopped after 2 epochs: out of time",
        "eval_seconds": None,
    }
    report["protocol"]["maxl"] = {"running": "3 epochs from 120 s"}
    rows = {
        line.split(" | ")[0].lstrip("| "): line for line in format_gpu_report(report).splitlines()
    }
    assert rows["amp=True channels_last=False"] == (
        "| amp=True channels_last=False | 2 | 4.00 | - | stopped after 2 epochs: out of time |"
    )
    assert rows["maxl"].endswith("| killed while running (3 epochs from 120 s) |")


def test_ppo_seeding_leaves_the_cudnn_flags_as_they_were(monkeypatch):
    gpu_check = _gpu_check_module()

    def deterministic_seeding(self, seed=None):  # what SB3 does when it seeds on CUDA
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    monkeypatch.setattr(gpu_check.PPO, "set_random_seed", deterministic_seeding)
    monkeypatch.setattr(gpu_check, "CUDNN_DEFAULTS", (False, True))
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        gpu_check._restore_cudnn_flags_after_seeding()
        gpu_check.PPO.set_random_seed(None, 0)
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags


def test_the_flags_are_restored_on_sb3_ppos_own_seeding_path(monkeypatch):
    """Building a real PPO goes through the wrapper: SB3 seeds in ``_setup_model``."""
    import gymnasium as gym

    gpu_check = _gpu_check_module()
    monkeypatch.setattr(gpu_check.PPO, "set_random_seed", gpu_check.PPO.set_random_seed)
    monkeypatch.setattr(gpu_check, "CUDNN_DEFAULTS", (False, True))
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        gpu_check._restore_cudnn_flags_after_seeding()
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        gpu_check.PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=8, batch_size=8, seed=0)
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
