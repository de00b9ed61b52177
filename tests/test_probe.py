"""The policy-sensitivity probe: its statistics on hand-worked runs and its documented output
on tiny settings of two families."""

from __future__ import annotations

import json
import math
import signal

import pytest
from conftest import alive

from harness.cli import main
from harness.probe import ProbeRun, format_headroom_table, format_probe, summarize_probe
from mtl_envs.errors import ConfigError


def _run(policy: str, seed: int, ret: float, test: float, oracle: bool = False) -> ProbeRun:
    return ProbeRun(policy, seed, ret, test, test, 1.0, oracle=oracle)


def test_headroom_and_rho_on_hand_worked_runs():
    runs = [
        _run("random", 0, 2.0, 0.30),
        _run("random", 1, 1.0, 0.32),
        _run("equal", 0, 4.0, 0.20),
        _run("equal", 1, 3.0, 0.24),
        _run("optimal", 0, 6.0, 0.10, oracle=True),
        _run("optimal", 1, 5.0, 0.12, oracle=True),
    ]
    summary = summarize_probe(runs, "mean_nmse")  # lower is better
    assert summary["higher_is_better"] is False
    equal = summary["policies"]["equal"]
    assert equal["mean"] == pytest.approx(0.22)
    assert equal["std"] == pytest.approx(math.sqrt(0.0008))  # deviations +-0.02, ddof 1
    # With the oracle: (0.31 - 0.11) / sqrt((0.0002 + 0.0002) / 2).
    assert summary["headroom"]["best"] == "optimal"
    assert summary["headroom"]["best_is_oracle"] is True
    assert summary["headroom"]["value"] == pytest.approx(0.20 / math.sqrt(0.0002))
    # Without: equal, (0.31 - 0.22) / sqrt((0.0008 + 0.0002) / 2).
    assert summary["headroom_fair"]["best"] == "equal"
    assert summary["headroom_fair"]["value"] == pytest.approx(0.09 / math.sqrt(0.0005))
    # Every run of equal and of optimal beats every run of random: 4 pairs of 4.
    assert summary["headroom"]["p_improvement"] == 1.0
    assert summary["headroom_fair"]["p_improvement"] == 1.0
    # Seed by seed (0.20 < 0.30, 0.24 < 0.32): equal wins both, exact interval [0.025^0.5, 1].
    paired = summary["headroom_fair"]["same_seed"]
    assert (paired["wins"], paired["seeds"]) == (2, 2)
    assert paired["ci"] == pytest.approx([math.sqrt(0.025), 1.0])
    # The best policy against each other one: optimal (0.10, 0.12) is below equal on both
    # seeds; the best non-oracle policy, equal, beats the oracle on neither.
    vs = summary["headroom"]["same_seed_vs"]
    assert list(vs) == ["equal"] and (vs["equal"]["wins"], vs["equal"]["seeds"]) == (2, 2)
    vs = summary["headroom_fair"]["same_seed_vs"]
    assert list(vs) == ["optimal"] and (vs["optimal"]["wins"], vs["optimal"]["seeds"]) == (0, 2)
    # Returns rise exactly as the error falls: rho = 1; reversing one pair of returns (3 and
    # 4, adjacent ranks) gives 1 - 6 * 2 / (6 * 35) = 0.943.
    assert summary["spearman_rho"] == pytest.approx(1.0)
    runs[2], runs[3] = _run("equal", 0, 3.0, 0.20), _run("equal", 1, 4.0, 0.24)
    assert summarize_probe(runs, "mean_nmse")["spearman_rho"] == pytest.approx(1 - 12 / 210)


