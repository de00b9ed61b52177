"""Checkpoints and resume: killed and interrupted runs continue to the same result."""

import contextlib
import dataclasses
import signal
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from conftest import Counter

from harness.config import RunConfig
from harness.results import load_results
from mtl_envs.io import load_checkpoint, save_checkpoint
from mtl_envs.training.aux_learner import AuxLearner
from mtl_envs.training.multitask_learner import MultiTaskLearner

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"train_batch_size": 20, "eval_batch_size": 32}


def resume_config(tmp_path, name, **extra) -> RunConfig:
    return RunConfig(
        method="dwa",
        env_id="LossWeighting-Cubic-v1",
        env_kwargs={"device": "cpu"},
        epochs=6,
        output_dir=str(tmp_path / name),
        tensorboard=False,
        progress=False,
        **extra,
    )


def test_killed_run_resumes_to_the_same_result(tmp_path, run_killed, monkeypatch):
    from harness.registry import run_method

    reference = run_method(resume_config(tmp_path, "reference"), "dwa", 0)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(resume_config(tmp_path, "killed").to_dict()))
    # SIGKILL right after the second checkpoint (epoch 2) is written.
    status = run_killed("harness.lifecycle:save_run", 2, ["run", str(config_file)])
    assert status == -signal.SIGKILL
    checkpoint = tmp_path / "killed/LossWeighting-Cubic-v1/dwa/seed0/checkpoint.pt"
    assert checkpoint.is_file() and not (checkpoint.parent / "result.json").is_file()
    assert load_checkpoint(checkpoint)["epoch"] == 2
    trained = count_calls(monkeypatch, MultiTaskLearner, "train_epoch")
    resumed = run_method(resume_config(tmp_path, "killed", resume=True), "dwa", 0)
    assert len(resumed["epochs"]) == len(reference["epochs"]) == 6
    assert len(trained) == 6 - 2  # from the checkpoint, not afresh
    assert resumed["final"] == reference["final"]
    assert not checkpoint.is_file()  # a finished run leaves no checkpoint
    again = run_method(resume_config(tmp_path, "killed", resume=True), "dwa", 0)
    assert again["wall_time_s"] == resumed["wall_time_s"]  # finished runs are not redone


def test_corrupt_result_and_checkpoint_files_are_named(tmp_path):
    from harness.registry import run_method

    config = resume_config(tmp_path, "corrupt", resume=True)
    run = tmp_path / "corrupt/LossWeighting-Cubic-v1/dwa/seed0"
    run.mkdir(parents=True)
    torch.save({"epoch": 3, "state": {}}, run / "checkpoint.pt")
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match="checkpoint.pt.*truncated or corrupt"):
        run_method(config, "dwa", 0)
    (run / "checkpoint.pt").unlink()
    (run / "result.json").write_text('{"method": "dwa", "se')  # cut off mid-write
    with pytest.raises(ValueError, match="result.json.*truncated or corrupt"):
        load_results([tmp_path])
    with pytest.raises(ValueError, match="result.json.*truncated or corrupt"):
        run_method(config, "dwa", 0)  # resume finds a finished run it cannot read


