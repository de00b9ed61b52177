"""Sweeps: grids, interrupted sweeps that finish without duplicates, failures, Ray."""

import json
import signal
import sys
import types
from pathlib import Path

import pytest
import yaml

from harness.sweep import SweepConfig, expand, run_sweep
from mtl_envs.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"train_batch_size": 20, "eval_batch_size": 32}


def sweep_file(tmp_path, **extra) -> Path:
    values = {
        "base": {
            "env_id": "LossWeighting-Cubic-v1",
            "epochs": 5,
            "tensorboard": False,
            "env_kwargs": {"device": "cpu"},
        },
        "grid": {"method": ["ew", "rlw"], "seeds": [0, 1]},
        "output_dir": str(tmp_path / "sweep"),
        "workers": 1,
        **extra,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_expand_grid_with_variants(tmp_path):
    sweep = SweepConfig.from_file(
        sweep_file(
            tmp_path,
            grid={"method": ["ew"], "seeds": [0, 1], "overrides": [{}, {"env_kwargs.lr": 0.01}]},
        )
    )
    runs = expand(sweep)
    assert len(runs) == 4 and len({r.key for r in runs}) == 4
    # Seed-major: both variants of seed 0 before seed 1.
    assert [r.config["seeds"] for r in runs] == [[0], [0], [1], [1]]
    lrs = sorted(str(r.config["env_kwargs"].get("lr")) for r in runs)
    assert lrs == ["0.01", "0.01", "None", "None"]
    assert all(r.config["progress"] is False for r in runs)  # the sweep reports each run


def test_a_grid_takes_what_it_leaves_out_from_the_base(tmp_path, monkeypatch):
    """Seeds (and methods, env ids) the grid does not list are the base config's; the
    output folder is made absolute, so Ray workers elsewhere write to the same place."""
    monkeypatch.chdir(tmp_path)
    base = {"env_id": "LossWeighting-Cubic-v1", "seeds": [3, 4], "method": "rlw", "epochs": 5}
    runs = expand(SweepConfig(base=base, output_dir="out"))
    assert [(r.config["method"], r.config["seeds"]) for r in runs] == [("rlw", [3]), ("rlw", [4])]
    assert {r.config["output_dir"] for r in runs} == {str(tmp_path.resolve() / "out")}
    for key in ("method", "seeds", "env_id", "overrides"):
        with pytest.raises(ConfigError, match=f"Grid `{key}` must not be empty"):
            expand(SweepConfig(base=base, grid={key: []}, output_dir="out"))


def test_small_floats_stay_numbers_in_files_overrides_and_grids(tmp_path):
    # YAML 1.1 reads `1e-5` as text; a learning rate written so must stay a number.
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "base: {env_id: LossWeighting-Cubic-v1, env_kwargs: {lr: 1e-5}}\n"
        "grid: {method: [igbv2], overrides: [{agent.learning_rate: 3e-4}]}\n"
        f"output_dir: {tmp_path / 'sweep'}\n"
    )
    (run,) = expand(SweepConfig.from_file(path))
    assert run.config["env_kwargs"]["lr"] == 1e-5 and run.config["agent"]["learning_rate"] == 3e-4
    (run,) = expand(SweepConfig.from_file(path, ["base.env_kwargs.lr=2E-4"]))
    assert run.config["env_kwargs"]["lr"] == 2e-4


def test_a_sweep_checks_its_runs_as_mtl_envs_run_does_before_any_starts(tmp_path):
    path = tmp_path / "sweep.yaml"

    def sweep(base: str, grid: str) -> SweepConfig:
        path.write_text(f"base: {base}\ngrid: {grid}\noutput_dir: {tmp_path / 'out'}\n")
        return SweepConfig.from_file(path)

    cubic = "env_id: LossWeighting-Cubic-v1, epochs: 10"
    # Agent settings that no method of the sweep reads.
    with pytest.raises(ConfigError, match=r"`agent` settings \['gamma'\] are read by none"):
        expand(sweep(f"{{{cubic}, agent: {{gamma: 0.9}}}}", "{method: [ew, rlw]}"))
    # A grid of baselines over a config written for IGBv2: its agent settings are IGBv2's.
    runs = expand(sweep(f"{{{cubic}, method: igbv2, agent: {{gamma: 0.9}}}}", "{method: [ew]}"))
    assert [run.config["method"] for run in runs] == ["ew"]
    # The agents' own checks, and the env's arguments, before the first run.
    with pytest.raises(ConfigError, match="gamma"):
        expand(sweep(f"{{{cubic}, agent: {{gamma: 5}}}}", "{method: [ew, igbv2]}"))
    with pytest.raises(ConfigError, match="reward"):
        expand(sweep(f"{{{cubic}, env_kwargs: {{reward: minn}}}}", "{method: [ew]}"))
    # A baseline has no warm-up to outlast, however its run length is written.
    short = "env_id: LossWeighting-Cubic-v1, epochs: 1, env_kwargs: {epochs: 1}"
    assert len(expand(sweep(f"{{{short}}}", "{method: [ew]}"))) == 1
    # Over two families, the base's methods of one read nothing of the other's runs.
    two = "{env_id: [AuxLabel-Digits-v1, LossWeighting-Digits10-v1], method: [stl]}"
    assert len(expand(sweep("{method: [ppo, stl], epochs: 3}", two))) == 2