def test_undefined_headroom_is_nan_and_a_diverged_policy_is_never_the_best():
    # A diverged run (NaN test error) makes its policy's mean NaN: whatever the order of the
    # policies, the best one is the one with a number, (0.30 - 0.20) / sqrt(0.0002 / 2) = 10.
    runs = [_run("random", s, 1.0, t) for s, t in ((0, 0.30), (1, 0.30))]
    good = [_run("good", 0, 3.0, 0.19), _run("good", 1, 4.0, 0.21)]
    bad = [_run("bad", 0, 5.0, math.nan), _run("bad", 1, 6.0, 0.10)]
    for order in (runs + bad + good, runs + good + bad):
        head = summarize_probe(order, "mean_nmse")["headroom"]
        assert head["best"] == "good"
        assert head["value"] == pytest.approx(0.10 / math.sqrt(0.0001))
    # A tie without spread is no headroom, not -inf.
    tie = runs + [_run("equal", s, 2.0, 0.30) for s in (0, 1)]
    assert summarize_probe(tie, "mean_nmse")["headroom"]["value"] == 0.0
    # One seed has no spread: NaN std, interval and headroom rather than a certain zero width.
    one = summarize_probe([_run("random", 0, 1.0, 0.30), _run("good", 0, 2.0, 0.29)], "mean_nmse")
    assert math.isnan(one["policies"]["good"]["std"])
    assert all(math.isnan(x) for x in one["policies"]["good"]["ci95"])
    assert math.isnan(one["headroom"]["value"])


def test_probability_of_improvement_on_hand_worked_runs():
    # Lower is better. igbv1 [0.10, 0.25, 0.30] against random [0.25, 0.40, 3.00]: 0.10 beats
    # all three, 0.25 ties 0.25 (one half) and beats two, 0.30 beats two: 7.5 of 9 pairs.
    runs = [
        *(_run("random", k, 0.0, v) for k, v in enumerate([0.25, 0.40, 3.00])),
        *(_run("igbv1", k, 0.0, v) for k, v in enumerate([0.10, 0.25, 0.30])),
    ]
    head = summarize_probe(runs, "mean_nmse")["headroom"]
    assert head["p_improvement"] == pytest.approx(7.5 / 9)
    # random's far run (3.00) holds the headroom under 1; the ranks do not see how far it is.
    assert head["value"] < 1.0
    far = [*runs[:2], _run("random", 2, 0.0, 30.0), *runs[3:]]
    assert summarize_probe(far, "mean_nmse")["headroom"]["p_improvement"] == pytest.approx(7.5 / 9)


def test_iqm_and_bootstrap_intervals_on_hand_worked_runs():
    # IQM of five runs drops int(5 / 4) = 1 at each end: [0.1, 0.2, 0.3, 0.4, 10] -> 0.3.
    runs = [
        *(_run("random", k, 0.0, v) for k, v in enumerate([0.30, 10.0, 0.10, 0.40, 0.20])),
        *(_run("igbv1", k, 0.0, v) for k, v in enumerate([0.05, 0.15, 0.25, 0.35, 0.45])),
    ]
    summary = summarize_probe(runs, "mean_nmse")
    value, low, high = summary["policies"]["random"]["iqm"]
    assert value == pytest.approx(0.3)
    assert 0.10 <= low <= value <= high <= 10.0
    # igbv1 against random (lower wins): 0.05 beats 5, 0.15 beats 4, 0.25 beats 3, 0.35
    # beats 2, 0.45 beats 1 of 5: 15 of 25 pairs.
    head = summary["headroom"]
    assert head["p_improvement"] == pytest.approx(15 / 25)
    assert 0.0 <= head["p_improvement_ci"][0] < 15 / 25 < head["p_improvement_ci"][1] <= 1.0
    # Runs that do not overlap: no resample reorders them, so the interval is [1, 1].
    apart = [*runs[:5], *(_run("igbv1", k, 0.0, 0.01 * k) for k in range(5))]
    assert summarize_probe(apart, "mean_nmse")["headroom"]["p_improvement_ci"] == [1.0, 1.0]
    # Four runs: the IQM drops one at each end, [0.1, 0.2, 0.3, 10] -> 0.25, and neither
    # bootstrap interval is given (a bootstrap of so few covers far less than 95%).
    four = [r for r in runs if r.seed != 3]
    few = summarize_probe(four, "mean_nmse")
    assert few["policies"]["random"]["iqm"] == [pytest.approx(0.25), None, None]
    assert few["headroom"]["p_improvement_ci"] is None
    assert few["headroom"]["p_improvement"] == pytest.approx(10 / 16)
    text = format_probe({**few, "env_id": "Toy-v0", "protocol": {"seeds": [0, 1, 2, 4]}})
    assert "0.2500 [5+ seeds]" in text and "P(igbv1 beats random) 0.62 [5+ seeds]" in text
    # The same seeds give the same intervals (rliable's bootstrap is seeded).
    assert summarize_probe(runs, "mean_nmse") == summary


