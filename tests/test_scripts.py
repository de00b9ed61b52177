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


def run_script(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


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
        (["scripts/gpu_check.py", "--backbone", "vgg"], "argument --backbone: invalid choice"),
        (["scripts/build_gain_table.py", "--threads", "0"], "argument --threads"),
        # A rewrite of a kept table's affinities takes its protocol and file from the table.
        (
            ["scripts/build_gain_table.py", "--affinities-of", "t.json", "--out", "u.json"],
            "it takes none of --out",
        ),
        (
            ["scripts/build_gain_table.py", "--affinities-of", "no-such.json"],
            "--affinities-of no-such.json: no such table file",
        ),
    ],
)
def test_scripts_refuse_values_that_would_run_nothing(argv, message):
    done = run_script(*argv)
    assert done.returncode == 2 and message in done.stderr


def test_headroom_plot_without_kept_results_names_the_folder(tmp_path):
    done = run_script("scripts/headroom_agents.py", "--plot-only", "--out", str(tmp_path))
    assert done.returncode == 2 and f"--out {tmp_path}: no kept results" in done.stderr


def test_a_bad_bundle_size_fails_before_the_kept_wheels_are_touched(tmp_path, fake_data_root):
    wheels = tmp_path / "bundle" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "kept.whl").write_text("")
    bundle = ["scripts/offline_bundle.py", "--out", str(tmp_path / "bundle")]
    done = run_script(*bundle, "--data-root", str(fake_data_root), "--train", "5")
    assert done.returncode == 2 and "--train must be an image count" in done.stderr
    assert (wheels / "kept.whl").exists()
    # A package that is not installed (no version to pin) fails before them too.
    done = run_script(*bundle, "--no-data", "--packages", "gymnasium", "no-such-package")
    assert done.returncode == 2 and "--packages: 'no-such-package' not installed" in done.stderr
    assert (wheels / "kept.whl").exists()


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_headroom_curves_keep_their_seeds_and_leave_out_runs_without_one(tmp_path):
    from mtl_envs.io import atomic_write_json

    def keep(folder, **result):
        atomic_write_json(tmp_path / folder / "result.json", result)

    sac = {"method": "sac", "env_id": "LossWeighting-CubicScales-v1"}
    keep("sac/seed7", **sac, seed=7, curve=[1.0, 2.0])
    keep("sac/seed5", **sac, seed=5, curve=[3.0])
    keep("sac/runs=45/seed5", **sac, seed=5, curve=[3.0, 4.0, 5.0])  # the longest stands
    ppo = {"method": "ppo", "env_id": "AuxLabel-CIFAR100Small-v0", "seed": 0}
    keep("ppo/seed0", **ppo, epochs=[{"agent/reward": -1.0}, {"val/loss": 2.0}])
    keep("stl/seed0", **{**ppo, "method": "stl"}, epochs=[{"val/loss": 2.0}])  # no curve
    panels = _script("headroom_agents").kept_curves(tmp_path)
    sac_curves = {5: [3.0, 4.0, 5.0], 7: [1.0, 2.0]}
    assert panels == {
        "SAC on LossWeighting-CubicScales-v1": ("episode return", sac_curves),
        "PPO on AuxLabel-CIFAR100Small-v0": ("mean reward per batch of an episode", {0: [-1.0]}),
    }


def test_agent_actions_name_the_file_an_unfinished_run_lacks(tmp_path):
    actions = _script("auxlabel_agent_actions").agent_actions
    with pytest.raises(SystemExit, match="holds no agent.zip"):
        actions(tmp_path, None)
    (tmp_path / "agent.zip").write_bytes(b"")  # a run stopped before its result
    with pytest.raises(SystemExit, match="holds no result.json"):
        actions(tmp_path, None)


def test_bootstrap_coverage_counts_intervals_that_hold_the_true_iqm():
    from scripts.bootstrap_coverage import coverage

    held, trials = coverage(5, trials=40, reps=200)
    assert trials == 40 and 25 <= held <= 40  # about 90% of 40; never above all
    done = run_script("scripts/bootstrap_coverage.py", "--seeds", "1")
    assert done.returncode == 2 and "--seeds must each be 2 or more" in done.stderr
