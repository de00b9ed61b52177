"""The scripts' arguments: values that would measure or train nothing are refused by the
parser, naming the flag, before anything runs or any kept file is touched."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import float_above

ROOT = Path(__file__).resolve().parents[1]


def test_float_above_refuses_the_bound_and_what_is_not_finite():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float_above(0))
    assert parser.parse_args(["--lr", "3e-4"]).lr == 3e-4
    for bad in ("0", "-1", "nan", "inf", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--lr", bad])


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["scripts/headroom_agents.py", "--lr", "0"],
            "argument --lr: expected a finite number > 0",
        ),
        # The tuning seed cannot be a reported one.
        (["scripts/headroom_agents.py", "--seeds", "0", "100"], "--seeds: 100 is the seed"),
        (["scripts/gpu_check.py", "--budget-s", "-1"], "argument --budget-s"),
        (["scripts/build_gain_table.py", "--threads", "0"], "argument --threads"),
    ],
)
def test_scripts_refuse_values_that_would_run_nothing(argv, message):
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and message in done.stderr


def test_headroom_plot_without_kept_results_names_the_folder(tmp_path):
    done = subprocess.run(
        [sys.executable, "scripts/headroom_agents.py", "--plot-only", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and f"--out {tmp_path}: no kept results" in done.stderr


def test_a_bad_bundle_size_fails_before_the_kept_wheels_are_touched(tmp_path, fake_data_root):
    wheels = tmp_path / "bundle" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "kept.whl").write_text("")
    done = subprocess.run(
        [sys.executable, "scripts/offline_bundle.py", "--data-root", str(fake_data_root)]
        + ["--out", str(tmp_path / "bundle"), "--train", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--train must be an image count" in done.stderr
    assert (wheels / "kept.whl").exists()