def count_calls(monkeypatch, owner, name) -> list[int]:
    """A list that gets one entry per call of ``owner.name`` from now on."""
    calls, original = [], getattr(owner, name)

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


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
        ("random", "AuxLabel-Digits-v1", SMALL, AuxLearner),
        # MAXL's label generator, its optimiser and scheduler learn along with the network.
        ("maxl", "AuxLabel-Digits-v1", {**SMALL, "train_subset": 300}, AuxLearner),
        ("wa_maxl", "AuxLabel-Digits-v1", {**SMALL, "train_subset": 300}, AuxLearner),
        # Nash-MTL's aggregator keeps state from step to step.
        (
            "ew",
            "LossWeighting-Cubic-v1",
            {"device": "cpu", "aggregator": "nash_mtl"},
            MultiTaskLearner,
        ),
    ],
    ids=["aux-random", "maxl", "wa-maxl", "nash-mtl"],
)
def test_interrupted_run_resumes_to_the_same_result(
    tmp_path, monkeypatch, method, env_id, env_kwargs, learner
):
    from harness.registry import run_method

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

    reference = run_method(config("reference"), method, 0)
    with crash_on_call(monkeypatch, learner, "train_epoch"):
        run_method(config("crashed"), method, 0)
    trained = count_calls(monkeypatch, learner, "train_epoch")
    resumed = run_method(config("crashed", resume=True), method, 0)
    assert resumed["final"] == reference["final"] and len(resumed["epochs"]) == 4
    # It went on from the checkpoint of epoch 2 (the crash came in epoch 3), not afresh: a
    # deterministic run started over would end with the same numbers.
    assert trained == [1, 1]
    # Bit for bit: every epoch's training losses and metrics, not only the last.
    drop = ("train/epoch_seconds", "train/seconds")
    assert [{k: v for k, v in e.items() if k not in drop} for e in resumed["epochs"]] == [
        {k: v for k, v in e.items() if k not in drop} for e in reference["epochs"]
    ]


def test_resume_refuses_a_run_of_another_config(tmp_path, monkeypatch):
    from harness.registry import run_method

    config = RunConfig(
        method="ew",
        env_id="LossWeighting-Cubic-v1",
        env_kwargs={"device": "cpu"},
        epochs=4,
        output_dir=str(tmp_path),
        tensorboard=False,
        progress=False,
    )
    first = run_method(config, "ew", 0)
    again = run_method(dataclasses.replace(config, resume=True, progress=True), "ew", 0)
    assert again == first  # run-control keys may change; the finished run is returned
    other_lr = dataclasses.replace(config, resume=True, env_kwargs={"device": "cpu", "lr": 0.1})
    with pytest.raises(ValueError, match=r"result.json from another config \(`env_kwargs`"):
        run_method(other_lr, "ew", 0)
    # Another machine's data path is no other config: the finished run is reused.
    moved = dataclasses.replace(
        config, resume=True, env_kwargs={"device": "cpu", "data_root": str(tmp_path / "b")}
    )
    assert run_method(moved, "ew", 0) == first
    with crash_on_call(monkeypatch, MultiTaskLearner, "train_epoch"):
        run_method(config, "ew", 1)  # leaves a checkpoint after epoch 2
    with pytest.raises(ValueError, match=r"checkpoint.pt from another config \(`epochs` 4 there"):
        run_method(dataclasses.replace(config, resume=True, epochs=6), "ew", 1)


def test_a_rerun_replaces_the_earlier_runs_tensorboard_curves(tmp_path):
    # Two fresh runs into one folder: TensorBoard shows the second's curve only (it purges
    # the first's events), as result.json holds only the second.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from harness.registry import run_method

    config = dataclasses.replace(
        resume_config(tmp_path, "tb"),
        method="ew",
        env_kwargs={"device": "cpu", "lr": 0.01},
        epochs=2,
        tensorboard=True,
    )
    run_method(config, "ew", 0)
    second = run_method(
        dataclasses.replace(config, env_kwargs={"device": "cpu", "lr": 0.5}), "ew", 0
    )
    events = EventAccumulator(str(tmp_path / "tb/LossWeighting-Cubic-v1/ew/seed0/tb"))
    events.Reload()
    curve = [(e.step, e.value) for e in events.Scalars("val/mean_mse")]
    expected = [(k + 1, epoch["val/mean_mse"]) for k, epoch in enumerate(second["epochs"])]
    assert [s for s, _ in curve] == [1, 2]
    np.testing.assert_allclose([v for _, v in curve], [v for _, v in expected], rtol=1e-6)