@pytest.mark.parametrize(
    ("argv", "policies"),
    [
        (
            ["TaskGrouping-Digits10Scarce-v1", "--seeds", "2", "--policies", "random", "optimal"],
            {"random", "optimal"},
        ),
        (
            ["LossWeighting-Cubic-v1", "epochs=3", "--seeds", "2", "--policies", "random", "equal"],
            {"random", "equal"},
        ),
    ],
)
def test_probe_command_writes_the_documented_fields(tmp_path, capsys, argv, policies):
    out = tmp_path / "probe.json"
    main(["probe", *argv, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "headroom" in printed and "Spearman rho" in printed
    summary = json.loads(out.read_text())
    assert summary["env_id"] == argv[0]
    assert summary["protocol"]["seeds"] == [0, 1]
    assert set(summary["policies"]) == policies
    for stats in summary["policies"].values():
        assert stats["n"] == 2
        assert stats["ci95"][0] <= stats["mean"] <= stats["ci95"][1]
        assert {"std", "return_mean", "return_std", "seconds_mean", "oracle"} <= set(stats)
    assert len(summary["runs"]) == 4
    assert math.isfinite(summary["headroom"]["value"])
    assert -1.0 <= summary["spearman_rho"] <= 1.0
    assert summary["policies"].get("optimal", {"oracle": True})["oracle"] is True
    assert summary["policies"]["random"]["oracle"] is False
    # Per-seed numbers repeat only on the same kernels: the probe records which ran it.
    assert {"torch", "cpu", "cpu_capability", "torch_threads"} <= set(summary["platform"])
    if "equal" in policies:  # each seed its own run: a fixed policy scores differently
        tests = {r["seed"]: r["test"] for r in summary["runs"] if r["policy"] == "equal"}
        assert tests[0] != tests[1]


def test_probe_in_worker_processes_matches_the_serial_probe():
    from harness.probe import probe

    kwargs = {"epochs": 3}
    args = ("LossWeighting-Cubic-v1", kwargs, ["random", "equal"], range(2))
    serial = probe(*args, progress=False)
    parallel = probe(*args, progress=False, jobs=2)
    key = lambda run: (run["policy"], run["seed"])  # noqa: E731
    assert [key(r) for r in parallel["runs"]] == [key(r) for r in serial["runs"]]
    assert parallel["platform"]["torch_threads"] == 1
    for a, b in zip(serial["runs"], parallel["runs"]):
        # One torch thread per worker sums in another order than the serial run's threads.
        assert b["test"] == pytest.approx(a["test"], rel=1e-4)
        assert b["episode_return"] == pytest.approx(a["episode_return"], rel=1e-4)
    with pytest.raises(ValueError, match="`jobs` must be a positive int"):
        probe(*args, progress=False, jobs=0)


def test_headroom_table_on_hand_worked_probes():
    from harness.compare import same_seed_wins

    def probe(env_id, fair, rho, seconds, episodes=1, best_fixed=None, platform=None, paired=None):
        runs = [{"policy": "random", "seconds": s} for s in seconds]
        if best_fixed is not None:  # one run of 4 constant weight vectors
            runs.append({"policy": "best_fixed", "seconds": best_fixed})
        # The best policy overall; an oracle on the second id, which the row says.
        oracle = env_id.startswith("AuxLabel")
        best = {"best": "human" if oracle else "best_fixed", "best_is_oracle": oracle}
        return {
            "env_id": env_id,
            "headroom": {"value": 5.0, **best},
            "headroom_fair": {
                "value": fair,
                "p_improvement": 0.75,
                **({"same_seed": same_seed_wins(*paired)} if paired else {}),
            },
            "spearman_rho": rho,
            "protocol": {"episodes": episodes, "seeds": list(range(len(seconds)))},
            "runs": runs,
            **({"platform": platform} if platform else {}),
        }

    table = format_headroom_table(
        [
            probe(
                "LossWeighting-Cubic-v1",
                4.0,
                0.9,
                [2.0, 3.0],
                best_fixed=20.0,
                platform={"cpu_capability": "AVX2"},
                paired=({0: 2.0, 1: 1.0}, {0: 1.0, 1: 1.0}),  # one win, one tie
            ),
            probe("AuxLabel-Digits-v1", 2.5, 0.7, [280.0, 300.0], episodes=2),
        ]
    ).splitlines()
    # 20 s over 4 vectors is 5 s per episode; 300 s over 2 epochs is 150 s per episode.
    assert table[2] == (
        "| LossWeighting | `LossWeighting-Cubic-v1` | 2 | AVX2 | 5.00 best_fixed (4.00) | 0.75 "
        "| 1/1 (1 tied) [0.03, 1.00] | 0.90 | 2.0-5.0 | yes |"
    )
    # A probe from before platforms were recorded says so.
    assert table[3] == (
        "| AuxLabel | `AuxLabel-Digits-v1` | 2 | not recorded | 5.00 human [oracle] (2.50) | 0.75 "
        "| - | 0.70 "
        "| 140.0-150.0 | "
        "no: headroom < 3, rho < 0.8, episodes > 120 s |"
    )
    # With no policy but oracles beside random, the id is judged on none of their headroom.
    only_oracles = probe("AuxLabel-Digits-v1", 9.0, 0.9, [2.0, 3.0])
    del only_oracles["headroom_fair"]
    assert format_headroom_table([only_oracles]).splitlines()[2] == (
        "| AuxLabel | `AuxLabel-Digits-v1` | 2 | not recorded | 5.00 human [oracle] (-) | - | - "
        "| 0.90 | 2.0-3.0 | no: no policy without oracles |"
    )

    # Undefined numbers fail their test: NaN headroom (one seed), NaN rho (a diverged run) and
    # no rho at all (every return equal); a probe without random has no headroom to judge.
    undefined = probe("LossWeighting-Cubic-v1", math.nan, math.nan, [2.0, 3.0])
    assert (
        format_headroom_table([undefined])
        .splitlines()[2]
        .endswith(
            "| 5.00 best_fixed (nan) | 0.75 | - | nan | 2.0-3.0 | no: headroom < 3, rho < 0.8 |"
        )
    )
    del undefined["spearman_rho"], undefined["headroom"], undefined["headroom_fair"]
    assert (
        format_headroom_table([undefined])
        .splitlines()[2]
        .endswith("| - (-) | - | - | nan | 2.0-3.0 | no: no random policy, rho < 0.8 |")
    )


CUBIC_PROBE = ["LossWeighting-Cubic-v1", "epochs=3", "--seeds", "2", "--policies", "random"]


@pytest.fixture
def one_thread():
    """Runs in this process on one torch thread, as the killed CLI children run: a probe
    resumes only runs of the same platform record, thread count included."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_stopped_probe_resumes_and_runs_only_what_it_lacks(
    tmp_path, run_killed, one_thread, monkeypatch
):
    import harness.probe as probe_module

    out = tmp_path / "probe.json"
    argv = ["probe", *CUBIC_PROBE, "equal", "--out", str(out)]
    # SIGKILL as the second of four runs ends, before the probe could record it.
    assert run_killed("harness.probe:_probe_run", 2, argv) == -signal.SIGKILL
    partial = tmp_path / "probe.json.partial"
    assert not out.exists()
    assert [(r["policy"], r["seed"]) for r in json.loads(partial.read_text())["runs"]] == [
        ("random", 0)
    ]
    calls = []
    original = probe_module._probe_run
    monkeypatch.setattr(
        probe_module, "_probe_run", lambda *task: calls.append(task[2:4]) or original(*task)
    )
    main(argv)
    assert calls == [("random", 1), ("equal", 0), ("equal", 1)]
    assert not partial.exists()
    resumed = json.loads(out.read_text())
    monkeypatch.setattr(probe_module, "_probe_run", original)
    main([*argv[:-1], str(tmp_path / "fresh.json")])
    fresh = json.loads((tmp_path / "fresh.json").read_text())
    drop = lambda run: {k: v for k, v in run.items() if k != "seconds"}  # noqa: E731
    # Same kernels and threads: the resumed probe equals an unbroken one to the last digit.
    assert [drop(r) for r in resumed["runs"]] == [drop(r) for r in fresh["runs"]]
    assert resumed["headroom"] == fresh["headroom"]


def test_a_checkpoint_of_another_protocol_is_not_mixed_in(tmp_path, monkeypatch):
    import harness.probe as probe_module

    path = tmp_path / "probe.json.partial"
    calls = []
    original = probe_module._probe_run
    monkeypatch.setattr(
        probe_module, "_probe_run", lambda *task: calls.append(task[2:4]) or original(*task)
    )

    def cubic(epochs: int, seeds: int) -> dict:
        return probe_module.probe(
            "LossWeighting-Cubic-v1",
            {"epochs": epochs},
            ["random"],
            range(seeds),
            progress=False,
            checkpoint=path,
        )

    first = cubic(3, 1)
    # More seeds of the same protocol: seed 0 is taken from the checkpoint.
    more = cubic(3, 2)
    assert calls == [("random", 0), ("random", 1)]
    assert more["runs"][0] == first["runs"][0]
    # Another run length: nothing of the checkpoint is used, and it is replaced.
    with pytest.warns(UserWarning, match="another protocol"):
        other = cubic(4, 1)
    assert calls[2:] == [("random", 0)]
    assert other["runs"][0]["test"] != first["runs"][0]["test"]
    assert json.loads(path.read_text())["env_kwargs"] == {"epochs": 4}
    # A checkpoint edited by hand, or of another layout, is not used either.
    kept = json.loads(path.read_text())
    for bad in ([kept], {**kept, "runs": [{"policy": "random"}]}, {**kept, "runs": [3]}):
        path.write_text(json.dumps(bad))
        with pytest.warns(UserWarning, match="unreadable"):
            cubic(4, 1)
    assert len(calls) == 3 + 3


# A policy that records its process id and then takes its time: the probe's workers are
# found by the files, and are mid-run when the probe is stopped.
_SLOW_POLICY = """
import os, pathlib, time
from mtl_envs.envs.policies import make_policy

class Slow:
    oracle = False

    def __init__(self, env, seed):
        self.inner = make_policy("random", env, seed)

    def reset(self):  # not __init__: the probe builds each policy once up front to check it
        folder = pathlib.Path(os.environ["PROBE_PIDS"])
        (folder / str(os.getpid())).write_text("")
        self.inner.reset()

    def __call__(self, obs):
        time.sleep(1.0)
        return self.inner(obs)
"""


@pytest.mark.parametrize(
    ("kill", "status"),
    [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["sigterm", "sigkill"],
)
def test_the_probe_workers_stop_with_the_probe(tmp_path, kill, status):
    """SIGTERM: the probe terminates its workers; SIGKILL (no handler runs): each worker
    sees its parent gone and ends itself."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    (tmp_path / "slow_policy.py").write_text(_SLOW_POLICY)
    pids = tmp_path / "pids"
    pids.mkdir()
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(root), str(tmp_path)]),
        "PROBE_PIDS": str(pids),
    }
    argv = ["LossWeighting-Cubic-v1", "epochs=50", "--seeds", "3", "--jobs", "2"]
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "probe",
            *argv,
            "--policies",
            "slow_policy:Slow",
            "--out",
            str(tmp_path / "probe.json"),
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2
        child.send_signal(kill)
        assert child.wait(timeout=60) == status
    finally:
        child.kill()

    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers)
    assert not (tmp_path / "probe.json").exists()


