"""The mtl-envs command: list, run (baselines), compare, and its error messages."""

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import fake_result, toy_reference_scores

from harness.cli import main
from harness.config import RunConfig, apply_overrides
from mtl_envs.errors import ConfigError


def write_config(tmp_path, **values):
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "AuxLabel-CIFAR100-v1" in out and "digits" in out and "ppo" in out and "stl" in out
    assert "optimal [oracle]" in out and "etap [oracle]" not in out
    # The scale's ends, each a mean over seeds, with their standard errors on that scale.
    (cubic,) = [line for line in out.splitlines() if "LossWeighting-CubicScales-v1" in line]
    assert re.search(
        r"\(5 seeds; the ends' standard errors 0\.\d\d and 0\.\d\d normalised\)", cubic
    )


def test_a_subset_of_the_files_methods_runs_and_resumes_without_rewriting_it(tmp_path, capsys):
    """``method=[ew,rlw]`` over a config written for IGBv2 and its baselines: IGBv2's
    ``agent`` and ``method_kwargs`` stay in the file, and the rerun reuses the results."""
    config = write_config(
        tmp_path,
        method=["igbv2", "ew", "rlw"],
        env_id="LossWeighting-Cubic-v1",
        seeds=[0],
        epochs=2,
        output_dir=str(tmp_path / "out"),
        progress=False,
        tensorboard=False,
        method_kwargs={"update_epoch": 4, "use_epoch": 6},
        agent={"gradient_steps": 2},
    )
    assert main(["run", str(config), "method=[ew,rlw]"]) == 0
    first = sorted(p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("result.json"))
    assert len(first) == 2
    assert main(["run", str(config), "method=[ew,rlw]", "resume=true"]) == 0
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("result.json")) == first
    # Settings that no method of the file or the command line reads are still refused.
    assert main(["run", str(config), "method=[ew]", "policy.image_features=8"]) == 2
    assert "`policy` settings ['image_features'] are read by none" in capsys.readouterr().err
    # The file's methods read its sections on its own family's ids only: its `ppo` is
    # RL-AUX's, whose `agent` settings grouping's PPO would not be given here.
    auxlabel = write_config(
        tmp_path, method=["ppo"], env_id="AuxLabel-Digits-v1", agent={"n_epochs": 2}
    )
    assert main(["run", str(auxlabel), "env_id=TaskGrouping-Digits10-v1", "method=[random]"]) == 2
    assert "`agent` settings ['n_epochs'] are read by none" in capsys.readouterr().err


def test_run_prints_every_setting_of_a_search(tmp_path, capsys):
    config = write_config(
        tmp_path,
        method=["random"],
        env_id="TaskGrouping-Digits10-v1",
        seeds=[0],
        output_dir=str(tmp_path / "out"),
        progress=False,
        method_kwargs={"budgets": [2, 10]},
    )
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    # Every budget, in the order of their values.
    assert out.index("random B=2 seed 0: ") < out.index("random B=10 seed 0: ")
    assert out.index("TaskGrouping-Digits10-v1 B=2") < out.index("TaskGrouping-Digits10-v1 B=10")


def test_compare_gives_each_metric_its_table(tmp_path, capsys):
    """A sweep over an accuracy id and a regression id: one table (and plot) per headline
    metric unless --metric names one."""
    for env_id, method in (("LossWeighting-Cubic-v1", "ew"), ("AuxLabel-Digits-v1", "stl")):
        config = write_config(
            tmp_path,
            method=[method],
            env_id=env_id,
            epochs=1,
            output_dir=str(tmp_path / "out"),
            progress=False,
            tensorboard=False,
        )
        assert main(["run", str(config)]) == 0
    capsys.readouterr()
    plot = tmp_path / "cmp.png"
    assert main(["compare", str(tmp_path / "out"), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "test/accuracy % (mean +- std)" in out and "test/mean_nmse (mean +- std)" in out
    assert sorted(p.name for p in tmp_path.glob("cmp_*.png")) == [
        "cmp_test_accuracy.png",
        "cmp_test_mean_nmse.png",
    ]
    assert main(["compare", str(tmp_path / "out"), "--metric", "test/accuracy"]) == 2
    # A baseline, or a pair, of one table only: the other table goes without.
    assert main(["compare", str(tmp_path / "out"), "--baseline", "ew"]) == 0
    assert main(["compare", str(tmp_path / "out"), "--pairs", "ew:stl"]) == 0
    assert "No env id holds both methods of ['ew:stl']" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "out"), "--baseline", "eww"]) == 2


def test_run_baselines_and_compare(tmp_path, capsys):
    config = write_config(
        tmp_path,
        method=["stl", "random"],
        env_id="AuxLabel-Digits-v1",
        env_kwargs={"train_subset": 400},
        seeds=[0],
        epochs=1,
        output_dir=str(tmp_path / "out"),
        progress=False,
    )
    assert main(["run", str(config), "seeds=[0,1]", "tensorboard=false"]) == 0
    out = capsys.readouterr().out
    assert "stl" in out and "random" in out and "+-" in out
    files = sorted((tmp_path / "out").rglob("result.json"))
    assert len(files) == 4
    first = json.loads(files[0].read_text())
    assert first["config"]["env_kwargs"] == {"train_subset": 400}
    assert {"torch", "cpu", "cpu_capability", "torch_threads"} <= set(first["platform"])
    assert not list((tmp_path / "out").rglob("*.tmp"))
    plot = tmp_path / "cmp.png"
    assert main(["compare", str(tmp_path / "out"), "--plot", str(plot)]) == 0
    table = capsys.readouterr().out
    assert table.count("AuxLabel-Digits-v1") == 2 and plot.stat().st_size > 1000
    assert main(["compare", str(tmp_path / "out"), "--pairs", "stl:random"]) == 0
    pairs = capsys.readouterr().out.splitlines()[-1]
    # Two seeds each: no bootstrap interval, as the table gives none below five; seed by
    # seed, the count.
    cells = pairs.split(" | ")
    assert cells[1:3] == ["stl vs random", "- (5+ seeds each)"] and cells[4] == "2 / 2 |"
    assert re.fullmatch(r"\d/\d( \(\d tied\))? \[[\d.]+, [\d.]+\]|0/0 \(2 tied\)", cells[3])
    # A misspelt method is named (with the closest one) before any table is printed.
    assert main(["compare", str(tmp_path / "out"), "--pairs", "stl:randm"]) == 2
    out = capsys.readouterr()
    assert not out.out and "Did you mean 'random'" in out.err


def test_human_baseline_needs_fine_labels(tmp_path, capsys, data_env):
    digits = write_config(
        tmp_path,
        method="human",
        env_id="AuxLabel-Digits-v1",
        epochs=1,
        output_dir=str(tmp_path / "out"),
        progress=False,
    )
    assert main(["run", str(digits)]) == 2
    assert "fine labels" in capsys.readouterr().err
    cifar = write_config(
        tmp_path,
        method="human",
        env_id="AuxLabel-CIFAR100-v1",
        epochs=1,
        env_kwargs={"backbone": "small_cnn", "train_batch_size": 50},
        output_dir=str(tmp_path / "out"),
        progress=False,
        tensorboard=False,
    )
    assert main(["run", str(cifar)]) == 0


def test_errors_name_the_bad_value(tmp_path, capsys):
    config = write_config(tmp_path, method="maxl2", epochs=1)
    assert main(["run", str(config)]) == 2
    assert "Unknown method 'maxl2'" in capsys.readouterr().err
    config = write_config(tmp_path, method="stl", epoch=1)
    assert main(["run", str(config)]) == 2
    assert "Did you mean 'epochs'" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert main(["compare", str(tmp_path / "nothing")]) == 2