def test_a_failed_restore_closes_the_runs_tensorboard_writer(tmp_path, monkeypatch):
    import harness.lifecycle
    from harness.recording import EpochRecorder
    from harness.registry import run_method

    config = dataclasses.replace(
        resume_config(tmp_path, "restore"), method="ew", epochs=4, tensorboard=True
    )
    with crash_on_call(monkeypatch, MultiTaskLearner, "train_epoch"):
        run_method(config, "ew", 0)  # leaves a checkpoint after epoch 2
    closed, close = [], EpochRecorder.close
    monkeypatch.setattr(EpochRecorder, "close", lambda self: closed.append(close(self)))
    monkeypatch.setattr(
        harness.lifecycle, "restore_run", lambda *a: (_ for _ in ()).throw(RuntimeError("shape"))
    )
    with pytest.raises(RuntimeError, match="shape"):
        run_method(dataclasses.replace(config, resume=True), "ew", 0)
    assert len(closed) == 1


def test_resume_refuses_a_run_whose_resolved_settings_changed(tmp_path):
    """An agent's hyperparameters come from its defaults as much as from the config; a run
    made under other defaults is neither continued nor reused."""
    from harness.lifecycle import run_epochs

    config = RunConfig(
        epochs=3, output_dir=str(tmp_path), tensorboard=False, progress=False, checkpoint_every=1
    )

    def run(settings, crash_at=None, **changes):
        counter = Counter()

        def train_epoch(epoch):
            if epoch == crash_at:
                raise KeyboardInterrupt
            counter.value += 1
            return {"train/loss": 1.0 / counter.value}

        return run_epochs(
            config=dataclasses.replace(config, **changes),
            method="toy",
            seed=0,
            train_epoch=train_epoch,
            evaluate=lambda split: {"accuracy": float(counter.value)},
            extra={"agent": settings},
            state=counter,
        )

    with pytest.raises(KeyboardInterrupt):
        run({"gamma": 0.99, "train_freq": (50, "step")}, crash_at=2)  # checkpoint at epoch 2
    with pytest.raises(ValueError, match=r"checkpoint.pt from another config \(`agent`"):
        run({"gamma": 0.9, "train_freq": (50, "step")}, resume=True)
    # The same settings (a tuple as its JSON list) continue the run from epoch 2.
    done = run({"gamma": 0.99, "train_freq": (50, "step")}, resume=True)
    assert done["final"]["test/accuracy"] == 3.0 and len(done["epochs"]) == 3
    with pytest.raises(ValueError, match=r"result.json from another config \(`agent` \{"):
        run({"gamma": 0.9, "train_freq": (50, "step")}, resume=True)
    again = run({"gamma": 0.99, "train_freq": [50, "step"]}, resume=True)
    assert again["wall_time_s"] == done["wall_time_s"]  # the finished run, not redone
    # A checkpoint from before settings were kept continues: there is nothing to compare.
    old = str(tmp_path / "old")
    with pytest.raises(KeyboardInterrupt):
        run({"gamma": 0.99}, crash_at=2, output_dir=old)
    path = next((tmp_path / "old").rglob("checkpoint.pt"))
    payload = load_checkpoint(path)
    del payload["settings"]
    save_checkpoint(path, payload)
    assert run({"gamma": 0.5}, resume=True, output_dir=old)["status"] == "completed"


