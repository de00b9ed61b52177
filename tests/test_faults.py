"""Faults: diverging runs, bad input, interrupted sweeps, memory over many episodes."""

import contextlib
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

import mtl_envs  # noqa: F401
from agents.cli import main as cli_main
from agents.sweep import SweepConfig, expand, run_sweep
from mtl_envs.data.base import MultiTaskDataset, MultiTaskSplit
from mtl_envs.data.multitask import load_multitask_dataset
from mtl_envs.experiment import RunConfig, load_results, run_epochs
from mtl_envs.training.aux_learner import AuxLearner
from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig
from mtl_envs.utils import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"train_batch_size": 20, "eval_batch_size": 32}


# ---------------------------------------------------------------------- divergence
def test_aux_label_env_truncates_a_diverged_run():
    env = gym.make("AuxLabel-Digits-v0", lr=1e12, **SMALL)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(20 * 30):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        if truncated:
            break
    assert truncated and not terminated and info["diverged"]
    assert np.isfinite(reward)
    env.reset()  # the env stays usable


def test_loss_weighting_env_truncates_a_diverged_run():
    env = gym.make("LossWeighting-Cubic-v1", optimizer="sgd", lr=1e12, loss="sum", epochs=5)
    env.reset(seed=0)
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        if truncated:
            break
    assert truncated and info["diverged"] and np.isfinite(reward)
    assert np.all(np.isfinite(obs))


def test_run_epochs_records_divergence_and_returns(tmp_path):
    config = RunConfig(method="x", output_dir=str(tmp_path), tensorboard=False, progress=False)
    values = iter([1.0, float("nan"), 0.5])
    result = run_epochs(
        config=config,
        method="x",
        seed=0,
        train_epoch=lambda e: {"train/loss": next(values)},
        evaluate=lambda split: {"accuracy": 0.5},
    )
    assert result["status"] == "diverged" and result["diverged_epoch"] == 2
    assert len(result["epochs"]) == 2  # stopped after the diverged epoch
    saved = json.loads((tmp_path / "AuxLabel-Digits-v0/x/seed0/result.json").read_text())
    assert saved["status"] == "diverged"


def test_baseline_with_a_huge_learning_rate_finishes_as_diverged(tmp_path):
    from baselines import BASELINES

    config = RunConfig(
        method="ew",
        env_id="LossWeighting-Cubic-v1",
        env_kwargs={"optimizer": "sgd", "lr": 1e12},
        epochs=4,
        output_dir=str(tmp_path),
        tensorboard=False,
        progress=False,
    )
    result = BASELINES["ew"](config, 0)
    assert result["status"] == "diverged"


# ---------------------------------------------------------------------- resume
def resume_config(tmp_path, name, **extra) -> RunConfig:
    return RunConfig(
        method="dwa",
        env_id="LossWeighting-Cubic-v1",
        env_kwargs={"device": "cpu"},
        epochs=200,  # seconds of training after the first checkpoint, so the kill lands
        output_dir=str(tmp_path / name),
        tensorboard=False,
        progress=False,
        **extra,
    )


def test_killed_run_resumes_to_the_same_result(tmp_path):
    from baselines import BASELINES

    reference = BASELINES["dwa"](resume_config(tmp_path, "reference"), 0)
    config_file = tmp_path / "run.yaml"
    config = resume_config(tmp_path, "killed").to_dict()
    config_file.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "run", str(config_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = tmp_path / "killed/LossWeighting-Cubic-v1/dwa/seed0/checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not checkpoint.is_file():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # mid-epoch, right after the first checkpoint
    proc.wait()
    assert checkpoint.is_file() and not (checkpoint.parent / "result.json").is_file()
    resumed = BASELINES["dwa"](resume_config(tmp_path, "killed", resume=True), 0)
    assert len(resumed["epochs"]) == len(reference["epochs"]) == 200
    assert resumed["final"] == reference["final"]
    assert not checkpoint.is_file()  # a finished run leaves no checkpoint
    again = BASELINES["dwa"](resume_config(tmp_path, "killed", resume=True), 0)
    assert again["wall_time_s"] == resumed["wall_time_s"]  # finished runs are not redone


def test_corrupt_result_and_checkpoint_files_are_named(tmp_path):
    from baselines import BASELINES

    config = resume_config(tmp_path, "corrupt", resume=True)
    run = tmp_path / "corrupt/LossWeighting-Cubic-v1/dwa/seed0"
    run.mkdir(parents=True)
    torch.save({"epoch": 3, "state": {}}, run / "checkpoint.pt")
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match="checkpoint.pt.*truncated or corrupt"):
        BASELINES["dwa"](config, 0)
    (run / "checkpoint.pt").unlink()
    (run / "result.json").write_text('{"method": "dwa", "se')  # cut off mid-write
    with pytest.raises(ValueError, match="result.json.*truncated or corrupt"):
        load_results([tmp_path])
    with pytest.raises(ValueError, match="result.json.*truncated or corrupt"):
        BASELINES["dwa"](config, 0)  # resume finds a finished run it cannot read