def test_overrides():
    values = apply_overrides(
        {"env_kwargs": {"lr": 0.1}}, ["epochs=3", "env_kwargs.backbone=mlp", "seeds=[1, 2]"]
    )
    assert values == {"env_kwargs": {"lr": 0.1, "backbone": "mlp"}, "epochs": 3, "seeds": [1, 2]}
    assert RunConfig.from_dict(values).seeds == [1, 2]
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["epochs"])
    # `1e-5` is a number (YAML 1.1 alone would keep the text), and an empty `env_kwargs:`
    # entry of a YAML file takes dotted keys like an absent one.
    values = apply_overrides({"env_kwargs": None}, ["env_kwargs.lr=1e-5", "agent.x=-2E+3"])
    assert values == {"env_kwargs": {"lr": 1e-5}, "agent": {"x": -2000.0}}
    with pytest.raises(ConfigError, match="'epochs' is not a mapping"):
        apply_overrides({"epochs": 3}, ["epochs.x=1"])


def test_loss_weighting_baselines_compare_with_delta_m_and_t(tmp_path, capsys):
    config = write_config(
        tmp_path,
        method=["stl", "ew", "uw", "igbv1"],
        env_id="LossWeighting-Digits10-v1",
        epochs=3,
        seeds=[0],
        output_dir=str(tmp_path / "out"),
        progress=False,
        tensorboard=False,
    )
    assert main(["run", str(config)]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "out")]) == 0
    table, warnings = capsys.readouterr()
    assert "Δm" in table and "is_9" in table and table.count("LossWeighting-Digits10-v1") == 4
    ew_row = next(line for line in table.splitlines() if " ew " in line)
    assert "1.00" in ew_row  # T of EW against itself
    assert "warning" not in warnings  # every run ran alone, in one process
    # An EW run that had shared the machine: the rows whose T divides by it say so.
    ew_file = next((tmp_path / "out").rglob("ew/seed0/result.json"))
    ew_file.write_text(json.dumps({**json.loads(ew_file.read_text()), "concurrent_runs": 2}))
    assert main(["compare", str(tmp_path / "out")]) == 0
    warned = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in warned] == [
        "LossWeighting-Digits10-v1 igbv1",
        "LossWeighting-Digits10-v1 igbv1",
        "LossWeighting-Digits10-v1 uw",
        "LossWeighting-Digits10-v1 uw",
    ]  # each: other conditions than EW's (1 against 2), and a shared machine
    # A second stl run with the same config is read from its result, not trained again.
    stl_file = next((tmp_path / "out").rglob("stl/seed0/result.json"))
    mtime = stl_file.stat().st_mtime_ns
    config2 = write_config(
        tmp_path,
        method="stl",
        env_id="LossWeighting-Digits10-v1",
        epochs=3,
        output_dir=str(tmp_path / "out"),
        progress=False,
        tensorboard=False,
    )
    assert main(["run", str(config2)]) == 0
    assert stl_file.stat().st_mtime_ns == mtime


def test_single_task_networks_on_exam_leave_out_the_school_validation_lacks(tmp_path):
    """One Exam school has no pupil in validation (another a single one in training). Its
    network's validation means were NaN and made the merged ones NaN, which stopped every
    STL run on Exam as diverged after its first epoch; its test nMSE was divided by the
    variance floor. Both now follow the multi-task network's evaluation."""
    from baselines.stl import run_single_task_networks

    config = RunConfig(
        method="stl",
        env_id="LossWeighting-Exam-v1",
        epochs=1,
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
    )
    result = run_single_task_networks(config, 0)
    assert result["status"] == "completed" and result["diverged_epoch"] is None
    first = result["epochs"][0]
    assert all(math.isfinite(first[f"val/{k}"]) for k in ("mean_mse", "mean_nmse", "loss"))
    assert 0.5 < result["final"]["test/mean_nmse"] < 2.0  # an untrained-ish z-scored fit


def test_a_kept_stl_result_is_reused_only_for_the_same_seed_config_and_format(tmp_path):
    """STL is Δm's reference and is read back rather than trained again, but only where the
    kept run is the one asked for: same seed, epochs and env kwargs, and written by the
    current metrics."""
    from baselines.stl import run_single_task_networks

    def config(out, **kwargs):
        fields = {"method": "stl", "env_id": "LossWeighting-Cubic-v1", "epochs": 1}
        fields.update(output_dir=str(out), progress=False, tensorboard=False, **kwargs)
        return RunConfig(**fields)

    first = run_single_task_networks(config(tmp_path), 0)
    assert run_single_task_networks(config(tmp_path), 0) == first  # reused
    other_seed = run_single_task_networks(config(tmp_path), 1)
    assert other_seed["seed"] == 1 and other_seed["final"] != first["final"]
    longer = run_single_task_networks(config(tmp_path / "e", epochs=2), 0)
    assert len(longer["epochs"]) == 2
    assert len(run_single_task_networks(config(tmp_path / "e"), 0)["epochs"]) == 1
    slower = run_single_task_networks(config(tmp_path / "k", env_kwargs={"lr": 0.01}), 0)
    assert slower["config"]["env_kwargs"]["lr"] == 0.01 and slower["final"] != first["final"]
    # A result of an earlier metrics format is trained again, not read.
    path = tmp_path / "LossWeighting-Cubic-v1/stl/seed0/result.json"
    stale = {**json.loads(path.read_text()), "metrics_version": 1}
    stale["final"] = {**stale["final"], "test/mean_nmse": -1.0}
    path.write_text(json.dumps(stale))
    assert run_single_task_networks(config(tmp_path), 0)["final"] == first["final"]


def test_single_task_raw_mse_weighs_each_task_by_the_evaluated_splits_samples(monkeypatch):
    """raw_mse is a mean over the split's samples: each task's network weighs by its samples
    in the split evaluated, not in another (Radon's counties hold 60% of their houses in
    training, 20% in validation and in test)."""
    import baselines.stl as stl

    seen = []
    merge = stl.merge_single_task_metrics
    monkeypatch.setattr(
        stl, "merge_single_task_metrics", lambda m, sizes: seen.append(sizes) or merge(m, sizes)
    )
    config = RunConfig(method="stl", env_id="LossWeighting-Radon-v1", epochs=1)
    config.progress, config.tensorboard = False, False
    learners = stl.single_task_learners(config, 0)
    monkeypatch.setattr(stl, "single_task_learners", lambda *args: learners)
    monkeypatch.setattr(stl, "_cached", lambda *args: None)
    monkeypatch.setattr(
        stl, "run_epochs", lambda **kw: [kw["evaluate"](s) for s in ("val", "test")]
    )
    stl.run_single_task_networks(config, 0)
    expected = [[learner.split_size(s) for learner in learners] for s in ("val", "test")]
    assert seen == expected
    assert expected[1] != [learner.split_size("train") for learner in learners]