@pytest.mark.parametrize(
    "crash_at",
    [2, 3],  # saved after epoch 1 mid-rollout (step 12 of 8-step rollouts) / after epoch 2's
    ids=["mid-rollout", "after-update"],  # update round (step 24)
)
def test_interrupted_sac_run_resumes_to_the_same_result(tmp_path, monkeypatch, crash_at):
    from agents.sac_lossweighting import run
    from harness.recording import EpochRecorder

    def config(name, **extra):
        return RunConfig(
            method="igbv2",
            env_id="LossWeighting-Digits10-v1",  # 12 batches per epoch
            env_kwargs={"device": "cpu"},
            epochs=6,  # 2 warm-up epochs, then 4 with the agent
            output_dir=str(tmp_path / name),
            tensorboard=name == "crashed",
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
    assert resumed["best"] == reference["best"] and resumed["final"] == reference["final"]
    # TensorBoard steps count the 2 warm-up epochs: every agent epoch (3-6) once, none purged.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "crashed/LossWeighting-Digits10-v1/igbv2/seed0/tb"))
    events.Reload()
    # The two processes' event files are read in name order (creation second, then pid), so
    # files made within one second come in either order: compare the sorted steps.
    assert sorted(e.step for e in events.Scalars("val/mean_accuracy")) == [3, 4, 5, 6]


def test_interrupted_ppo_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    from stable_baselines3 import PPO

    from agents.ppo_auxlabel import run

    def config(name, **extra):
        return RunConfig(
            method="ppo",
            env_id="AuxLabel-Digits-v1",
            env_kwargs={"train_batch_size": 100, "eval_batch_size": 32},
            epochs=3,
            output_dir=str(tmp_path / name),
            tensorboard=False,
            progress=False,
            agent={"n_steps": 2, "batch_size": 100, "n_epochs": 2},
            policy={"image_features": 32},
            **extra,
        )

    reference = run(config("reference"), 0)
    with crash_on_call(monkeypatch, PPO, "learn"):
        run(config("crashed"), 0)
    learned = count_calls(monkeypatch, PPO, "learn")
    resumed = run(config("crashed", resume=True), 0)
    assert len(resumed["epochs"]) == 3
    assert learned == [1]  # only the cycle the crash cut short, after the kept two
    assert resumed["final"] == reference["final"] and resumed["best"] == reference["best"]


def test_best_epoch_is_tested_on_the_network_the_run_trains_now(tmp_path):
    """An env's seeded reset replaces its network after the runner built the recorder: the
    best epoch's test metrics must come from the network that trained, not a stale one."""
    from types import SimpleNamespace

    from harness.recording import EpochRecorder

    holder = SimpleNamespace(net=torch.nn.Linear(1, 1, bias=False))

    def evaluate(split):
        w = float(holder.net.weight)
        return {"accuracy": -abs(w - 1.0)} if split == "val" else {"weight": w}

    config = RunConfig(output_dir=str(tmp_path), tensorboard=False, progress=False, epochs=2)
    recorder = EpochRecorder(config, "toy", 0, evaluate, models=lambda: [holder.net])
    holder.net = torch.nn.Linear(1, 1, bias=False)  # the reset: a new network
    with torch.no_grad():
        holder.net.weight.fill_(1.0)
        recorder.record(0, {})  # the best epoch: val accuracy 0
        holder.net.weight.fill_(5.0)
        recorder.record(1, {})  # val accuracy -4
    result = recorder.finish()
    assert result["best"]["epoch"] == 1 and result["best"]["test/weight"] == 1.0
    assert result["final"]["test/weight"] == 5.0 and float(holder.net.weight) == 5.0


def test_checkpoint_and_evaluation_time_are_kept_apart_from_training_time(tmp_path):
    from harness.registry import run_method

    result = run_method(resume_config(tmp_path, "timed", checkpoint_every=1), "dwa", 0)
    assert result["checkpoint_time_s"] > 0.0
    assert result["eval_time_s"] > 0.0
    parts = result["train_time_s"] + result["eval_time_s"] + result["checkpoint_time_s"]
    assert parts == pytest.approx(result["wall_time_s"])


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("LossWeighting-Cubic-v1", {"epochs": 4}),
        ("LossWeighting-Digits10-v1", {"epochs": 4, "augment": True}),  # BatchNorm, augmentation
    ],
)
def test_a_deep_copy_branches_the_run_and_continues_as_the_original(env_id, kwargs):
    """``copy.deepcopy(env)`` mid-episode (the pending forward's graph cannot be copied, so
    the copy redoes it): both then step to the same observations and rewards, bit for bit."""
    import copy

    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
    clone = copy.deepcopy(env)
    assert clone.unwrapped.learner is not env.unwrapped.learner
    done, steps = False, 0
    while not done and steps < 30:
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        mine, theirs = env.step(action), clone.step(action)
        np.testing.assert_array_equal(mine[0], theirs[0])
        assert mine[1:4] == theirs[1:4]
        done, steps = mine[2] or mine[3], steps + 1
    assert env.unwrapped.evaluate("test") == clone.unwrapped.evaluate("test")