@contextlib.contextmanager
def crash_on_call(monkeypatch, owner, name, call=3):
    """Interrupt the run (KeyboardInterrupt) at call number ``call`` of ``owner.name``; the
    block must raise it. The original method is back afterwards."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def crashing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, crashing)
    with pytest.raises(KeyboardInterrupt):
        yield
    monkeypatch.setattr(owner, name, original)


@pytest.mark.parametrize(
    "method, env_id, env_kwargs, learner",
    [
        ("random", "AuxLabel-Digits-v0", SMALL, AuxLearner),
        # Nash-MTL's aggregator keeps state from step to step.
        (
            "ew",
            "LossWeighting-Cubic-v1",
            {"device": "cpu", "aggregator": "nash_mtl"},
            MultiTaskLearner,
        ),
    ],
    ids=["aux-random", "nash-mtl"],
)
def test_interrupted_run_resumes_to_the_same_result(
    tmp_path, monkeypatch, method, env_id, env_kwargs, learner
):
    from baselines import BASELINES

    def config(name, **extra):
        return RunConfig(
            method=method,
            env_id=env_id,
            env_kwargs=env_kwargs,
            epochs=4,
            output_dir=str(tmp_path / name),
            tensorboard=False,
            progress=False,
            **extra,
        )

    reference = BASELINES[method](config("reference"), 0)
    with crash_on_call(monkeypatch, learner, "train_epoch"):
        BASELINES[method](config("crashed"), 0)
    resumed = BASELINES[method](config("crashed", resume=True), 0)
    assert resumed["final"] == reference["final"] and len(resumed["epochs"]) == 4


def test_resume_refuses_a_run_of_another_config(tmp_path, monkeypatch):
    from baselines import BASELINES

    config = RunConfig(
        method="ew",
        env_id="LossWeighting-Cubic-v1",
        env_kwargs={"device": "cpu"},
        epochs=4,
        output_dir=str(tmp_path),
        tensorboard=False,
        progress=False,
    )
    first = BASELINES["ew"](config, 0)
    again = BASELINES["ew"](dataclasses.replace(config, resume=True, progress=True), 0)
    assert again == first  # run-control keys may change; the finished run is returned
    other_lr = dataclasses.replace(config, resume=True, env_kwargs={"device": "cpu", "lr": 0.1})
    with pytest.raises(ValueError, match=r"result.json from another config \(`env_kwargs`"):
        BASELINES["ew"](other_lr, 0)
    with crash_on_call(monkeypatch, MultiTaskLearner, "train_epoch"):
        BASELINES["ew"](config, 1)  # leaves a checkpoint after epoch 2
    with pytest.raises(ValueError, match=r"checkpoint.pt from another config \(`epochs` 4 there"):
        BASELINES["ew"](dataclasses.replace(config, resume=True, epochs=6), 1)


@pytest.mark.parametrize(
    "crash_at",
    [2, 3],  # saved after epoch 1 mid-rollout (step 12 of 8-step rollouts) / after epoch 2's
    ids=["mid-rollout", "after-update"],  # update round (step 24)
)
def test_interrupted_sac_run_resumes_to_the_same_result(tmp_path, monkeypatch, crash_at):
    from agents.sac_lossweighting import run
    from mtl_envs.experiment import EpochRecorder

    def config(name, **extra):
        return RunConfig(
            method="igbv2",
            env_id="LossWeighting-Digits10-v1",  # 12 batches per epoch
            env_kwargs={"device": "cpu"},
            epochs=6,  # 2 warm-up epochs, then 4 with the agent
            output_dir=str(tmp_path / name),
            tensorboard=False,
            progress=False,
            # SAC updates from the first agent step and acts from the second epoch on.
            method_kwargs={"update_epoch": 3, "use_epoch": 4},
            agent={"train_freq": [8, "step"], "gradient_steps": 4, "batch_size": 16},
            **extra,
        )

    reference = run(config("reference"), 0)
    with crash_on_call(monkeypatch, EpochRecorder, "record", call=crash_at):
        run(config("crashed"), 0)
    checkpoint = load_checkpoint(
        tmp_path / "crashed/LossWeighting-Digits10-v1/igbv2/seed0/checkpoint.pt"
    )
    assert checkpoint["epoch"] == crash_at - 1
    buffer = checkpoint["state"]["agent"]["replay_buffer"]  # its arrays, as tensors
    assert buffer["pos"] == 12 * (crash_at - 1) and not buffer["full"]
    resumed = run(config("crashed", resume=True), 0)
    assert len(resumed["epochs"]) == 4
    for ours, theirs in zip(resumed["epochs"], reference["epochs"], strict=True):
        assert {k: v for k, v in ours.items() if "seconds" not in k} == {
            k: v for k, v in theirs.items() if "seconds" not in k
        }


# ---------------------------------------------------------------------- bad input
@functools.cache
def cubic() -> MultiTaskDataset:
    return load_multitask_dataset("cubic", device="cpu")


def custom_split(**changes) -> MultiTaskSplit:
    """Cubic's training split with some of its tensors replaced (custom data)."""
    return dataclasses.replace(cubic().train, **changes)