def test_single_task_networks_report_every_headline_metric_on_regression(tmp_path):
    from baselines.stl import merge_single_task_metrics
    from harness.compare import summarize
    from harness.registry import run_method
    from harness.results import load_results

    # Means over tasks average the networks; raw_mse, a mean over samples, weighs the tasks
    # by their samples: (1.0 * 3 + 4.0 * 1) / 4 = 1.75.
    # A task with no sample in the split (c) has no metrics there and NaN means: it is left
    # out, as the multi-task network's evaluation leaves it out.
    nan = float("nan")
    merged = merge_single_task_metrics(
        [
            {"a/mse": 2.0, "mean_mse": 2.0, "mean_nmse": 0.5, "raw_mse": 1.0, "loss": 2.0},
            {"mean_mse": nan, "mean_nmse": nan, "raw_mse": nan, "loss": nan},
            {"b/mse": 6.0, "mean_mse": 6.0, "mean_nmse": 1.5, "raw_mse": 4.0, "loss": 6.0},
        ],
        [3, 0, 1],
    )
    assert merged == {
        "a/mse": 2.0,
        "b/mse": 6.0,
        "mean_mse": 4.0,
        "mean_nmse": 1.0,
        "raw_mse": 1.75,
        "loss": 4.0,
    }
    # Regression ids compare on mean_nmse, which STL, the reference of Δm, must report.
    config = RunConfig(
        method=["ew", "stl"],
        env_id="LossWeighting-Cubic-v1",
        epochs=1,
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
    )
    for method in ("ew", "stl"):
        run_method(config, method, 0)
    rows = {r["method"]: r for r in summarize(load_results([str(tmp_path)]))}
    assert rows["stl"]["metric"] == "test/mean_nmse" and rows["stl"]["delta_m"] == 0.0


def test_aggregator_option_reaches_the_learner(tmp_path):
    from harness.registry import run_method

    config = RunConfig(
        method="ew",
        env_id="LossWeighting-Digits10-v1",
        env_kwargs={"aggregator": "upgrad"},
        epochs=1,
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
    )
    result = run_method(config, "ew", 0)
    assert result["config"]["env_kwargs"]["aggregator"] == "upgrad"
    # The learner the run builds aggregates with UPGrad, and that changes what it trains.
    from torchjd.aggregation import UPGrad

    from baselines.loss_weighting import build_learner

    assert isinstance(build_learner(config, 0).aggregator, UPGrad)
    plain = run_method(
        RunConfig(**{**config.to_dict(), "env_kwargs": {}, "output_dir": str(tmp_path / "p")}),
        "ew",
        0,
    )
    assert result["final"] != plain["final"]


def test_overrides_may_follow_data_root(tmp_path):
    config = write_config(
        tmp_path,
        method="stl",
        env_id="AuxLabel-Digits-v1",
        epochs=2,
        output_dir=str(tmp_path / "out"),
        progress=False,
        tensorboard=False,
    )
    data = tmp_path / "data"
    assert main(["run", str(config), "--data-root", str(data), "epochs=1"]) == 0
    result = json.loads(next((tmp_path / "out").rglob("result.json")).read_text())
    assert result["config"]["env_kwargs"]["data_root"] == str(data)
    assert len(result["epochs"]) == 1
    with pytest.raises(SystemExit):
        main(["run", str(config), "--data-root", str(data), "--bogus"])


@pytest.mark.parametrize("sizes", [(5, 7), (10, 3), (1, 4), (2, 9, 5), (16, 17), (3, 1, 3)])
@pytest.mark.parametrize("pool_size", [None, 1])
def test_resamples_of_unequal_sizes_are_numpys_draws_one_call_at_a_time(sizes, pool_size):
    """The replayed bootstrap draws are those of rliable's loop, one ``randint(0, n, n)`` per
    input and resample (sizes of one run draw nothing; a pool of one output must grow)."""
    from harness.compare import _numpy_seed, _replay_bounded_draws

    for seed, reps in [(0, 1), (1, 9), (2, 400)]:
        with _numpy_seed(seed):
            rows = [[np.random.randint(0, n, size=n) for n in sizes] for _ in range(reps)]
        with _numpy_seed(seed):
            replayed = _replay_bounded_draws(list(sizes), reps, pool_size)
        for i, drawn in enumerate(replayed):
            expected = np.stack([row[i] for row in rows])
            assert drawn.dtype == expected.dtype and np.array_equal(drawn, expected)


@pytest.mark.parametrize("sizes", [(7, 7), (10, 6)])
def test_intervals_are_rliables_to_the_last_bit(sizes):
    """The vectorised bootstrap gives rliable's own numbers (same seed, same resamples, same
    percentile rule), for the IQM and for P(X > Y) of samples of equal and unequal sizes,
    ties included."""
    import warnings

    from rliable import library as rly

    from harness.compare import (
        _numpy_seed,
        improvement_probability,
        interval_estimates,
        iqm,
        probability_of_improvement,
    )

    rng = np.random.default_rng(sum(sizes))
    x, y = (np.round(rng.normal(size=n), 1) for n in sizes)  # rounded: ties
    reps = 500
    with warnings.catch_warnings(), _numpy_seed(0):
        warnings.simplefilter("ignore", FutureWarning)  # arch on RandomState seeding
        point, interval = rly.get_interval_estimates(
            {"x": x[:, None]}, lambda s: np.array([iqm(s)]), reps=reps
        )
    expected = (point["x"][0], *interval["x"][:, 0])
    assert interval_estimates({"x": list(x)}, reps=reps)["x"] == expected
    with warnings.catch_warnings(), _numpy_seed(0):
        warnings.simplefilter("ignore", FutureWarning)
        point, interval = rly.get_interval_estimates(
            {"p": [x[:, None], y[:, None]]}, probability_of_improvement, reps=reps
        )
    expected = (float(point["p"]), *(float(np.ravel(v)[0]) for v in interval["p"]))
    assert improvement_probability(list(x), list(y), reps=reps) == expected


def test_a_methods_interval_is_a_function_of_its_own_runs():
    """Each method's resamples start from the same seed, so a table's other rows (which once
    shared one random stream with it) leave its interval alone."""
    from harness.compare import interval_estimates

    alone = interval_estimates({"ew": [0.14, 0.15, 0.19, 0.16, 0.18, 0.17]})["ew"]
    beside = interval_estimates(
        {"rlw": [0.3, 0.1, 0.2], "ew": [0.14, 0.15, 0.19, 0.16, 0.18, 0.17]}
    )
    assert beside["ew"] == alone


