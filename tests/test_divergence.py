"""Diverging runs end cleanly: envs truncate, runners write a diverged result."""

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from harness.config import RunConfig
from harness.lifecycle import run_epochs

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"train_batch_size": 20, "eval_batch_size": 32}


def test_aux_label_env_truncates_a_diverged_run():
    env = gym.make("AuxLabel-Digits-v1", lr=1e12, **SMALL)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(20 * 30):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        if truncated:
            break
    assert truncated and not terminated and info["diverged"]
    assert np.isfinite(reward)
    env.reset()  # the env stays usable


def test_a_diverged_train_main_epoch_never_becomes_canonical():
    env = gym.make("AuxLabel-Digits-v1", lr=1e12, **SMALL).unwrapped
    env.reset(seed=0)
    canonical = env.task.canonical
    env.reset(options={"mode": "train_main"})
    env.action_space.seed(0)
    for _ in range(20 * 30):
        *_, truncated, info = env.step(env.action_space.sample())
        if truncated:
            break
    assert info["diverged"] and env.task.canonical is canonical and env.learner.epoch == 0
    # The next train_agent episode starts again from the last finite network.
    env.reset(options={"mode": "train_agent"})
    assert all(bool(p.isfinite().all()) for p in env.learner.net.parameters())


def test_a_train_main_episode_cut_by_max_batches_ends_its_epoch():
    env = gym.make("AuxLabel-Digits-v1", max_batches=2, **SMALL).unwrapped
    env.reset(seed=0, options={"mode": "train_main"})
    lr = env.learner.lr
    for episode in range(1, 3):
        for _ in range(2 * 20):
            *_, terminated, truncated, _ = env.step(env.action_space.sample())
        assert truncated and not terminated and env.learner.epoch == episode
        env.reset()
    assert env.learner.lr == lr  # StepLR(50): the schedule counted 2 epochs, no decay yet
    assert env.learner.scheduler.last_epoch == 2  # it did count them
    # With a period of one epoch each cut epoch halves the rate.
    fast = gym.make("AuxLabel-Digits-v1", max_batches=2, scheduler_step_epochs=1, **SMALL)
    fast = fast.unwrapped
    fast.reset(seed=0, options={"mode": "train_main"})
    lr = fast.learner.lr
    for _ in range(2):
        done = False
        while not done:
            *_, terminated, truncated, _ = fast.step(fast.action_space.sample())
            done = terminated or truncated
        fast.reset()
    assert fast.learner.lr == pytest.approx(lr * 0.25)

    # Under restore="none" the agent's episodes carry the network on too: each cut epoch
    # ends, in either mode.
    carried = gym.make(
        "AuxLabel-Digits-v1", max_batches=2, scheduler_step_epochs=1, restore="none", **SMALL
    ).unwrapped
    carried.reset(seed=0)
    lr = carried.learner.lr
    for episode in range(1, 3):
        for _ in range(2 * 20):
            *_, truncated, _ = carried.step(carried.action_space.sample())
        assert truncated and carried.task.mode == "train_agent" and carried.learner.epoch == episode
        carried.reset()
    assert carried.learner.lr == pytest.approx(lr * 0.25)


def test_a_train_main_epoch_whose_last_update_is_not_finite_never_becomes_canonical():
    """The loss of a step is computed before its update: the epoch's last update can leave
    a non-finite network that no loss has shown. The epoch's end checks the network."""
    import torch

    env = gym.make("AuxLabel-Digits-v1", max_batches=2, **SMALL).unwrapped
    env.reset(seed=0)
    canonical = env.task.canonical
    env.reset(options={"mode": "train_main"})
    train_batch = env.learner.train_batch

    def poisoned(*args, **kwargs):
        losses = train_batch(*args, **kwargs)
        if env.learner.position == 1:  # the last batch of the cut epoch
            with torch.no_grad():
                next(env.learner.net.parameters()).view(-1)[0] = torch.inf
        return losses

    env.learner.train_batch = poisoned
    for _ in range(2 * 20):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert truncated and not terminated and info["diverged"] and reward == 0.0
    assert env.task.canonical is canonical and env.learner.epoch == 0


