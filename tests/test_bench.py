"""Benchmark reports: rows kept as JSON after every case, and the docs table built from them."""

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.bench import (
    BenchReport,
    command_line,
    float_at_least,
    format_bench_table,
    int_at_least,
)

ROOT = Path(__file__).resolve().parents[1]


def test_report_is_written_after_every_row(tmp_path, monkeypatch):
    out = tmp_path / "sub" / "bench.json"
    argv = ["/x/benchmarks/demo.py", "--data-root", "/data/somewhere", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    config = ROOT / "configs" / "quickstart.yaml"
    args = argparse.Namespace(
        repeats=3, config=config, other=Path("/elsewhere/x.yaml"), data_root="/d", out=str(out)
    )
    report = BenchReport.from_args("demo", args)
    report.add("case a", "1.05 (2.1 s / 2.0 s)", "<= 1.15", ratio=1.05)
    first = json.loads(out.read_text())
    assert [row["case"] for row in first["rows"]] == ["case a"]
    with open(out) as reader:  # opened before the next row: it reads the report it opened
        report.add("case b", "3 steps/s", rate=3.0)
        assert json.load(reader) == first
    kept = json.loads(out.read_text())
    assert kept["benchmark"] == "demo"
    assert kept["command"] == f"benchmarks/demo.py --data-root DIR --out {out}"
    assert kept["date"] == datetime.date.today().isoformat()
    assert 0 <= kept["seconds"] < 60
    # The data folder is a machine's path, not an option of the measurement; a file of the
    # project is named by its path in the project.
    assert kept["args"] == {
        "repeats": 3,
        "config": "configs/quickstart.yaml",
        "other": "/elsewhere/x.yaml",
    }
    assert kept["rows"][0] == {
        "case": "case a",
        "measured": "1.05 (2.1 s / 2.0 s)",
        "target": "<= 1.15",
        "values": {"ratio": 1.05},
    }
    assert kept["rows"][1]["target"] == ""
    assert {"python", "torch", "torch_threads", "cpus", "cuda"} <= set(kept["machine"])
    assert kept["machine"]["cpus"] == os.cpu_count()
    assert not list(out.parent.glob(".*.tmp"))  # nothing half-written left beside it


def test_report_without_file_keeps_rows_in_memory():
    report = BenchReport("demo")
    report.add("case", "1.0")
    assert report.out is None and len(report.rows) == 1


def test_row_needs_case_and_measured_text():
    for case, measured in (("", "1.0"), ("case", "")):
        with pytest.raises(ValueError, match="case and a measured text"):
            BenchReport("demo").add(case, measured)


def test_command_line_hides_the_data_folder():
    argv = ["/x/benchmarks/ppo_cycle.py", "--data-root", "/home/me/data", "--out", "b.json"]
    assert command_line(argv) == "benchmarks/ppo_cycle.py --data-root DIR --out b.json"
    assert command_line(["eval_share.py", "--data-root=/d"]) == (
        "benchmarks/eval_share.py --data-root=DIR"
    )


def test_table_from_kept_reports():
    machine = {"cpus": 2, "torch_threads": 2, "cuda": None}
    reports = [
        {
            "benchmark": "one",
            "command": "benchmarks/one.py",
            "date": "2026-12-02",
            "seconds": 12.4,
            "machine": {**machine, "cpu": "AMD EPYC"},
            "rows": [
                {"case": "a", "measured": "1.0", "target": "<= 2", "values": {}},
                {"case": "b", "measured": "2.0", "target": "", "values": {}},
            ],
        },
        {
            "benchmark": "two",
            "command": "benchmarks/two.py --x 1",
            "date": "2026-12-03",
            "seconds": 60,
            "machine": {**machine, "cuda": "NVIDIA H200"},  # kept before the CPU was
            "rows": [{"case": "c", "measured": "3.0", "target": ">= 1", "values": {}}],
        },
    ]
    reports[0]["rows"][1]["case"] = "|G| = 5"  # a pipe would end the markdown cell
    reports[1]["rows"][0].update(measured="3.0 (|G| = 2)", target=">= |G|")
    assert format_bench_table(reports) == (
        "| benchmark | case | measured | target |\n"
        "|---|---|---|---|\n"
        "| `one.py` | a | 1.0 | <= 2 |\n"
        "|  | \\|G\\| = 5 | 2.0 |  |\n"
        "| `two.py` | c | 3.0 (\\|G\\| = 2) | >= \\|G\\| |\n"
        "\n"
        "* `benchmarks/one.py`: 2026-12-02, AMD EPYC, 2 CPUs, torch threads 2, 12 s\n"
        "* `benchmarks/two.py --x 1`: 2026-12-03, CPU model not recorded, 2 CPUs, torch threads "
        "2, NVIDIA H200, 60 s\n"
    )


def run_benchmark(name: str, argv: list[str], out: Path) -> dict:
    """Run ``benchmarks/NAME.py ARGV --out OUT`` and return the report it kept."""
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{name}.py", *argv, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_a_benchmark_writes_its_rows(tmp_path):
    out = tmp_path / "vector_throughput.json"
    argv = ["--steps", "2", "--rounds", "2", "--num-envs", "2", "--ids", "LossWeighting-Cubic-v1"]
    kept = run_benchmark("vector_throughput", argv, out)
    assert kept["args"]["num_envs"] == [2] and kept["command"].endswith(str(out))
    (row,) = kept["rows"]
    (case,) = row["values"]["cases"]
    assert case["k"] == 2 and case["sync"] > 0 and case["batched"] > 0
    # The text shown in the docs is the raw numbers, formatted.
    assert row["measured"].startswith(f"{case['ratio']:.2f} [{case['iqr'][0]:.2f}, ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--only", "nope"], "--only: unknown benchmark(s) ['nope']; choose from"),
        (["--only", "ppo_cycle"], "--data-root (or MTL_ENVS_DATA)"),
        (["--only", "ppo_cycle", "--data-root", "/nowhere"], "holds no cifar-100-python folder"),
    ],
)
def test_run_all_refuses_bad_arguments(argv, message):
    proc = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "", "HOME": str(ROOT)},
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def test_lockstep_trains_ew_to_each_epoch_igbv2_closes_and_times_each_side(monkeypatch):
    """``benchmarks/igbv2_full_run.py``: at each epoch IGBv2's run records, EW trains up to the
    same epoch; each side's block is timed apart, from the recorder's start (IGBv2's env and
    agent are built before it), evaluation (inside ``record``) in neither."""
    spec = importlib.util.spec_from_file_location(
        "igbv2_full_run", ROOT / "benchmarks" / "igbv2_full_run.py"
    )
    full_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(full_run)
    from harness.recording import EpochRecorder

    clock = [0.0]
    monkeypatch.setattr(full_run.time, "perf_counter", lambda: clock[0])

    class Learner:  # EW: an epoch costs 2 s
        epoch = 0

        def train_epoch(self):
            self.epoch += 1
            clock[0] += 2.0

    def record(recorder, epoch, metrics):  # IGBv2's recorder: evaluating costs 5 s
        clock[0] += 5.0
        return {"epoch": epoch + 1}

    def init(recorder):  # building IGBv2's env and agent before it costs 7 s
        clock[0] += 7.0

    monkeypatch.setattr(EpochRecorder, "__init__", init)
    monkeypatch.setattr(EpochRecorder, "record", record)
    lockstep = full_run.Lockstep(Learner())
    restore = lockstep.install()
    try:
        recorder = EpochRecorder()
        clock[0] += 9.0  # two warm-up epochs and the first env epoch, 3 s each
        assert recorder.record(2, {}) == {"epoch": 3}
        assert lockstep.learner.epoch == 3
        clock[0] += 3.0
        recorder.record(3, {})
    finally:
        restore()
    assert EpochRecorder.record is record and EpochRecorder.__init__ is init
    assert lockstep.epochs == [3, 4] and lockstep.learner.epoch == 4
    assert lockstep.igbv2_s == [9.0, 3.0] and lockstep.ew_s == [6.0, 2.0]