def test_the_family_descriptor_sets_the_probe_protocol(monkeypatch):
    """AuxLabel: a run is ``episodes`` epochs of one network (``restore="none"``); the
    family's defaults name the policies, and a policy of another family is refused."""
    import gymnasium as gym

    import harness.probe as probe_module

    made = []
    real_make = gym.make

    def make(env_id, **kwargs):
        made.append(kwargs)
        return real_make(env_id, **kwargs)

    monkeypatch.setattr(probe_module.gym, "make", make)
    kwargs = {"train_batch_size": 100, "eval_batch_size": 256}
    summary = probe_module.probe(
        "AuxLabel-Digits-v1", kwargs, ["random"], range(1), episodes=2, progress=False
    )
    assert summary["protocol"] == {"seeds": [0], "episodes": 2, "family": "AuxLabel"}
    assert made[-1] == {**kwargs, "restore": "none"}
    assert summary["metric"] == "accuracy"
    from mtl_envs.errors import ConfigError

    with pytest.raises(ConfigError, match=r"Unknown TaskGrouping policy 'best_fixed'"):
        probe_module.probe("TaskGrouping-Digits10-v1", policies=["best_fixed"], progress=False)


def test_extend_runs_only_the_seeds_a_kept_result_lacks(tmp_path, monkeypatch):
    import harness.probe as probe_module

    calls = []
    original = probe_module._probe_run
    monkeypatch.setattr(
        probe_module, "_probe_run", lambda *task: calls.append(task[2:4]) or original(*task)
    )
    out = tmp_path / "probe.json"
    argv = ["probe", "LossWeighting-Cubic-v1", "epochs=3", "--policies", "random"]
    main([*argv, "--seeds", "2", "--out", str(out)])
    first = json.loads(out.read_text())
    main([*argv, "--seeds", "3", "--out", str(out), "--extend"])
    assert calls == [("random", 0), ("random", 1), ("random", 2)]
    extended = json.loads(out.read_text())
    assert extended["runs"][:2] == first["runs"] and extended["protocol"]["seeds"] == [0, 1, 2]
    # A policy added on one seed: the kept runs of the other seeds stay in the result.
    main([*argv[:-1], "equal", "--seeds", "1", "--out", str(out), "--extend"])
    assert calls[3:] == [("equal", 0)]
    again = json.loads(out.read_text())
    assert {(r["policy"], r["seed"]) for r in again["runs"]} == {
        ("equal", 0),
        *(("random", seed) for seed in range(3)),
    }
    assert again["protocol"]["seeds"] == [0, 1, 2] and list(again["policies"]) == [
        "equal",
        "random",
    ]
    calls.clear()
    # Another run length: the kept runs are not reused, and every seed runs.
    with pytest.warns(UserWarning, match="not reused"):
        main(
            [
                "probe",
                "LossWeighting-Cubic-v1",
                "epochs=4",
                "--policies",
                "random",
                "--seeds",
                "2",
                "--out",
                str(out),
                "--extend",
            ]
        )
    assert calls == [("random", 0), ("random", 1)]