def test_a_run_whose_config_changed_runs_again(tmp_path):
    path = sweep_file(tmp_path, grid={"method": ["ew"], "seeds": [0]})
    markers, key = tmp_path / "sweep" / ".sweep", "LossWeighting-Cubic-v1__ew__seed0"
    markers.mkdir(parents=True)
    (markers / f"{key}.failed.json").write_text("{}")  # an earlier try that failed
    first = run_sweep(SweepConfig.from_file(path, ["base.epochs=2"]), progress=False)
    assert first["done"] == [key] and not (markers / f"{key}.failed.json").exists()
    same = run_sweep(SweepConfig.from_file(path, ["base.epochs=2"]), progress=False)
    assert len(same["skipped"]) == 1 and not same["done"]
    assert json.loads((markers / "sweep.json").read_text())["runs"] == [key]  # skipped too
    (markers / f"{key}.done.json").write_text('{"run": "')  # cut short: not a finished run
    again = run_sweep(SweepConfig.from_file(path, ["base.epochs=2"]), progress=False)
    assert again["done"] == [key] and not again["skipped"]
    (markers / f"{key}.done.json").write_text("[]")  # valid JSON, but no run wrote it
    again = run_sweep(SweepConfig.from_file(path, ["base.epochs=2"]), progress=False)
    assert again["done"] == [key] and not again["skipped"]
    changed = run_sweep(SweepConfig.from_file(path, ["base.epochs=3"]), progress=False)
    assert len(changed["done"]) == 1 and not changed["skipped"]
    result = json.loads(next((tmp_path / "sweep").rglob("result.json")).read_text())
    assert len(result["epochs"]) == 3


def test_interrupted_sweep_finishes_without_duplicates(tmp_path, run_killed):
    path = sweep_file(tmp_path)
    markers = tmp_path / "sweep" / ".sweep"
    # SIGKILL right after the first run of four has finished (workers=1: one at a time).
    status = run_killed("harness.sweep:execute", 1, ["sweep", str(path)])
    assert status == -signal.SIGKILL
    finished_before = len(list(markers.glob("*.done.json")))
    assert finished_before == 1
    outcome = run_sweep(SweepConfig.from_file(path, ["workers=2"]), progress=False)
    assert len(outcome["skipped"]) == finished_before
    assert len(outcome["done"]) == 4 - finished_before and not outcome["failed"]
    results = sorted((tmp_path / "sweep").rglob("result.json"))
    keys = [
        (json.loads(p.read_text())["method"], json.loads(p.read_text())["seed"]) for p in results
    ]
    assert sorted(keys) == [("ew", 0), ("ew", 1), ("rlw", 0), ("rlw", 1)]
    # Each result says how many runs shared the machine: the run of the one-worker sweep ran
    # alone, the rest two at a time.
    sharing = sorted(json.loads(p.read_text())["concurrent_runs"] for p in results)
    assert sharing == [1] * finished_before + [2] * (4 - finished_before)
    assert not list((tmp_path / "sweep").rglob("*.tmp*"))  # no half-written files
    again = run_sweep(SweepConfig.from_file(path), progress=False)
    assert len(again["skipped"]) == 4 and not again["done"]


def test_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    path = sweep_file(
        tmp_path,
        grid={"method": ["ew", "stl_naive"], "seeds": [0]},
    )
    sweep = SweepConfig.from_file(path, ["base.method_kwargs={metadata: true}"])
    outcome = run_sweep(sweep, progress=False)
    assert outcome["done"] == ["LossWeighting-Cubic-v1__ew__seed0"]
    failed = outcome["failed"]
    assert len(failed) == 1 and "stl_naive" in failed[0]
    record = json.loads((tmp_path / "sweep/.sweep" / f"{failed[0]}.failed.json").read_text())
    assert "cannot use task metadata" in record["error"]