def test_iqm_intervals_and_improvement_probability_on_known_orderings():
    from harness.compare import format_table, improvement_probability, interval_estimates, summarize

    # IQM of 5 runs: the mean of the middle three (rliable trims 25% at each end).
    (iqm, low, high) = interval_estimates({"a": [0.1, 0.2, 0.3, 0.4, 10.0]})["a"]
    assert iqm == pytest.approx(0.3) and low <= iqm <= high
    # Every run of "good" beats every run of "bad": P = 1; reversed for a loss.
    assert improvement_probability([5, 6, 7], [1, 2, 3])[0] == pytest.approx(1.0)
    assert improvement_probability([5, 6, 7], [1, 2, 3], higher=False)[0] == pytest.approx(0.0)
    assert improvement_probability([1, 2, 3], [1, 2, 3])[0] == pytest.approx(0.5)
    results = [fake_result("random", s, 0.50 + 0.01 * s) for s in range(5)]
    results += [fake_result("good", s, 0.80 + 0.01 * s) for s in range(5)]
    results += [fake_result("optimal", s, 0.95, oracle=True) for s in range(5)]
    rows = {r["method"]: r for r in summarize(results)}
    assert rows["good"]["iqm_low"] > rows["random"]["iqm_high"]  # intervals apart
    assert rows["good"]["p_improve"] == pytest.approx(1.0) and rows["good"]["baseline"] == "random"
    assert rows["optimal"]["oracle"] and not rows["good"]["oracle"]
    table = format_table(list(rows.values()))
    assert "optimal [oracle]" in table and "IQM [95% CI]" in table and "P(> random)" in table
    # Fewer than 5 seeds: mean +- std only, in a table of such rows...
    four = summarize([fake_result("a", s, 0.5 + 0.01 * s) for s in range(4)])
    assert "iqm" not in four[0] and "IQM" not in format_table(four)
    # ... and beside rows of 5, a cell that says why there is no interval.
    table = format_table(summarize(results + [fake_result("few", s, 0.7) for s in range(4)]))
    (few,) = [line for line in table.splitlines() if line.startswith("Toy-v0  few ")]
    assert few.count("- (5+ seeds)") == 2  # neither the IQM's interval nor P(> random)
    # Env ids whose baselines differ: each cell names its own reference.
    mixed = [{**fake_result("random", s, 0.5), "env_id": "A-v0"} for s in range(5)]
    mixed += [{**fake_result("good", s, 0.8), "env_id": "A-v0"} for s in range(5)]
    mixed += [{**fake_result("stl", s, 0.5), "env_id": "B-v0"} for s in range(5)]
    mixed += [{**fake_result("good", s, 0.9), "env_id": "B-v0"} for s in range(5)]
    mixed[0]["status"] = "diverged"  # a diverged run stays in its row, which says so
    table = format_table(summarize(mixed))
    assert "P(> reference)" in table and "vs random" in table and "vs stl" in table
    assert "5 (all equal) (1 diverged)" in table  # the fixture gives each row one value
    # A misspelt baseline is an error, not a table whose P column silently disappears.
    with pytest.raises(ConfigError, match=r"`baseline` 'randm'.*Did you mean 'random'"):
        summarize(results, baseline="randm")


def test_pairs_name_the_comparisons_of_a_claim(monkeypatch):
    # Three or four seeds a side, as worked by hand: intervals from 3 on (their own test
    # checks the 5-seed floor).
    monkeypatch.setattr("harness.compare.MIN_INTERVAL_SEEDS", 3)
    from harness.compare import format_pairs

    # Losses (lower is better): a = [1, 2, 3], b = [2, 4, 6]. Pairs where a is lower:
    # 1 < 2, 4, 6; 2 < 4, 6; 3 < 4, 6; and 2 = 2 counts half: (3 + 2 + 2 + 0.5) / 9 = 0.83.
    def loss(method, seed, value, **extra):
        return {**fake_result(method, seed, 0.0, **extra), "final": {"test/loss": value}}

    results = [loss("a", s, v) for s, v in enumerate([1.0, 2.0, 3.0])]
    results += [loss("b", s, v) for s, v in enumerate([2.0, 4.0, 6.0])]
    results += [loss("o", s, 0.5, oracle=True) for s in range(3)]
    results[5]["status"] = "diverged"  # b's seed 2: it keeps its score and is counted
    table = format_pairs(results, ["a:b", "b:a", "o:a"], "test/loss")
    rows = table.splitlines()
    assert rows[0].endswith(
        "P(X beats Y) [95% CI], test/loss lower is better | same seed: X wins "
        "[exact 95% CI] | seeds |"
    )
    cells = [row.split(" | ") for row in rows[2:]]
    assert cells[0][1] == "a vs b" and cells[0][2].startswith("0.83 [")
    # Seed by seed a is lower on all three: the exact interval's low end is 0.025^(1/3).
    assert cells[0][3:] == ["3/3 [0.29, 1.00]", "3 / 3 (1 diverged) |"]
    assert cells[1][1] == "b vs a" and cells[1][2].startswith("0.17 [")  # 1 - 0.83
    assert cells[1][3] == "0/3 [0.00, 0.71]"
    assert cells[2][1:5] == ["o [oracle] vs a", "1.00 [1.00, 1.00]", "3/3 [0.29, 1.00]", "3 / 3 |"]
    with pytest.raises(ConfigError, match=r"`pairs` entry 'a:c'.*Methods: \['a', 'b', 'o'\]"):
        format_pairs(results, ["a:c"], "test/loss")
    # The same seed twice (two result folders read together): no pairing is made up.
    twice = format_pairs([*results, loss("a", 0, 9.0)], ["a:b"], "test/loss").splitlines()[2]
    assert "| - (seed 0 twice) |" in twice


def test_pairs_across_settings_compare_one_method_with_and_without_metadata(monkeypatch):
    """``"X@A:Y@B"`` pairs the runs of setting A with those of setting B on each env id (the
    hypernetwork with against without metadata), where ``"X:Y"`` stays within a setting."""
    # Three or four seeds a side, as worked by hand: intervals from 3 on (their own test
    # checks the 5-seed floor).
    monkeypatch.setattr("harness.compare.MIN_INTERVAL_SEEDS", 3)
    from harness.compare import format_pairs

    def loss(method, seed, value, setting):
        return {
            **fake_result(method, seed, 0.0, setting=setting),
            "final": {"test/loss": value},
        }

    # With metadata: 1, 2, 3, 10; without: 2, 3, 4, 5. Seed by seed, metadata is lower on
    # seeds 0-2 and higher on seed 3 (3 of 4). Unpaired, 1 beats all four, 2 beats three and
    # ties one (3.5), 3 beats two and ties one (2.5), 10 beats none: 10 / 16 = 0.625.
    results = [loss("h", s, v, "metadata") for s, v in enumerate([1.0, 2.0, 3.0, 10.0])]
    results += [loss("h", s, v, "no_metadata") for s, v in enumerate([2.0, 3.0, 4.0, 5.0])]
    results += [loss("e", s, 0.0, "no_metadata") for s in range(4)]
    rows = format_pairs(results, ["h@metadata:h@no_metadata", "h:e"], "test/loss").splitlines()
    cells = [row.split(" | ") for row in rows[2:]]
    assert cells[0][:4] == [
        "| Toy-v0",
        "h@metadata vs h@no_metadata",
        cells[0][2],
        "3/4 [0.19, 0.99]",
    ]
    assert cells[0][2].startswith("0.62 [") and cells[0][4] == "4 / 4 |"
    # "h:e" pairs within the no-metadata setting only (h's metadata runs have no e beside).
    assert cells[1][:2] == ["| Toy-v0 no_metadata", "h vs e"] and cells[1][3] == "0/4 [0.00, 0.60]"
    for bad, match in (
        ("h@metadata:h", "names a setting on one side only"),
        ("h@metadta:h@no_metadata", r"no runs of setting or variant 'metadta'.*Did you mean"),
    ):
        with pytest.raises(ConfigError, match=match):
            format_pairs(results, [bad], "test/loss")