def test_a_validation_reward_that_is_not_finite_ends_the_episode_as_diverged():
    """With ``reward="val"`` the reward is computed after the epoch's last update, from the
    validation loss of a network whose parameters can stay finite while its loss is not (a
    learning rate of 1e12): that episode ends as diverged, with a finite reward, and the
    potential the next episode's reward starts from is kept."""
    env = gym.make(
        "AuxLabel-Digits-v1", reward="val", lr=1e12, max_batches=1, train_batch_size=20
    ).unwrapped
    env.reset(seed=0)
    potential = env.task._potential
    for _ in range(20):
        _, reward, terminated, truncated, info = env.step(0)
    assert reward == 0.0 and truncated and not terminated and info["diverged"]
    assert env.task._potential == potential


def test_loss_weighting_env_truncates_a_diverged_run():
    env = gym.make("LossWeighting-Cubic-v1", optimizer="sgd", lr=1e12, loss="sum", epochs=5)
    env.reset(seed=0)
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        if truncated:
            break
    # A truncation paying 0 (a termination would pay an agent for diverging, and a
    # negative reward would be an invented one).
    assert truncated and not terminated and info["diverged"] and reward == 0.0
    assert np.all(np.isfinite(obs))


def scripted_run(tmp_path, losses, evaluate, **fields) -> dict:
    """run_epochs of method "x" whose epochs report ``losses`` in turn, evaluated by
    ``evaluate(split)``."""
    config = RunConfig(
        method="x", output_dir=str(tmp_path), tensorboard=False, progress=False, **fields
    )
    values = iter(losses)
    return run_epochs(
        config=config,
        method="x",
        seed=0,
        train_epoch=lambda e: {"train/loss": next(values)},
        evaluate=evaluate,
    )


def test_run_epochs_records_divergence_and_returns(tmp_path):
    result = scripted_run(tmp_path, [1.0, float("nan"), 0.5], lambda split: {"accuracy": 0.5})
    assert result["status"] == "diverged" and result["diverged_epoch"] == 2
    assert len(result["epochs"]) == 2  # stopped after the diverged epoch
    saved = json.loads((tmp_path / "AuxLabel-Digits-v1/x/seed0/result.json").read_text())
    assert saved["status"] == "diverged"


def test_a_diverged_epoch_is_never_the_best_one(tmp_path):
    # A NaN network's validation accuracy can look good (every sample one class); the epoch
    # still must not be selected, and `best` keeps the last finite epoch.
    accuracies = iter([0.4, 0.9, 0.9, 0.9])
    result = scripted_run(
        tmp_path,
        [1.0, float("nan")],
        lambda split: {"accuracy": next(accuracies) if split == "val" else 0.1},
    )
    assert result["status"] == "diverged" and result["best"]["epoch"] == 1


def _igbv2_config(tmp_path, first_epoch: int, **fields) -> RunConfig:
    """A small IGBv2 run on Cubic whose SAC learns and acts from ``first_epoch``."""
    return RunConfig(
        method="igbv2",
        env_id="LossWeighting-Cubic-v1",
        output_dir=str(tmp_path),
        tensorboard=False,
        progress=False,
        method_kwargs={"update_epoch": first_epoch, "use_epoch": first_epoch},
        agent={"gradient_steps": 2, "train_freq": [6, "step"], "batch_size": 8},
        **fields,
    )


def test_igbv2_run_that_diverges_writes_a_diverged_result(tmp_path):
    from agents.sac_lossweighting import run

    env_kwargs = {"optimizer": "sgd", "lr": 1e4, "loss": "sum", "warmup_epochs": 1}
    result = run(_igbv2_config(tmp_path, 2, env_kwargs=env_kwargs, epochs=4), 0)
    assert result["status"] == "diverged" and result["diverged_epoch"] == 2
    assert [e["epoch"] for e in result["epochs"]] == [2]  # the unfinished epoch is recorded
    saved = json.loads((tmp_path / "LossWeighting-Cubic-v1/igbv2/seed0/result.json").read_text())
    assert saved["status"] == "diverged"