def nan_target() -> MultiTaskDataset:
    targets = cubic().train.targets.clone()
    row, task = map(int, torch.nonzero(cubic().train.mask)[0])
    targets[row, task] = float("nan")
    return dataclasses.replace(cubic(), train=custom_split(targets=targets))


BAD_INPUT = [
    (lambda: gym.make("AuxLabel-Digits-v0", hierarchy_factor=0), ValueError, "hierarchy_factor"),
    (lambda: gym.make("AuxLabel-Digits-v0", backbone="small_cnm"), KeyError, "small_cnn"),
    (lambda: gym.make("AuxLabel-Digits-v0", lr_rate=0.1), TypeError, "Unknown"),
    (lambda: gym.make("LossWeighting-Cubic-v1", aggregator="upgrd"), ValueError, "upgrad"),
    (lambda: gym.make("LossWeighting-Cubic-v1", model="hypernets"), ValueError, "hypernet"),
    (lambda: gym.make("LossWeighting-Cubic-v1", temperature="hot"), (TypeError, ValueError), ""),
    (lambda: MultiTaskLearnerConfig(batching="random"), ValueError, "uniform"),
    (lambda: MultiTaskLearnerConfig(batch_size=0), ValueError, "batch_size"),
    (lambda: RunConfig.from_dict({"epoch": 3}), TypeError, "epochs"),
    (lambda: RunConfig(epochs=0), ValueError, "epochs"),
    (lambda: SweepConfig(backend="slurm"), ValueError, "local"),
    (lambda: SweepConfig(grid={"seed": [0]}), ValueError, "seeds"),
    (lambda: load_multitask_dataset("cubix"), KeyError, "cubic"),
    (
        lambda: load_multitask_dataset("cubic", device="cpu", options={"num_task": 3}),
        TypeError,
        "dataset_kwargs",
    ),
    (
        lambda: load_multitask_dataset("cubic", device="cpu", options={"num_tasks": 1}),
        ValueError,
        "num_tasks",
    ),
    # Custom data of the wrong shape or content never reaches a learner.
    (lambda: custom_split(targets=cubic().train.targets[:, :3]), ValueError, r"\(N, 20\)"),
    (lambda: custom_split(mask=cubic().train.mask.float()), ValueError, "bool"),
    (lambda: custom_split(inputs=cubic().train.inputs[:-1]), ValueError, "same N"),
    (lambda: custom_split(inputs=cubic().train.inputs.numpy()), TypeError, "inputs"),
    (
        lambda: dataclasses.replace(
            cubic(), val=dataclasses.replace(cubic().val, inputs=cubic().val.inputs.repeat(1, 2))
        ),
        ValueError,
        "'val' split",
    ),
    (lambda: dataclasses.replace(cubic(), task_type="regresion"), ValueError, "regression"),
    (nan_target, ValueError, "NaN"),
    (
        lambda: dataclasses.replace(cubic(), task_type="classification", num_classes=2),
        ValueError,
        "num_classes",
    ),
    (
        lambda: dataclasses.replace(cubic(), task_metadata=cubic().task_metadata[:5]),
        ValueError,
        "task_metadata",
    ),
]


@pytest.mark.parametrize("make, error, match", BAD_INPUT, ids=range(len(BAD_INPUT)))
def test_bad_arguments_raise_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "env_id, action",
    [
        ("AuxLabel-Digits-v0", 7),
        ("LossWeighting-Cubic-v1", np.full(20, 2.0, dtype=np.float32)),
        ("LossWeighting-Cubic-v1", np.zeros(3, dtype=np.float32)),
        ("TaskGrouping-Digits10-v1", np.full(10, 2)),
    ],
)
def test_actions_outside_the_space_are_rejected(env_id, action):
    kwargs = SMALL if env_id.startswith("AuxLabel") else {}
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action space|inside"):
        env.step(action)