def test_same_seed_wins_on_hand_worked_runs():
    from harness.compare import same_seed_text, same_seed_wins

    # Lower is better. Common seeds 0-3 (seed 7 is Y's alone): X loses seed 0 (1 > 0), ties
    # seed 1, wins seeds 2 (3 < 4) and 3 (0 < 1): 2 wins of 3 untied seeds.
    x = {0: 1.0, 1: 2.0, 2: 3.0, 3: 0.0}
    y = {0: 0.0, 1: 2.0, 2: 4.0, 3: 1.0, 7: 5.0}
    paired = same_seed_wins(x, y, higher=False)
    assert (paired["wins"], paired["ties"], paired["seeds"]) == (2, 1, 4)
    assert paired["p"] == pytest.approx(2 / 3)
    # Clopper-Pearson for 2 of 3: [Beta(0.025; 2, 2), Beta(0.975; 3, 1)] = [0.0943, 0.975^(1/3)]
    assert paired["ci"] == pytest.approx([0.09430, 0.975 ** (1 / 3)], abs=1e-5)
    assert paired["sign_test_p"] == pytest.approx(1.0)
    assert same_seed_text(paired) == "2/3 (1 tied) [0.09, 0.99]"
    # Ten wins of ten: [0.025^(1/10), 1] and a two-sided sign test of 2 / 2^10.
    ten = same_seed_wins({s: 1.0 for s in range(10)}, {s: 0.0 for s in range(10)})
    assert ten["ci"] == pytest.approx([0.025**0.1, 1.0]) and ten["sign_test_p"] == 2 / 1024
    assert same_seed_wins({0: 1.0}, {1: 1.0}) is None
    assert same_seed_text(None) == "- (no common seed)"
    # A NaN score (a diverged run) decides no seed, whichever side it is on.
    nan = float("nan")
    x, y = {0: 1.0, 1: 2.0, 2: 3.0, 3: nan}, {0: 0.0, 1: 1.0, 2: 1.0, 3: 1.0}
    assert same_seed_text(same_seed_wins(x, y)) == "3/3 (1 NaN) [0.29, 1.00]"
    assert same_seed_text(same_seed_wins(y, x)) == "0/3 (1 NaN) [0.00, 0.71]"


def test_bootstrapped_statistics_equal_rliables_to_the_bit():
    from rliable import metrics as rly_metrics

    from harness.compare import iqm, probability_of_improvement

    # Hand-worked: IQM of 8 runs drops the lowest and highest two, (2+3+4+5)/4 = 3.5;
    # X = [1, 3], Y = [2, 3]: pairs (3>2) and half of (3=3) over 4 -> 0.375.
    assert iqm(np.array([[0.0], [9], [2], [3], [4], [5], [-7], [8]])) == 3.5
    assert probability_of_improvement(np.array([[1.0], [3]]), np.array([[2.0], [3]])) == 0.375
    rng = np.random.default_rng(0)
    for case in range(200):
        shape_x, shape_y = (rng.integers(1, 11), 2), (rng.integers(1, 11), 2)
        if case % 2:  # ties
            x, y = rng.integers(0, 4, shape_x).astype(float), rng.integers(0, 4, shape_y) * 1.0
        else:
            x, y = rng.normal(size=shape_x), rng.normal(size=shape_y)
        if case % 7 == 0:
            x[0, 1] = np.nan  # a diverged run's score
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pairs = [
                (iqm(x), rly_metrics.aggregate_iqm(x)),
                (probability_of_improvement(x, y), rly_metrics.probability_of_improvement(x, y)),
            ]
        for ours, theirs in pairs:
            assert ours == theirs or (np.isnan(ours) and np.isnan(theirs)), (x, y)


def test_training_time_ratio_t_on_hand_worked_times():
    from harness.compare import summarize

    # IGB's T: a method's training time over EW's on the same seed, averaged over seeds.
    # igbv1: 12 / 10 and 30 / 20 -> (1.2 + 1.5) / 2 = 1.35; seed 2 has no EW run to pair with.
    times = {"ew": {0: 10.0, 1: 20.0}, "igbv1": {0: 12.0, 1: 30.0, 2: 99.0}, "stl": {0: 50.0}}
    results = [
        fake_result(method, seed, 0.5, train_time_s=t)
        for method, by_seed in times.items()
        for seed, t in by_seed.items()
    ]
    rows = {r["method"]: r for r in summarize(results)}
    assert rows["igbv1"]["T"] == pytest.approx(1.35)
    assert rows["ew"]["T"] == pytest.approx(1.0)
    assert "T" not in rows["stl"]  # one network per task: no T


def test_t_of_an_aggregator_row_is_against_plain_ew():
    from harness.compare import summarize

    # IGB Table 1 prices MGDA and IGBv1 + MGDA against plain EW: in a sweep's aggregator row,
    # EW + UPGrad at 30 s is T 3.0 and IGBv1 + UPGrad at 33 s is 3.3 against EW's 10 s, not
    # 1.0 and 1.1 against EW + UPGrad.
    def run(method, time, aggregator=None):
        kwargs = {"aggregator": aggregator} if aggregator else {}
        variant = {"variant": f"env_kwargs.aggregator={aggregator}"} if aggregator else {}
        config = {"env_kwargs": kwargs, "epochs": 5}
        return fake_result(method, 0, 0.5, train_time_s=time, config=config, **variant)

    results = [run("ew", 10.0), run("ew", 30.0, "upgrad"), run("igbv1", 33.0, "upgrad")]
    rows = {(r["env_id"], r["method"]): r for r in summarize(results)}
    row = "Toy-v0 env_kwargs.aggregator=upgrad"
    assert rows[(row, "ew")]["T"] == pytest.approx(3.0)
    assert rows[(row, "igbv1")]["T"] == pytest.approx(3.3)
    assert rows[("Toy-v0", "ew")]["T"] == pytest.approx(1.0)


def test_delta_m_of_an_aggregator_row_is_against_the_stl_of_its_seed():
    """STL trains one network per task, which no aggregator changes: a sweep's aggregator row
    takes Δm against the base row's STL run of the same seed and env kwargs (it once got
    none, while its T fell back to plain EW). A variant that changes anything else the env
    reads gets no Δm from it."""
    from harness.compare import summarize

    def run(method, a, b, **kwargs):
        name = ",".join(f"env_kwargs.{k}={v}" for k, v in kwargs.items())
        final = {"test/a/accuracy": a, "test/b/accuracy": b, "test/mean_accuracy": (a + b) / 2}
        config = {"env_kwargs": kwargs, "epochs": 5}
        result = fake_result(method, 0, 0.5, config=config, **({"variant": name} if name else {}))
        return {**result, "final": final}

    results = [
        run("stl", 0.8, 0.5),
        run("ew", 0.88, 0.4, aggregator="upgrad"),
        run("ew", 0.88, 0.4, lr=0.1),
    ]
    rows = {(r["env_id"], r["method"]): r for r in summarize(results)}
    # IGB eq. 5: 100/2 * (-(0.88 - 0.8) / 0.8 - (0.4 - 0.5) / 0.5) = 100/2 * (-0.1 + 0.2) = 5.
    upgrad = rows[("Toy-v0 env_kwargs.aggregator=upgrad", "ew")]
    assert upgrad["delta_m"] == pytest.approx(5.0) and upgrad["delta_m_n"] == 1
    assert "delta_m" not in rows[("Toy-v0 env_kwargs.lr=0.1", "ew")]


def test_compare_plot_marks_oracles(tmp_path, monkeypatch):
    from harness.compare import plot_summary, summarize

    results = [fake_result("random", s, 0.5 + 0.01 * s) for s in range(3)]
    results += [fake_result("optimal", s, 0.9, oracle=True) for s in range(3)]
    import matplotlib.pyplot as plt

    closed = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: closed.append(fig) or close(fig))
    path = plot_summary(summarize(results), tmp_path / "plot.png")
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and list(tmp_path.iterdir()) == [path]
    # The oracle's bar is hatched grey, the other plain.
    (ax,) = closed[0].axes
    names = [tick.get_text() for tick in ax.get_xticklabels()]
    hatches = dict(zip(names, (bar.get_hatch() for bar in ax.patches)))
    assert {name: hatch for name, hatch in hatches.items()} == {
        next(n for n in names if n.startswith("optimal")): "//",
        "random": None,
    }


def test_cli_prints_bad_input_in_one_line_and_bugs_with_their_traceback(tmp_path, monkeypatch):
    import harness.cli as cli

    config = write_config(tmp_path, method="stl", epochs=1)

    def buggy(args):
        raise KeyError("a bug, not bad input")

    monkeypatch.setattr(cli, "cmd_run", buggy)
    with pytest.raises(KeyError, match="a bug"):  # not turned into a one-line error
        main(["run", str(config)])


