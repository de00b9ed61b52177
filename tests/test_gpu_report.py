"""The GPU check's report tables: steady epochs and 200-epoch hours worked by hand, skipped
and failed parts shown with their reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.gpu_report import format_gpu_report, steady_seconds


def test_steady_epoch_is_the_median_after_the_first():
    assert steady_seconds([30.0, 18.0, 22.0, 20.0]) == 20.0  # the 30 s start-up epoch left out
    assert steady_seconds([30.0, 18.0]) == 18.0
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
                "cudnn_deterministic": True,
            },
            "human": {"skipped": "about 90 s exceeds its share"},
            "maxl": {"error": "RuntimeError: Expected all tensors to be on the same device"},
        },
        "batched_vector": {
            "LossWeighting-Cubic-v1": {
                "where": "cuda:0",
                "max_rel_diff_obs": 2.5e-7,
                "max_rel_diff_reward": 3.0e-6,
                "single_steps_per_s": 410.4,
                "steps_per_s": {"8": 3000.2, "32": 11000.7},
            }
        },
        "precision": {
            "amp=False channels_last=False": {
                "epoch_seconds": [9.0, 4.0, 5.0],
                "test_accuracy": 0.2534,
            },
            "amp=True channels_last=True": {"skipped": "out of budget"},
        },
        "ids": {"AuxLabel-Digits-v0": "ok on cuda:0 (0.3 s)"},
    }


def test_report_tables_work_out_the_hours_and_keep_the_reasons():
    text = format_gpu_report(_report())
    assert text.startswith("Device: NVIDIA H200; torch 2.11.0, CUDA 13.0, bfloat16 True.")
    assert "tiled to full size from 10000 real images (timings only)" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    # stl: steady 20 s, so 200 epochs are 200 * 20 / 3600 = 1.11 h.
    assert rows["stl"] == "| stl | 4 epochs | 30.0 | 20.0 | 6.0 | 1.11 |  |"
    # ppo: one later cycle of 55 s; 200 cycles are 200 * 55 / 3600 = 3.06 h.
    assert rows["ppo"].startswith("| ppo | 2 cycles | 60.0 | 55.0 | 6.5 | 3.06 |")
    assert rows["ppo"].endswith(
        "| ppo updates 40.0 s, rollout 12.0 s, train-main 5.5 s per cycle; "
        "cuDNN deterministic (SB3's seeding sets it) |"
    )
    assert rows["human"].endswith("about 90 s exceeds its share |")
    assert "Expected all tensors to be on the same device" in rows["maxl"]
    cubic = rows["LossWeighting-Cubic-v1"]
    assert (
        cubic
        == "| LossWeighting-Cubic-v1 | cuda:0 | 2.5e-07 | 3.0e-06 | 410 | K=8: 3000, K=32: 11001 |"
    )
    # The precision run's steady epoch is the median of 4 and 5 s.
    assert (
        rows["amp=False channels_last=False"]
        == "| amp=False channels_last=False | 3 | 4.50 | 25.34 |"
    )
    assert rows["amp=True channels_last=True"].endswith("| out of budget |")
    assert rows["AuxLabel-Digits-v0"] == "| AuxLabel-Digits-v0 | ok on cuda:0 (0.3 s) |"


@pytest.mark.parametrize("section", ["protocol", "batched_vector", "precision", "ids"])
def test_a_section_that_never_ran_says_why(section):
    report = _report()
    report[section] = {"error": "ValueError: boom"}
    assert "ValueError: boom" in format_gpu_report(report)


def _gpu_check(data_root, out, *args: str) -> dict:
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    command = [sys.executable, str(script), "--data-root", str(data_root), "--subset", "100"]
    command += ["--protocol-epochs", "2", "--epochs", "1", "--out", str(out), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "No CUDA device" in done.stdout
    report = json.loads(out.read_text())
    assert report["device"]["cuda"] is False
    return report


def test_gpu_check_runs_on_the_cpu_within_a_small_budget(fake_data_root, tmp_path):
    sections = ["--sections", "protocol", "precision", "ids", "--budget-s", "10"]
    report = _gpu_check(fake_data_root, tmp_path / "gpu.json", *sections)
    assert "batched_vector" not in report
    # stl always runs (it sets the scale); each other method ran or says why not.
    assert len(report["protocol"]["stl"]["epoch_seconds"]) == 2
    for method in ("ppo", "human", "maxl"):
        run = report["protocol"][method]
        assert len(run.get("epoch_seconds", [])) in (1, 2) or run["skipped"]
    first = report["precision"]["amp=False channels_last=False"]
    assert len(first["epoch_seconds"]) == 1 and 0.0 <= first["test_accuracy"] <= 1.0
    assert report["ids"]["AuxLabel-CIFAR10-v0"].startswith("ok on cpu")


@pytest.mark.slow
def test_gpu_check_every_section_on_the_cpu(fake_data_root, tmp_path):
    report = _gpu_check(fake_data_root, tmp_path / "gpu.json", "--budget-s", "120")
    cubic = report["batched_vector"]["LossWeighting-Cubic-v1"]
    assert cubic["where"] == "cpu" and cubic["max_rel_diff_obs"] < 1e-4
    assert set(cubic["steps_per_s"]) == {"8", "32"}
    for env_id, status in report["ids"].items():
        if "CIFAR100Small" in env_id:  # a 5,000-image subset of the fake files' 200 images
            assert "train_subset" in status
        else:
            assert status.startswith(("ok", "skipped")), (env_id, status)