# Every benchmark, cut to seconds: it runs and keeps one row per case it measured.
SMALL = {
    "etap_prediction": (["--draws", "1"], 3),
    "memory_episodes": (["--episodes", "1", "--warmup", "1"], 3),
    "affinity_cost": (["--epochs", "1", "--repeats", "1"], 4),
    "aux_label_overhead": (["--repeats", "1", "--min-seconds", "0"], 1),
    "ppo_cycle": (["--n-epochs", "1"], 1),
    "loss_weighting_cost": (
        ["--epochs", "7", "--repeats", "2", "--interleave-rounds", "2", "--interleave-steps", "5"],
        7,
    ),
    "eval_share": (["--every", "1", "2"], 2),
    "igbv2_full_run": (["--env-id", "LossWeighting-Digits10-v1", "--epochs", "7"], 1),
}


def test_run_all_knows_every_benchmark():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    BENCHMARKS, NEEDS_DATA = run_all.BENCHMARKS, run_all.NEEDS_DATA
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"run_all"}
    assert set(BENCHMARKS) == scripts
    assert scripts >= NEEDS_DATA
    assert set(SMALL) | {"vector_throughput"} == scripts


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_benchmark_keeps_its_rows(name, tmp_path, fake_data_root):
    argv, rows = SMALL[name]
    if name == "eval_share":  # the CPU comparison's protocol, cut to the fake files' size
        config = tmp_path / "eval_share.yaml"
        config.write_text(
            "env_id: AuxLabel-CIFAR100-v1\nenv_kwargs: {backbone: small_cnn}\n"
            "epochs: 2\neval_every: 2\n"
        )
        argv = [*argv, "--config", str(config), "--data-root", str(fake_data_root)]
    if name == "loss_weighting_cost":  # with CIFAR100MTL on the fake files
        argv = [*argv, "--data-root", str(fake_data_root)]
    kept = run_benchmark(name, argv, tmp_path / f"{name}.json")
    assert kept["benchmark"] == name and len(kept["rows"]) == rows
    assert all(row["case"] and row["measured"] for row in kept["rows"])
    if name == "loss_weighting_cost":
        check_configured_run_t(kept["rows"][-1]["values"], fake_data_root)
    if name == "igbv2_full_run":
        check_lockstep(kept["rows"][0]["values"])