def test_one_direction_rule_and_the_descriptor_picks_the_selection_metric():
    """The probe, the comparisons and the recorder read one direction rule; the validation
    score that picks the best epoch is the first of the family's headline metrics."""
    from harness import compare, probe
    from mtl_envs.families import FAMILIES, higher_is_better

    assert probe.higher_is_better is compare.higher_is_better is higher_is_better
    assert higher_is_better("test/mean_accuracy") and higher_is_better("test/total_gain")
    assert not higher_is_better("test/mean_nmse") and not higher_is_better("delta_m")
    lw = FAMILIES["LossWeighting"]
    regression = {"val/mean_mse": 2.0, "val/mean_nmse": 0.5, "val/raw_mse": 9.0, "val/loss": 1}
    assert lw.selection_metric(regression) == ("val/mean_nmse", -1)
    assert lw.selection_metric({"val/mean_accuracy": 0.9, "val/loss": 0.3}) == (
        "val/mean_accuracy",
        1,
    )
    assert FAMILIES["AuxLabel"].selection_metric({"val/accuracy": 0.4}) == ("val/accuracy", 1)
    with pytest.raises(ConfigError, match="No LossWeighting validation score"):
        lw.selection_metric({"test/mean_nmse": 0.5})


def test_default_policies_that_cannot_run_are_left_out_and_named_ones_refused(monkeypatch):
    """The human labels need CIFAR-100's fine labels: the default AuxLabel probe on Digits
    leaves them out with a warning; asked for by name they stop the probe before any run."""
    from harness import probe as probe_module

    ran = []

    def fake_run(*task):
        ran.append(task[2])
        return _run(task[2], task[3], 1.0, 0.5)

    monkeypatch.setattr(probe_module, "_probe_run", fake_run)
    with pytest.warns(UserWarning, match="Left out the human policy: The human policy needs"):
        result = probe_module.probe("AuxLabel-Digits-v1", seeds=[0], episodes=1, progress=False)
    assert ran == ["random", "constant", "image_hash"] == list(result["policies"])
    ran.clear()
    with pytest.raises(ConfigError, match="Policy 'human' cannot run on this env"):
        probe_module.probe(
            "AuxLabel-Digits-v1", policies=["random", "human"], seeds=[0], progress=False
        )
    with pytest.raises(ConfigError, match=r"Policy 'no_such.module:Cls': No module named"):
        probe_module.probe(
            "AuxLabel-Digits-v1", policies=["no_such.module:Cls"], seeds=[0], progress=False
        )
    assert ran == []