def test_validation_every_k_epochs_and_test_on_the_best_and_final_networks(tmp_path):
    # A network whose one weight is the epoch number; validation peaks after epoch 2.
    import torch

    from harness.lifecycle import run_epochs

    net = torch.nn.Linear(1, 1, bias=False)
    calls = []

    def train_epoch(epoch):
        with torch.no_grad():
            net.weight.fill_(epoch + 1)
        return {"train/loss": 1.0}

    def evaluate(split):
        w = float(net.weight.detach())
        calls.append((split, w))
        return {"accuracy": -((w - 2) ** 2) if split == "val" else 10 * w}

    config = RunConfig(
        env_id="AuxLabel-Digits-v1",
        epochs=5,
        eval_every=2,
        output_dir=str(tmp_path),
        tensorboard=False,
        progress=False,
    )
    result = run_epochs(
        config=config,
        method="toy",
        seed=0,
        train_epoch=train_epoch,
        evaluate=evaluate,
        models=[net],
    )
    # Validation after epochs 2, 4 and the last (5); test once on each of two networks.
    assert [c for c in calls if c[0] == "val"] == [("val", 2.0), ("val", 4.0), ("val", 5.0)]
    assert sorted(c for c in calls if c[0] == "test") == [("test", 2.0), ("test", 5.0)]
    assert result["best"]["epoch"] == 2 and result["best"]["test/accuracy"] == 20.0
    assert result["final"]["test/accuracy"] == 50.0 and float(net.weight.detach()) == 5.0
    assert "val/accuracy" not in result["epochs"][0] and "test/accuracy" in result["epochs"][1]


CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path):
    """Every config in configs/ parses, names a registered id and methods of its family, and
    its env kwargs are constructor arguments of that id."""
    import gymnasium as gym

    from harness.registry import check_run, resolve
    from harness.sweep import SweepConfig, expand
    from mtl_envs.families import family_of

    if "grid" in (yaml.safe_load(path.read_text()) or {}):
        configs = [RunConfig.from_dict(run.config) for run in expand(SweepConfig.from_file(path))]
    else:
        configs = [RunConfig.from_file(path)]
    if "grid" not in (yaml.safe_load(path.read_text()) or {}):
        check_run(configs[0])  # its shared method_kwargs are read by one of its methods
    for config in configs:
        gym.spec(config.env_id)  # raises for an unregistered id
        for method in config.methods:
            assert callable(resolve(config.env_id, method))
        family = family_of(config.env_id)
        if family.split_kwargs is not None:
            family.learner_config(config.env_id, config.env_kwargs)  # unknown keys raise


def test_a_run_read_twice_is_counted_once_and_two_files_of_one_run_are_refused(tmp_path):
    import json

    from harness.results import load_results

    def write(folder, method, seed, **extra):
        path = tmp_path / folder / method / f"seed{seed}" / "result.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(fake_result(method, seed, 0.5, **extra)))
        return path

    for seed in range(3):
        write("a", "ew", seed)
    # The folder and one of its files: three runs, not four.
    assert len(load_results([tmp_path / "a", tmp_path / "a" / "ew" / "seed0"])) == 3
    copy = write("b", "ew", 0)
    with pytest.raises(ConfigError, match=r"results of the same run \(ew, seed 0 on Toy-v0\)"):
        load_results([tmp_path / "a", copy])
    write("c", "ew", 0, variant="lr=0.01")  # another variant of that seed is another run
    assert len(load_results([tmp_path / "a", tmp_path / "c"])) == 4
    with pytest.raises(ConfigError, match=r"No result files \(result.json\) below \['.*empty'\]"):
        (tmp_path / "empty").mkdir()
        load_results([tmp_path / "empty"])


def test_variants_have_their_own_run_folders():
    from harness.results import run_dir

    plain = RunConfig(output_dir="out", env_id="LossWeighting-Cubic-v1")
    labelled = RunConfig(output_dir="out", env_id="LossWeighting-Cubic-v1", variant=3)
    assert labelled.variant == "3"  # `variant=3` on the command line is the label "3"
    assert run_dir(plain, "ew", 0).as_posix() == "out/LossWeighting-Cubic-v1/ew/seed0"
    assert (
        run_dir(labelled, "ew", 0, "B=2").as_posix() == "out/LossWeighting-Cubic-v1/ew/B=2/3/seed0"
    )
    # Labels that would put the run in another run's folder: the plain run's (".") or
    # another method's (".."), or inside the plain run's seed folder ("seed0").
    for bad in ("a/b", "a\\b", ".", "..", "seed0", ""):
        with pytest.raises(ConfigError, match="`variant` must be a non-empty label without '/'"):
            RunConfig(variant=bad)
    assert RunConfig(variant="seed").variant == "seed"


def test_ctrl_c_is_one_line_with_how_to_go_on(monkeypatch, capsys):
    from harness import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_run", interrupted)
    assert cli.main(["run", "configs/quickstart.yaml"]) == 130
    err = capsys.readouterr().err
    assert "mtl-envs run: interrupted; the same command with resume=true continues" in err
    assert "Traceback" not in err


def test_the_table_says_when_it_reads_the_best_validation_epoch():
    from harness.compare import format_table, summarize

    results = [
        {**fake_result("a", s, 0.5), "best": {"test/accuracy": 0.6, "epoch": 2}} for s in range(3)
    ]
    best = format_table(summarize(results, "test/accuracy", which="best"))
    final = format_table(summarize(results, "test/accuracy"))
    assert "test/accuracy % at the best-validation epoch (mean +- std)" in best
    assert "60.00 +- 0.00" in best and "50.00 +- 0.00" in final
    assert "best-validation" not in final


def test_compare_warns_when_its_runs_trained_under_different_protocols():
    from harness.compare import protocol_differences

    def run(method, seed, epochs, **kwargs):
        config = {"epochs": epochs, "env_kwargs": {"data_root": "/x", **kwargs}}
        return {**fake_result(method, seed, 0.5), "config": config}

    same = [run("ew", 0, 3), run("stl", 0, 3, data_root="/elsewhere")]  # data folder aside
    assert protocol_differences(same) == []
    mixed = [*same, run("igbv2", 0, 6), run("rlw", 0, 3, lr=0.1)]
    assert protocol_differences(mixed) == [
        "Toy-v0: runs of different protocols are compared (ew, stl: epochs 3; rlw: epochs 3, "
        'env_kwargs {"lr": 0.1}; igbv2: epochs 6).'
    ]
    # Another variant is another row: its protocol may differ.
    assert protocol_differences([*same, {**run("ew", 1, 6), "variant": "long"}]) == []