def test_cli_reports_bad_config(tmp_path, capsys):
    assert cli_main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: ew\nenv_id: LossWeighting-Cubic-v1\nepoch: 3\n")
    assert cli_main(["run", str(bad)]) == 2
    assert "epochs" in capsys.readouterr().err


# ---------------------------------------------------------------------- sweeps
def sweep_file(tmp_path, **extra) -> Path:
    values = {
        "base": {
            "env_id": "LossWeighting-Cubic-v1",
            "epochs": 40,  # a few seconds per run, so the kill lands mid-sweep
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
    lrs = sorted(str(r.config["env_kwargs"].get("lr")) for r in runs)
    assert lrs == ["0.01", "0.01", "None", "None"]


def test_interrupted_sweep_finishes_without_duplicates(tmp_path):
    path = sweep_file(tmp_path)
    markers = tmp_path / "sweep" / ".sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "sweep", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(markers.glob("*.done.json")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # killed mid-sweep
    proc.wait()
    finished_before = len(list(markers.glob("*.done.json")))
    assert 1 <= finished_before < 4
    outcome = run_sweep(SweepConfig.from_file(path, ["workers=2"]), progress=False)
    assert len(outcome["skipped"]) == finished_before
    assert len(outcome["done"]) == 4 - finished_before and not outcome["failed"]
    results = sorted((tmp_path / "sweep").rglob("result.json"))
    keys = [
        (json.loads(p.read_text())["method"], json.loads(p.read_text())["seed"]) for p in results
    ]
    assert sorted(keys) == [("ew", 0), ("ew", 1), ("rlw", 0), ("rlw", 1)]
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


def test_ray_backend_ships_runs_to_ray(tmp_path, monkeypatch):
    calls = {}

    class Ref:
        def __init__(self, value):
            self.value = value

    def remote(**resources):
        calls["resources"] = resources

        def wrap(fn):
            return types.SimpleNamespace(remote=lambda *args: Ref(fn(*args)))

        return wrap

    fake = types.SimpleNamespace(
        is_initialized=lambda: False,
        init=lambda address: calls.setdefault("address", address),
        remote=remote,
        wait=lambda refs, num_returns: (refs[:num_returns], refs[num_returns:]),
        get=lambda ref: ref.value,
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    path = sweep_file(tmp_path, backend="ray", ray={"address": "ray://head:10001", "num_cpus": 2})
    outcome = run_sweep(SweepConfig.from_file(path, ["grid.seeds=[0]"]), progress=False)
    assert sorted(outcome["done"]) == sorted(
        ["LossWeighting-Cubic-v1__ew__seed0", "LossWeighting-Cubic-v1__rlw__seed0"]
    )
    assert calls == {"resources": {"num_cpus": 2, "num_gpus": 0}, "address": "ray://head:10001"}


def test_ray_backend_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    path = sweep_file(tmp_path, backend="ray")
    with pytest.raises(ImportError, match="pip install"):
        run_sweep(SweepConfig.from_file(path), progress=False)


# ---------------------------------------------------------------------- memory
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("LossWeighting-Cubic-v1", {"warmup_epochs": 1, "epochs": 2}),
        ("AuxLabel-Digits-v0", {**SMALL, "max_batches": 2}),
    ],
)
def test_memory_stays_flat_over_50_episodes(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    env.action_space.seed(0)

    def episode(seed):
        env.reset(seed=seed)
        while True:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                return

    for seed in range(5):  # allocator and caches settle
        episode(seed)
    before = rss_bytes()
    for seed in range(50):
        episode(seed)
    growth = (rss_bytes() - before) / before
    assert growth < 0.10, f"RSS grew {100 * growth:.1f}% over 50 episodes"


def test_interrupted_ppo_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    from stable_baselines3 import PPO

    from agents.ppo_auxlabel import run

    def config(name, **extra):
        return RunConfig(
            method="ppo",
            env_id="AuxLabel-Digits-v0",
            env_kwargs={"train_batch_size": 100, "eval_batch_size": 32},
            epochs=3,
            output_dir=str(tmp_path / name),
            tensorboard=False,
            progress=False,
            agent={"n_steps": 1, "batch_size": 100, "n_epochs": 2},
            policy={"image_features": 32},
            **extra,
        )

    reference = run(config("reference"), 0)
    with crash_on_call(monkeypatch, PPO, "learn"):
        run(config("crashed"), 0)
    resumed = run(config("crashed", resume=True), 0)
    assert len(resumed["epochs"]) == 3
    assert resumed["final"] == reference["final"]