CUBIC_TINY = ["LossWeighting-Cubic-v1", "epochs=2", "warmup_epochs=1", "--seeds", "1"]


@pytest.fixture
def probe_runs(monkeypatch):
    """The (policy, seed) runs a probe starts, none of them trained."""
    from harness import probe as probe_module

    ran = []

    def fake_run(*task):
        ran.append((task[2], task[3]))
        return _run(task[2], task[3], 1.0, 0.5)

    monkeypatch.setattr(probe_module, "_probe_run", fake_run)
    return ran


def test_a_repeated_policy_is_refused_before_any_run(tmp_path, capsys, probe_runs):
    """`--policies equal equal` would run equal twice and count one run twice (n=2)."""
    from harness.probe import probe

    with pytest.raises(ConfigError, match=r"`policies` must name each policy once; 'equal' is"):
        probe(CUBIC_TINY[0], {"epochs": 2}, ["equal", "random", "equal"], seeds=[0])
    out = tmp_path / "probe.json"
    argv = ["probe", *CUBIC_TINY, "--out", str(out), "--policies", "equal", "equal"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'equal' is repeated" in err[0]
    assert probe_runs == [] and list(tmp_path.iterdir()) == []


def test_out_is_checked_before_the_probe_runs(tmp_path, capsys, probe_runs):
    """An --out that names a folder, or lies below a file, fails before any run (it used to
    fail after the whole probe, with a traceback and a `.partial` file left behind)."""
    folder = tmp_path / "folder"
    folder.mkdir()
    a_file = tmp_path / "base.yaml"
    a_file.write_text("method: ew\n")
    for out, message in (
        (folder, f"`--out` '{folder}' is a folder; give the JSON file to write, e.g. "),
        (a_file / "sub" / "p.json", f"lies under '{a_file}', which is a file, not a folder"),
    ):
        assert main(["probe", *CUBIC_TINY, "--out", str(out), "--policies", "equal"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert probe_runs == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.yaml", "folder"]
    assert list(folder.iterdir()) == []


_NOT_POLICIES = """
def returns_a_number(env, seed):
    return 42

def takes_nothing():
    return None
"""


def test_an_import_path_policy_must_be_a_policy_class(tmp_path, monkeypatch, probe_runs):
    """`--policies os:path` names a module: a one-line error naming the value, not
    `TypeError: 'module' object is not callable`."""
    from harness.probe import probe

    (tmp_path / "not_policies.py").write_text(_NOT_POLICIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, message in (
        ("os:path", r"Policy 'os:path' is of type module, not a class"),
        ("os.path:sep", r"Policy 'os.path:sep' is of type str, not a class"),
        ("json:dumps", r"Policy 'json:dumps' cannot be called as dumps\(env, seed\)"),
        ("not_policies:takes_nothing", r"cannot be called as takes_nothing\(env, seed\)"),
        ("collections:OrderedDict", r"Policy 'collections:OrderedDict' is a builtin"),
        (
            "not_policies:returns_a_number",
            r"Policy 'not_policies:returns_a_number' built an object of type int, not a policy",
        ),
    ):
        with pytest.raises(ConfigError, match=message):
            probe(
                CUBIC_TINY[0], {"epochs": 2, "warmup_epochs": 1}, [name], seeds=[0], progress=False
            )
    assert probe_runs == []