def test_compare_warns_when_T_divides_times_taken_under_other_conditions():
    from harness.compare import summarize, timing_differences

    def run(method, seed, seconds, threads=2, sharing=1):
        return {
            **fake_result(method, seed, 0.5),
            "config": {"epochs": 3, "env_kwargs": {}},
            "train_time_s": seconds,
            "platform": {"cpu": "AMD EPYC", "torch_threads": threads},
            "concurrent_runs": sharing,
        }

    alike = [run("ew", 0, 10.0), run("igbv2", 0, 15.0), run("ew", 1, 10.0), run("rlw", 1, 12.0)]
    assert timing_differences(alike) == []
    assert summarize(alike, "test/accuracy")[1]["T"] == 1.5  # igbv2's 15 s over EW's 10 s
    unlike = [*alike, run("ew", 2, 10.0), run("igbv2", 2, 30.0, threads=1)]
    assert timing_differences(unlike) == [
        "Toy-v0 igbv2: T divides times measured under other conditions than EW's "
        "(torch_threads 1 against 2)."
    ]
    # Runs that shared the machine (EW's own row says nothing: its T is 1 by definition).
    shared = [run("ew", 0, 10.0, sharing=2), run("rlw", 0, 12.0, sharing=2)]
    assert timing_differences(shared) == [
        "Toy-v0 rlw: T divides times of runs that shared the machine (concurrent runs 2; "
        "None: not known): their neighbours' load is in it."
    ]
    # Results from before the field was recorded are not flagged against each other...
    legacy = [{k: v for k, v in r.items() if k != "concurrent_runs"} for r in alike]
    assert timing_differences(legacy) == []
    # ...but are against a run that recorded it.
    assert timing_differences([legacy[0], alike[1]]) == [
        "Toy-v0 igbv2: T divides times measured under other conditions than EW's "
        "(concurrent_runs 1 against not recorded)."
    ]


def test_normalized_scores_only_for_runs_of_the_reference_protocol(monkeypatch):
    # Three or four seeds a side, as worked by hand: intervals from 3 on (their own test
    # checks the 5-seed floor).
    monkeypatch.setattr("harness.compare.MIN_INTERVAL_SEEDS", 3)
    from harness.compare import on_reference_protocol, summarize

    def run(seed, epochs, value=0.3, **kwargs):
        return {
            "method": "ew",
            "env_id": "LossWeighting-CubicScales-v1",
            "seed": seed,
            "final": {"test/mean_nmse": value},
            "config": {"epochs": epochs, "env_kwargs": kwargs},
            "epochs": [{"epoch": e + 1} for e in range(epochs)],  # an epoch-based runner's
        }

    assert on_reference_protocol(run(0, 100, data_root="/data"))  # the registered 100 epochs
    assert not on_reference_protocol(run(0, 8))
    assert not on_reference_protocol(run(0, 100, lr=0.1))
    # Scored from whole episodes (an agent trained over several runs): no epoch history, and
    # the config's epochs set nothing.
    assert on_reference_protocol({**run(0, 10), "epochs": []})
    full = summarize([run(s, 100) for s in range(3)], "test/mean_nmse")
    short = summarize([run(s, 8) for s in range(3)], "test/mean_nmse")
    assert "normalized" in full[0] and "normalized" not in short[0]
    # The references score the final network: a best-epoch row has no normalised score.
    best = [{**run(s, 100), "best": {"test/mean_nmse": 0.2}} for s in range(3)]
    assert "normalized" not in summarize(best, "test/mean_nmse", which="best")[0]
    # A grouping method's result per budget matches the references only at the id's budget
    # (TaskGrouping-Digits10Scarce-v1 registers 3).
    grouping = {
        "method": "random",
        "env_id": "TaskGrouping-Digits10Scarce-v1",
        "seed": 0,
        "final": {"test/total_gain": 1.0},
        "config": {"epochs": 1, "env_kwargs": {}},
    }
    assert on_reference_protocol({**grouping, "setting": "B=3"})
    assert not on_reference_protocol({**grouping, "setting": "B=2"})
    assert not on_reference_protocol({**grouping, "setting": "B=4"})


def test_the_normalised_interval_with_the_scale_ends_resampled_by_hand():
    from harness.compare import normalized_interval

    # Ends without spread leave only the method's runs: five equal runs, no width at all.
    assert normalized_interval([0.5] * 5, [0.0] * 5, [1.0] * 5, reps=2_000) == (0.5, 0.5)
    # A random end of two seeds, 0 and 0.2: a resample's mean is 0, 0.1 or 0.2 with chances
    # 1/4, 1/2, 1/4, so (0.5 - m) / (1 - m) is 0.5, 0.444 or 0.375, and the 2.5th and
    # 97.5th percentiles are the two outer values.
    assert normalized_interval([0.5] * 5, [0.0, 0.2], [1.0] * 3, reps=20_000) == pytest.approx(
        (0.375, 0.5)
    )
    # Lower is better (best below random): the same map, so the same numbers.
    low, high = normalized_interval([0.5] * 5, [1.0, 0.8], [0.0] * 3, reps=20_000)
    assert (low, high) == pytest.approx((0.375, 0.5))


def test_rows_resample_the_scale_ends_where_the_references_keep_their_values(monkeypatch):
    monkeypatch.setattr("harness.compare.MIN_INTERVAL_SEEDS", 3)
    from harness.compare import format_table, summarize

    table = toy_reference_scores(
        monkeypatch,
        random={"mean": 0.1, "std": 0.1414, "n": 2},
        best={"mean": 1.0, "std": 0.0, "n": 3},
    )
    runs = [
        {**fake_result("ew", s, 0.5), "config": {"epochs": 3, "env_kwargs": {}}} for s in range(5)
    ]
    row = summarize(runs, "test/accuracy")[0]
    assert row["normalized"] == pytest.approx([0.4444444] * 3)  # (0.5 - 0.1) / 0.9, no width
    assert "normalized_ends" not in row  # reference scores kept without their values
    table["Toy-v0"]["policies"]["random"]["values"] = [0.0, 0.2]
    table["Toy-v0"]["policies"]["human"]["values"] = [1.0] * 3
    row = summarize(runs, "test/accuracy")[0]
    assert row["normalized_ends"] == pytest.approx([0.375, 0.5])  # worked above
    text = format_table([row])
    # (0.5 - 0.2) / 0.8 is 0.37499999999999994 in floating point.
    assert "95% CI, ends resampled" in text and "[0.37, 0.50]" in text


def test_compare_plots_png_only_and_table2_needs_settings(tmp_path, capsys):
    import json

    from harness.paper_tables import format_table2

    assert main(["compare", str(tmp_path), "--plot", str(tmp_path / "p.pdf")]) == 2
    assert "`--plot` names the PNG file to write: end it in .png" in capsys.readouterr().err
    assert not (tmp_path / "p.pdf").exists()

    path = tmp_path / "r" / "result.json"
    path.parent.mkdir()
    path.write_text(json.dumps({**fake_result("hypernet", 0, 0.5), "final": {"test/raw_mse": 1}}))
    with pytest.raises(ConfigError, match="Table 2 reads the tabular protocol's results"):
        format_table2([tmp_path / "r"])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_output_dir_below_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """`output_dir: base.yaml/sub` used to train an epoch, then die in save_checkpoint."""
    import harness.cli as cli

    monkeypatch.setattr(cli, "resolve", lambda *a: pytest.fail("a run started"))
    a_file = tmp_path / "base.yaml"
    a_file.write_text("method: ew\n")
    for out in (a_file / "sub", a_file / "sub" / "deeper"):
        config = write_config(tmp_path, method="ew", env_id="LossWeighting-Cubic-v1", epochs=2)
        assert main(["run", str(config), f"output_dir={out}"]) == 2
        assert f"`output_dir` '{out}' lies under '{a_file}', which is a file" in (
            _one_line_error(capsys)
        )
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        RunConfig(output_dir=str(a_file))
    assert RunConfig(output_dir=str(tmp_path / "new" / "folder")).output_dir  # may not exist yet