def fake_ray(monkeypatch, initialized=False, run=True, dies=()) -> dict:
    """A stand-in for the ``ray`` module that runs each remote call at once (or, with
    ``run=False``, only records its arguments), and whose ``get`` raises for runs in
    ``dies`` as it does for a Ray worker that died. Returns what it was called with."""
    calls = {"runs": []}

    class Ref:
        def __init__(self, fn, args):
            self.key = args[0]
            self.value = fn(*args) if run else "done"
            calls["runs"].append(args)

    def remote(**resources):
        calls["resources"] = resources
        return lambda fn: types.SimpleNamespace(remote=lambda *args: Ref(fn, args))

    def get(ref):
        if ref.key in dies:
            raise RuntimeError("worker died")
        return ref.value

    fake = types.SimpleNamespace(
        is_initialized=lambda: initialized,
        init=lambda address: calls.setdefault("address", address),
        remote=remote,
        wait=lambda refs, num_returns: (refs[:num_returns], refs[num_returns:]),
        get=get,
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    return calls


def test_ray_backend_ships_runs_to_ray(tmp_path, monkeypatch):
    calls = fake_ray(monkeypatch)
    ray = {"address": "ray://head:10001", "num_cpus": 2, "num_gpus": 0.5}
    path = sweep_file(tmp_path, backend="ray", ray=ray)
    outcome = run_sweep(SweepConfig.from_file(path, ["grid.seeds=[0]"]), progress=False)
    assert sorted(outcome["done"]) == sorted(
        ["LossWeighting-Cubic-v1__ew__seed0", "LossWeighting-Cubic-v1__rlw__seed0"]
    )
    assert calls["resources"] == {"num_cpus": 2, "num_gpus": 0.5}
    assert calls["address"] == "ray://head:10001"
    # The cluster, not the sweep, decides how many runs share a machine: not known.
    results = [json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("result.json")]
    assert len(results) == 2 and all(r["concurrent_runs"] is None for r in results)


def test_ray_settings_left_out_take_their_defaults(tmp_path, monkeypatch):
    """No `ray:` keys: an existing cluster (`address: auto`), as many CPUs per run as the
    run's torch threads and no GPU; markers in the sweep's folder as an absolute path (a
    worker's working directory is not the sweep's); a Ray that is already up is used as it
    is; a run whose Ray worker died is recorded as failed, and the others go on."""
    monkeypatch.chdir(tmp_path)
    grid = {"method": ["ew", "rlw"], "seeds": [0]}
    path = sweep_file(tmp_path, backend="ray", threads_per_run=3, grid=grid, output_dir="out")
    sweep = SweepConfig.from_file(path)
    assert sweep.ray == {}
    died = "LossWeighting-Cubic-v1__rlw__seed0"
    calls = fake_ray(monkeypatch, run=False, dies=[died])
    outcome = run_sweep(sweep, progress=False)
    assert outcome == {
        "done": ["LossWeighting-Cubic-v1__ew__seed0"],
        "skipped": [],
        "failed": [died],
    }
    assert calls["address"] == "auto"
    assert calls["resources"] == {"num_cpus": 3, "num_gpus": 0}
    markers = tmp_path.resolve() / "out" / ".sweep"
    # The markers' folder, the threads, and no count of the runs sharing a machine.
    assert [args[2:] for args in calls["runs"]] == [(str(markers), 3, None)] * 2
    record = json.loads((markers / f"{died}.failed.json").read_text())
    assert record["error"] == "RuntimeError: worker died"
    # An address of its own and a Ray already started: no second `ray.init`.
    calls = fake_ray(monkeypatch, initialized=True, run=False)
    path = sweep_file(tmp_path, backend="ray", ray={"address": "ray://head:10001"}, grid=grid)
    run_sweep(SweepConfig.from_file(path), progress=False)
    assert "address" not in calls and calls["resources"] == {"num_cpus": 1, "num_gpus": 0}


def test_ray_backend_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    path = sweep_file(tmp_path, backend="ray")
    with pytest.raises(ImportError, match="pip install") as caught:
        run_sweep(SweepConfig.from_file(path), progress=False)
    assert isinstance(caught.value, ConfigError)  # the CLI says it in one line


def test_a_base_that_is_not_a_run_config_is_one_clear_error(tmp_path, capsys):
    """`base:` naming a YAML list, or `base: 5`, used to end in AttributeError / TypeError;
    a folder given as the sweep file used to be called missing."""
    from harness.cli import main

    listed = tmp_path / "listed.yaml"
    listed.write_text("- a\n- b\n")
    path = tmp_path / "sweep.yaml"
    out = f"output_dir: {tmp_path / 'out'}\n"
    cases = (
        (
            "base: listed.yaml\n",
            f"Sweep `base` config '{listed}' must be a YAML mapping of run-config keys "
            "(method, env_id, epochs, ...); got list data.",
        ),
        ("base: 5\n", "`base` must be the path of a run-config YAML file"),
        ("base: [1, 2]\n", "or an inline mapping of run-config keys; got [1, 2]."),
        (f"base: {tmp_path}\n", f"Sweep `base` config '{tmp_path}' is a directory"),
    )
    for base, message in cases:
        path.write_text(base + "grid: {method: [ew]}\n" + out)
        with pytest.raises(ConfigError) as caught:
            expand(SweepConfig.from_file(path))
        assert message in str(caught.value)
        assert main(["sweep", str(path)]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ConfigError, match=f"Sweep file '{tmp_path}' is a directory; give a YAML"):
        SweepConfig.from_file(tmp_path)
    assert not (tmp_path / "out").exists()


def test_overrides_of_keys_the_sweep_sets_are_refused(tmp_path):
    """The sweep sets method, seeds, env id, output folder and label for every run: an
    override of one of them was dropped while its label still named the run's folder."""
    for override, hint in (
        ({"seeds": [7]}, "grid.seeds"),
        ({"method": "uw"}, "grid.method"),
        ({"output_dir": str(tmp_path / "elsewhere")}, "sweep's own `output_dir`"),
        ({"variant": "mine"}, "label is made from its keys"),
        ({"env_id": "LossWeighting-Exam-v1"}, "grid.env_id"),
    ):
        path = sweep_file(tmp_path, grid={"method": ["ew"], "overrides": [override]})
        with pytest.raises(ConfigError, match="is set by the sweep for every run") as caught:
            expand(SweepConfig.from_file(path))
        assert repr(next(iter(override))) in str(caught.value) and hint in str(caught.value)


def test_a_repeated_override_set_is_named(tmp_path):
    path = sweep_file(tmp_path, grid={"method": ["ew"], "overrides": [{"epochs": 3}] * 2})
    with pytest.raises(ConfigError, match="epochs=3.*two `overrides` sets with the same keys"):
        expand(SweepConfig.from_file(path))


def test_malformed_sweep_fields_are_one_clear_error(tmp_path):
    """Empty `grid:`/`ray:` are no settings, as an empty `base:` is; wrong types used to end
    in TypeError or AttributeError, and an empty output folder meant the working directory."""
    path = tmp_path / "sweep.yaml"
    path.write_text("base: {env_id: LossWeighting-Cubic-v1, method: ew}\ngrid:\nray:\n")
    assert SweepConfig.from_file(path).grid == {}
    for text, message in (
        ("grid: [method]\n", "`grid` must be a mapping"),
        ("output_dir: 5\n", "`output_dir` must be a string; got 5."),
        ("output_dir: ''\n", "`output_dir` must name a folder"),
        ("ray: {num_cpus: -1}\n", "`ray.num_cpus` must be a positive finite number; got -1."),
        ("ray: {num_gpus: -0.5}\n", "`ray.num_gpus` must be a non-negative finite number"),
        ("workers: two\n", "`workers` must be an int"),
        ("threads_per_run: 0\n", "`threads_per_run` must be a positive int; got 0."),
        ("ray: {num_cpus: 0}\n", "`ray.num_cpus` must be a positive finite number; got 0."),
        ("ray: {num_cpu: 1}\n", "Unknown `ray` keys ['num_cpu']; valid: address, num_cpus"),
    ):
        path.write_text("base: {env_id: LossWeighting-Cubic-v1}\n" + text)
        with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
            SweepConfig.from_file(path)
    path.write_text("ray: {num_gpus: 0, num_cpus: 0.5}\n")  # Ray takes fractions of a device
    assert SweepConfig.from_file(path).ray == {"num_gpus": 0, "num_cpus": 0.5}


def test_a_relative_base_is_read_beside_the_sweep_file_first(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("method: uw\n")  # a decoy in the working directory
    (tmp_path / "sub" / "base.yaml").write_text("method: ew\n")
    (tmp_path / "sub" / "sweep.yaml").write_text("base: base.yaml\n")
    (tmp_path / "only_here.yaml").write_text("method: rlw\n")
    (tmp_path / "sub" / "other.yaml").write_text("base: only_here.yaml\n")
    monkeypatch.chdir(tmp_path)
    assert SweepConfig.from_file("sub/sweep.yaml").base_values()["method"] == "ew"
    # Not beside it: the working directory's, as a path typed from the project's root.
    assert SweepConfig.from_file("sub/other.yaml").base_values()["method"] == "rlw"


def test_long_override_labels_stay_short_and_distinct():
    """An override set's label names a folder: past 60 characters it is cut and keeps a
    hash of the whole set, so two long sets that share their first 48 characters differ."""
    from harness.sweep import _variant_name

    short = _variant_name({"env_kwargs.lr": 0.01})
    assert short == "env_kwargs.lr=0.01"
    common = {"env_kwargs.backbone_kwargs.hidden": [64, 64], "env_kwargs.head_hidden": 32}
    a = _variant_name({**common, "env_kwargs.lr": 0.01})
    b = _variant_name({**common, "env_kwargs.lr": 0.02})
    assert len(a) == len(b) == 48 + 1 + 8 and a[:48] == b[:48] and a != b
    assert all(c.isalnum() or c in "=.,-_" for c in a)  # no path separators or spaces


def fake_runs(monkeypatch, fail: bool = False) -> None:
    """Runs that write a result at once (or raise, like a run out of memory)."""
    import harness.registry
    from harness.results import write_result

    def runner(config, seed):
        if fail:
            raise RuntimeError("out of memory")
        return write_result(config, config.methods[0], seed, {"test/mean_nmse": 0.5})

    monkeypatch.setattr(harness.registry, "resolve", lambda env_id, method: runner)


def small_sweep(out: Path, **env_kwargs) -> SweepConfig:
    return SweepConfig(
        base={"env_id": "LossWeighting-CubicScales-v1", "epochs": 3, "env_kwargs": env_kwargs},
        grid={"method": ["ew", "uw"], "seeds": [0, 1]},
        output_dir=str(out),
        workers=1,
    )


def test_a_moved_sweep_or_another_data_root_keeps_its_finished_runs(tmp_path, monkeypatch):
    fake_runs(monkeypatch)
    first = run_sweep(small_sweep(tmp_path / "sweep", data_root="/data/a"), progress=False)
    assert len(first["done"]) == 4
    (tmp_path / "sweep").rename(tmp_path / "moved")
    again = run_sweep(small_sweep(tmp_path / "moved", data_root="/mnt/b"), progress=False)
    assert len(again["skipped"]) == 4 and not again["done"]
    # What the runs compute still decides: another learning rate runs them again.
    changed = run_sweep(small_sweep(tmp_path / "moved", lr=3e-4), progress=False)
    assert len(changed["done"]) == 4 and not changed["skipped"]


def test_a_changed_run_that_fails_leaves_no_result_of_the_old_config(tmp_path, monkeypatch):
    from harness.results import load_results

    fake_runs(monkeypatch)
    run_sweep(small_sweep(tmp_path / "sweep", lr=1e-3), progress=False)
    other = small_sweep(tmp_path / "other", lr=1e-3)  # a sweep beside it, in its own folder
    run_sweep(other, progress=False)
    fake_runs(monkeypatch, fail=True)
    outcome = run_sweep(small_sweep(tmp_path / "sweep", lr=3e-4), progress=False)
    assert len(outcome["failed"]) == 4
    assert not list((tmp_path / "sweep").rglob("result.json"))
    assert not list((tmp_path / "sweep" / ".sweep").glob("*.done.json"))
    assert len(load_results([tmp_path / "other"])) == 4  # untouched
    # Unchanged runs keep theirs: the same config again is skipped, not forgotten.
    assert len(run_sweep(other, progress=False)["skipped"]) == 4


def test_a_changed_run_keeps_the_results_of_its_other_variants(tmp_path, monkeypatch):
    fake_runs(monkeypatch)

    def sweep(epochs: int, *lrs: float) -> SweepConfig:
        return SweepConfig(
            base={"env_id": "LossWeighting-CubicScales-v1", "epochs": epochs},
            grid={"method": ["ew"], "seeds": [0], "overrides": [{"env_kwargs.lr": x} for x in lrs]},
            output_dir=str(tmp_path / "sweep"),
            workers=1,
        )

    run_sweep(sweep(3, 1e-3, 3e-4), progress=False)
    fake_runs(monkeypatch, fail=True)
    # The 3e-4 variant left the grid; the 1e-3 one changed (more epochs) and fails.
    assert len(run_sweep(sweep(4, 1e-3), progress=False)["failed"]) == 1
    (left,) = (tmp_path / "sweep").rglob("result.json")
    assert json.loads(left.read_text())["config"]["env_kwargs"]["lr"] == 3e-4