def check_lockstep(t: dict) -> None:
    """EW trained every epoch IGBv2 did, block by block, and T divides the two sums."""
    # Digits10 has two warm-up epochs: the first block closes epoch 3, then one per epoch.
    assert t["block_epochs"] == list(range(3, t["epochs"] + 1))
    assert t["ew_train_s"] == pytest.approx(sum(t["block_ew_s"]))
    assert t["t_igbv2"] == pytest.approx(t["igbv2_train_s"] / t["ew_train_s"])
    ratios = [a / b for a, b in zip(t["block_igbv2_s"], t["block_ew_s"])]
    assert t["block_ratios"] == pytest.approx(ratios)
    later = sum(t["block_igbv2_s"][1:]) / sum(t["block_ew_s"][1:])
    assert t["t_after_first_block"] == pytest.approx(later)


def check_configured_run_t(full: dict, data_root: Path) -> None:
    """The extrapolated T adds the priced SAC steps and actions to the measured loop, over
    the counts of the configured schedule."""
    import gymnasium as gym

    from agents.sac_lossweighting import run_gradient_steps, schedule_steps

    env = gym.make("LossWeighting-CIFAR100MTL-v1", data_root=str(data_root)).unwrapped
    batches = env.learner.num_batches
    env.close()
    assert full["epochs"] == 50 and full["network_steps"] == 50 * batches
    assert full["env_steps"] == 48 * batches
    start, _ = schedule_steps(4, 6, warmup_epochs=2, batches=batches)
    assert full["sac_gradient_steps"] == run_gradient_steps(48 * batches, start, 50, 50, 10_000)
    assert full["sac_s"] == pytest.approx(
        full["sac_gradient_steps"] * full["ms_per_update_priced"] / 1e3
    )
    assert full["ew_s"] == pytest.approx(full["network_steps"] * full["ms_per_network_step"] / 1e3)
    assert full["sac_share"] == pytest.approx(full["sac_s"] / full["ew_s"])
    assert full["actions_share"] == pytest.approx(full["actions_s"] / full["ew_s"])
    # The env steps' excess over a network step is carried per env step: 48 of the
    # configured 50 epochs have env steps.
    excess = full["env_steps"] * (full["interleaved_ratio"] - 1)
    assert full["loop_ratio"] == pytest.approx(1 + excess / full["network_steps"])
    env_share = full["env_steps"] * full["ms_env_per_step"]
    assert full["loop_env_timed"] == pytest.approx(
        1 + env_share / (full["network_steps"] * full["ms_per_network_step"])
    )
    shares = full["sac_share"] + full["actions_share"]
    assert full["t_igbv2"] == pytest.approx(full["loop_ratio"] + shares)
    assert full["t_igbv2_env_timed"] == pytest.approx(full["loop_env_timed"] + shares)


def test_count_arguments_refuse_values_that_measure_nothing():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int_at_least(1))
    parser.add_argument("--warmup", type=int_at_least(0))
    assert parser.parse_args(["--rounds", "3", "--warmup", "0"]).rounds == 3
    for argv in (["--rounds", "0"], ["--warmup", "-1"], ["--rounds", "two"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


def test_run_all_replaces_a_kept_report_only_when_its_benchmark_succeeds(tmp_path):
    """A benchmark that fails part-way leaves the kept report as it was (its finished rows
    would otherwise stand in for the whole benchmark) and says so."""
    kept = tmp_path / "ppo_cycle.json"
    kept.write_text('{"kept": true}')
    data = tmp_path / "data"
    (data / "cifar-100-python").mkdir(parents=True)  # present, but no files: ppo_cycle fails
    proc = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--only", "ppo_cycle", "--data-root", str(data)]
        + ["--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "kept reports are unchanged" in proc.stdout
    assert kept.read_text() == '{"kept": true}'


def test_float_arguments_refuse_nan_and_values_below_the_minimum():
    parser = argparse.ArgumentParser()
    parser.add_argument("--min-seconds", type=float_at_least(0))
    assert parser.parse_args(["--min-seconds", "0"]).min_seconds == 0.0
    for text in ("nan", "inf", "-1", "soon"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--min-seconds", text])