def test_an_empty_config_file_is_refused(tmp_path, capsys, monkeypatch):
    """An empty file used to train the defaults (PPO on AuxLabel-Digits-v1) without a word."""
    import harness.cli as cli

    monkeypatch.setattr(cli, "resolve", lambda *a: pytest.fail("a run started"))
    path = tmp_path / "empty.yaml"
    for text, what in (("", "is empty"), ("# nothing yet\n", "is empty"), ("{}\n", "is empty")):
        path.write_text(text)
        assert main(["run", str(path)]) == 2
        line = _one_line_error(capsys)
        assert f"Config '{path}' {what}: a config must name at least `env_id` or `method`" in line
    path.write_text("epochs: 3\n")
    assert main(["run", str(path)]) == 2
    assert "names neither `env_id` nor `method`" in _one_line_error(capsys)
    # Either one named, in the file or as an override, is a config.
    assert RunConfig.from_file(path, ["env_id=LossWeighting-Cubic-v1"]).methods == ["ppo"]
    path.write_text("method: ew\n")
    assert RunConfig.from_file(path).env_id == "AuxLabel-Digits-v1"


def test_compare_says_what_it_reads_and_never_to_delete_the_users_file(tmp_path, capsys):
    """`compare base.yaml` used to call the config corrupt JSON and advise deleting it."""
    config = write_config(tmp_path, method="ew", env_id="LossWeighting-Cubic-v1")
    notes = tmp_path / "notes.json"
    notes.write_text('{"method": ')
    for path in (config, notes):
        assert main(["compare", str(path)]) == 2
        line = _one_line_error(capsys)
        assert f"'{path}' is not a result file" in line
        assert "compare reads result folders and the result.json files of runs" in line
        assert "delete" not in line
    # A run's own result.json, truncated, is recomputed by running it again.
    broken = tmp_path / "out" / "seed0" / "result.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"method": ')
    for path in (broken, tmp_path / "out"):
        assert main(["compare", str(path)]) == 2
        assert "delete it to recompute it" in _one_line_error(capsys)


def test_a_run_reports_only_its_own_variants_results(tmp_path):
    from harness.cli import _written
    from harness.results import make_result, run_dir
    from mtl_envs.io import atomic_write_json

    def config(variant):
        return RunConfig(output_dir=str(tmp_path), env_id="LossWeighting-Cubic-v1", variant=variant)

    for variant in (None, "a", "b"):
        for setting in (None, "B=2"):
            made = config(variant)
            result = make_result(made, "ew", 0, final={"test/rmse": 1.0}, setting=setting)
            atomic_write_json(run_dir(made, "ew", 0, setting) / "result.json", result)
    for variant in (None, "a", "b"):
        found = _written(config(variant), "ew", 0, {"returned": True})
        assert sorted((r["variant"], str(r["setting"])) for r in found) == [
            (variant, "B=2"),
            (variant, "None"),
        ]


def test_python_m_harness_train_reads_the_files_own_methods_sections(tmp_path, monkeypatch, capsys):
    """`mtl-envs run FILE method=ew` accepts IGBv2's `method_kwargs` of a file written for
    IGBv2 and its baselines; the module entry point checks the same way."""
    from harness import train

    ran = []

    def runner(config, seed):
        ran.append((config.methods, seed))
        return {"env_id": config.env_id, "final": {"test/mean_mse": 1.0}}

    monkeypatch.setattr(train, "resolve", lambda env_id, method: runner)
    path = tmp_path / "run.yaml"
    path.write_text(
        "env_id: LossWeighting-Cubic-v1\nmethod: [igbv2, ew]\nmethod_kwargs: {update_epoch: 4}\n"
    )
    assert train.main([str(path), "method=ew"]) == 0, capsys.readouterr().err
    assert ran == [(["ew"], 0)]


def test_compare_spreads_are_the_sample_std_and_its_standard_error(tmp_path, capsys):
    """Two seeds at 0.4 and 0.6: the sample standard deviation (n - 1) is 0.1414 (the
    population's would be 0.1), its standard error 0.1; `--spread sem` prints the latter."""
    from harness.compare import summarize
    from mtl_envs.io import atomic_write_json as write

    (row,) = summarize([fake_result("ew", 0, 0.4), fake_result("ew", 1, 0.6)])
    assert row["std"] == pytest.approx(0.1414, abs=1e-4) and row["sem"] == pytest.approx(0.1)
    for seed, value in ((0, 0.4), (1, 0.6)):
        write(tmp_path / f"ew/seed{seed}/result.json", fake_result("ew", seed, value))
    main(["compare", str(tmp_path), "--spread", "sem"])
    printed = capsys.readouterr().out
    assert "(mean +- sem)" in printed and "+- 10.00" in printed


@pytest.mark.parametrize("diverged_first", [True, False])
def test_compare_plot_scales_past_a_diverged_row(tmp_path, diverged_first):
    """A diverged run makes its row's mean NaN; the plot's scale comes from the other rows
    whichever row comes first."""
    from harness.compare import plot_summary, summarize

    results = [fake_result("dwa", 0, math.nan, status="diverged")]
    results += [fake_result("dwa", s, 0.7) for s in (1, 2)]
    results += [fake_result("ew", s, 0.7 + 0.01 * s) for s in range(3)]
    rows = summarize(results)
    assert math.isnan(next(r["mean"] for r in rows if r["method"] == "dwa"))
    rows.sort(key=lambda r: (r["method"] != "dwa") == diverged_first)
    path = plot_summary(rows, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_figure_from_fewer_seeds_than_its_row_says_so():
    """One seed has no spread (n/a, not +- 0); Δm and T from the seeds with an STL and an
    EW run of their own name how many those are."""
    from harness.compare import format_table, summarize

    def run(method, seed, nmse, seconds):
        return {
            "method": method,
            "env_id": "Toy-v0",
            "seed": seed,
            "final": {"test/mean_mse": nmse, "test/a/mse": nmse, "test/b/mse": nmse},
            "train_time_s": seconds,
            "wall_time_s": seconds,
        }

    results = [run("uw", s, 1.0 + s, 2.0) for s in range(5)]
    results += [run("stl", s, 2.0, 1.0) for s in (0, 1)]  # Δm: 100 * (1 - 2) / 2, 0
    results += [run("ew", 0, 3.0, 1.0)]
    rows = {r["method"]: r for r in summarize(results)}
    assert rows["uw"]["delta_m"] == pytest.approx(-25.0) and rows["uw"]["delta_m_n"] == 2
    assert rows["uw"]["T"] == pytest.approx(2.0) and rows["uw"]["T_n"] == 1
    table = format_table(list(rows.values()))
    (uw,) = [line for line in table.splitlines() if line.startswith("Toy-v0  uw ")]
    assert "-25.00 +- 35.36 (2 of 5 seeds)" in uw and "2.00 (1 of 5 seeds)" in uw
    (ew,) = [line for line in table.splitlines() if line.startswith("Toy-v0  ew ")]
    assert "3.0000 +- n/a" in ew and "1.00" in ew and "of" not in ew.split("+- n/a")[1]


def test_a_row_every_seed_of_which_gave_one_value_says_so():
    """TAG's selection from a fixed gain table is the same whatever the seed: five equal
    values, whose zero-width interval measures nothing, and the seeds cell says so."""
    from harness.compare import format_table, summarize

    results = [fake_result("tag", s, 0.7) for s in range(5)]
    results += [fake_result("random", s, 0.5 + 0.01 * s) for s in range(5)]
    table = format_table(summarize(results))
    (tag,) = [line for line in table.splitlines() if " tag " in line]
    (random,) = [line for line in table.splitlines() if " random " in line]
    assert "70.00 [70.00, 70.00]" in tag and "5 (all equal)" in tag
    assert "all equal" not in random
