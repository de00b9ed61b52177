"""``render_mode="ansi"``: a text frame of the run that reads the env's state and changes
nothing in it."""

import re

import gymnasium as gym
import numpy as np
import pytest
from conftest import same_values

import mtl_envs  # noqa: F401
from mtl_envs.errors import ConfigError

IDS = {
    "LossWeighting-Cubic-v1": {"warmup_epochs": 1, "epochs": 3},
    "AuxLabel-Digits-v1": {"train_batch_size": 20, "eval_batch_size": 32},
    "TaskGrouping-Digits10Scarce-v1": {},
}


def run(env_id, steps, render_mode=None, seed=3):
    env = gym.make(env_id, render_mode=render_mode, **IDS[env_id])
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    frames, trajectory = [env.render()] if render_mode else [], []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trajectory.append((obs, reward, terminated, truncated, info))
        if render_mode:
            frames.append(env.render())
        if terminated or truncated:
            break
    return env, frames, trajectory


@pytest.mark.parametrize("env_id", list(IDS))
def test_rendering_changes_no_trajectory(env_id):
    _, frames, rendered = run(env_id, 25, render_mode="ansi")
    _, _, plain = run(env_id, 25)
    assert same_values(rendered, plain)
    assert all(isinstance(f, str) and f.splitlines()[0] == env_id for f in frames)
    total = sum(step[1] for step in rendered)
    assert re.search(r"return (\S+)", frames[-1]).group(1) == f"{total:.6g}"
    assert "last reward" not in frames[0]


def test_loss_weighting_frame_reads_the_run():
    env, frames, trajectory = run("LossWeighting-Cubic-v1", 4, render_mode="ansi")
    base = env.unwrapped
    weights = np.asarray(trajectory[-1][4]["weights"])
    lines = frames[-1].splitlines()
    learner = base.learner
    assert lines[1] == (
        f"epochs done {learner.epoch} of 3, batches done {learner.position} of "
        f"{learner.num_batches} in this epoch, agent steps 4"
    )
    ratio = trajectory[-1][0] / base.base_losses.numpy()  # the observation is L_t
    assert lines[2].startswith(f"L_t / L_base  min {ratio.min():.4g} (task {ratio.argmin()})")
    assert lines[3] == (
        f"weights       min {weights.min():.4g} (task {weights.argmin()})  median "
        f"{np.median(weights):.4g}  max {weights.max():.4g} (task {weights.argmax()})"
    )
    assert frames[0].splitlines()[3] == "weights       -"  # no step yet


def test_a_line_of_task_values_names_the_tasks_that_are_not_finite():
    from mtl_envs.envs.rendering import spread

    assert spread("x", [1.0, np.inf, 2.0, np.nan]) == (
        "x             min 1 (task 0)  median 1.5  max 2 (task 2)  not finite in tasks 1, 3"
    )
    assert spread("x", [np.nan]) == "x             not finite in task 0"
    assert spread("x", [3.0, 1.0]) == "x             min 1 (task 1)  median 2  max 3 (task 0)"


@pytest.mark.parametrize("env_id", list(IDS))
def test_a_frame_before_the_first_reset_says_so(env_id):
    # Gymnasium's order check refuses it on the made env; the env itself has no run to read.
    env = gym.make(env_id, render_mode="ansi", **IDS[env_id]).unwrapped
    assert env.render() == f"{env_id}\nnot reset: call reset() to start a run\n"


def test_aux_label_frame_counts_the_labels_of_the_batch():
    env = gym.make("AuxLabel-Digits-v1", render_mode="ansi", **IDS["AuxLabel-Digits-v1"])
    env.reset(seed=0)
    actions = [0, 0, 1, 4] * 6  # a whole batch of 20, then 4 of the next
    for a in actions:
        env.step(a)
    lines = env.render().splitlines()
    assert lines[1] == "mode train_agent, epochs done 0, batches done 1 of 60 in this epoch"
    assert lines[2].endswith("4 of 20 samples labelled, auxiliary labels so far [2, 1, 0, 0, 1]")
    assert "primary_eval_loss" in lines[3] and "label_entropy" in lines[3]


def test_task_grouping_frame_lists_the_groups_and_gain():
    env = gym.make("TaskGrouping-Digits10Scarce-v1", render_mode="ansi")
    env.reset(seed=0)
    _, reward, *_, info = env.step(np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0]))
    lines = env.render().splitlines()
    assert lines[1] == "groups 1 of a budget of 3: {0 1}"
    assert lines[2] == (
        f"tasks covered 2 of 10, total gain {info['total_gain']:.4g} on the val split "
        "(etap objective)"
    )
    assert lines[-1] == f"last reward {reward:.6g}, return {reward:.6g}"


def test_render_without_a_mode_warns_and_returns_none():
    env = gym.make("TaskGrouping-Digits10-v1")
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode='ansi'"):
        assert env.unwrapped.render() is None


@pytest.mark.filterwarnings("ignore::UserWarning")  # Gymnasium's own, before the env's error
@pytest.mark.parametrize("env_id", list(IDS))
def test_an_unknown_render_mode_names_the_choices(env_id):
    with pytest.raises(
        ConfigError, match=r"`render_mode` must be one of \[None, 'ansi'\]; got 'rgb"
    ):
        gym.make(env_id, render_mode="rgb_array", **IDS[env_id])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sb3_builds_the_envs_from_their_ids():
    """SB3 asks for ``render_mode="rgb_array"`` and falls back on a ``TypeError``: the
    render-mode error is one, so SB3's id constructors work (they used to stop on it)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from mtl_envs.errors import RenderModeError

    assert issubclass(RenderModeError, TypeError) and issubclass(RenderModeError, ConfigError)
    vec = make_vec_env("LossWeighting-Cubic-v1", n_envs=2, env_kwargs={"epochs": 3})
    assert vec.num_envs == 2 and vec.reset().shape[0] == 2
    vec.close()
    model = PPO("MultiInputPolicy", "TaskGrouping-Digits10-v1", n_steps=8, batch_size=8)
    assert model.learn(8).get_env().num_envs == 1


@pytest.mark.parametrize("env_id", ["LossWeighting-Cubic-v1", "AuxLabel-Digits-v1"])
def test_vector_forms_render_through_the_sync_form(env_id):
    kwargs = IDS[env_id]
    with pytest.raises(ConfigError, match="vectorization_mode='sync' renders"):
        gym.make_vec(
            env_id, num_envs=2, vectorization_mode="vector_entry_point", render_mode="ansi"
        )
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", render_mode="ansi", **kwargs)
    envs.reset(seed=0)
    frames = envs.render()
    assert len(frames) == 2 and all(f.startswith(env_id) for f in frames)