def test_igbv2_records_the_epoch_its_run_diverged_in(tmp_path, monkeypatch):
    # The run blows up in step 8, in (1-based) epoch 5: Cubic has 3 batches an epoch and 2
    # warm-up epochs. SB3 resets the truncated env before the callback reads it; the result
    # must still be the diverged run's, not the fresh one's that reset would start.
    import math

    import torch

    from agents.sac_lossweighting import run
    from mtl_envs.envs.loss_weighting import LossWeightingEnv

    step, count = LossWeightingEnv.step, [0]

    def blow_up_in_step_8(self, action):
        count[0] += 1
        obs, reward, terminated, truncated, info = step(self, action)
        if count[0] != 8:
            return obs, reward, terminated, truncated, info
        with torch.no_grad():
            for p in self.learner.net.parameters():
                p.fill_(float("nan"))
        self._current = self.learner.forward_pending()
        return self._obs(), 0.0, False, True, {**info, "diverged": True}

    monkeypatch.setattr(LossWeightingEnv, "step", blow_up_in_step_8)
    result = run(_igbv2_config(tmp_path, 3, epochs=7), 0)
    assert result["status"] == "diverged" and result["diverged_epoch"] == 5
    assert [e["epoch"] for e in result["epochs"]] == [3, 4, 5]
    assert math.isnan(result["epochs"][-1]["train/loss"])
    assert math.isnan(result["final"]["test/mean_mse"])  # the diverged network's
    assert result["best"]["epoch"] == 4


def test_baseline_with_a_huge_learning_rate_finishes_as_diverged(tmp_path):
    from harness.registry import run_method

    config = RunConfig(
        method="ew",
        env_id="LossWeighting-Cubic-v1",
        env_kwargs={"optimizer": "sgd", "lr": 1e12},
        epochs=4,
        output_dir=str(tmp_path),
        tensorboard=False,
        progress=False,
    )
    result = run_method(config, "ew", 0)
    assert result["status"] == "diverged"


@pytest.mark.parametrize("eval_every", [1, 3])
def test_a_run_diverged_before_any_validation_has_no_best_network(tmp_path, eval_every):
    """With no finite epoch validated before the divergence (the first epoch diverges, or
    the finite ones fell between evaluations), there is no best-validation network: `best`
    holds NaN test metrics, never the diverged network's."""
    losses = [float("nan")] if eval_every == 1 else [1.0, float("nan")]
    result = scripted_run(
        tmp_path, losses, lambda split: {"accuracy": 0.1}, epochs=10, eval_every=eval_every
    )
    assert result["status"] == "diverged" and result["final"]["test/accuracy"] == 0.1
    assert result["best"]["epoch"] == result["diverged_epoch"]
    assert np.isnan(result["best"]["test/accuracy"])


def test_ppo_run_whose_main_network_diverges_is_recorded_so(tmp_path):
    """The vector env truncates a diverged train-main epoch and goes back to the canonical
    network; the runner must record the run as diverged, not go on from a network that
    never moves (with reward='val' no NaN reaches the agent's own statistics)."""
    from agents.ppo_auxlabel import run

    config = RunConfig(
        method="ppo",
        env_id="AuxLabel-Digits-v1",
        env_kwargs={
            "train_batch_size": 50,
            "train_subset": 300,
            "backbone": "mlp",
            "lr": 1e12,
            "reward": "val",
        },
        epochs=2,
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
        agent={"n_epochs": 2, "batch_size": 50},
        policy={"image_features": 32},
    )
    result = run(config, 0)
    assert result["status"] == "diverged" and result["diverged_epoch"] == 1
    assert len(result["epochs"]) == 1
