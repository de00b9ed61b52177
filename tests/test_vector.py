"""The batched LossWeighting vector form: slot k trains the run a single env seeded
``seed + k`` trains, through autoresets and partial resets; SB3 drives it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import assert_same_vector_infos

import mtl_envs  # noqa: F401
from mtl_envs.errors import ConfigError

# Cubic: 3 batches per epoch, so 2 warm-up epochs and 2 agent epochs are 6 steps.
CUBIC = {"epochs": 4, "warmup_epochs": 2}


def _pair(env_id: str, k: int, **kwargs):
    vector = gym.make_vec(env_id, num_envs=k, vectorization_mode="vector_entry_point", **kwargs)
    singles = [gym.make(env_id, **kwargs) for _ in range(k)]
    return vector, singles


def _step_both(vector, singles, actions):
    v_obs, v_rew, v_term, v_trunc, _ = vector.step(actions)
    outs = [env.step(a) for env, a in zip(singles, actions)]
    obs = []
    for env, (o, _, term, trunc, _) in zip(singles, outs):
        obs.append(env.reset()[0] if term or trunc else o)  # SAME_STEP autoreset
    s_obs = np.stack(obs)
    s_rew = np.array([o[1] for o in outs])
    np.testing.assert_array_equal(v_term, [o[2] for o in outs])
    np.testing.assert_array_equal(v_trunc, [o[3] for o in outs])
    return v_obs, s_obs, v_rew, s_rew


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        # SGD with momentum and weight decay, the plain objective, equal warm-up weights.
        {
            "optimizer": "sgd",
            "lr": 0.01,
            "weight_decay": 1e-3,
            "loss": "sum",
            "warmup_weights": "equal",
            "observation": "normalized_losses",
        },
        # Task networks with parameters of their own kind (cross-stitch units).
        {"model": "cross_stitch"},
    ],
)
def test_slot_k_is_the_single_env_seeded_seed_plus_k(kwargs):
    vector, singles = _pair("LossWeighting-Cubic-v1", 3, **CUBIC, **kwargs)
    v_obs, _ = vector.reset(seed=7)
    s_obs = np.stack([env.reset(seed=7 + k)[0] for k, env in enumerate(singles)])
    np.testing.assert_allclose(v_obs, s_obs, rtol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(14):  # across two autoresets
        actions = rng.uniform(-0.9, 0.9, vector.action_space.shape).astype(np.float32)
        v_obs, s_obs, v_rew, s_rew = _step_both(vector, singles, actions)
        np.testing.assert_allclose(v_obs, s_obs, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(v_rew, s_rew, rtol=1e-3, atol=1e-4)
    for k, env in enumerate(singles):
        expected = env.unwrapped.evaluate("test")["mean_nmse"]
        assert vector.unwrapped.evaluate("test", k)["mean_nmse"] == pytest.approx(expected, 1e-4)


def test_a_list_of_seeds_seeds_each_slot():
    vector = gym.make_vec(
        "LossWeighting-Cubic-v1", num_envs=2, vectorization_mode="vector_entry_point", **CUBIC
    )
    by_int, _ = vector.reset(seed=7)
    by_list, _ = vector.reset(seed=[7, 8])
    np.testing.assert_array_equal(by_list, by_int)
    swapped, _ = vector.reset(seed=[8, 7])
    np.testing.assert_array_equal(swapped, by_int[::-1])
    by_numpy, _ = vector.reset(seed=np.int64(7))
    np.testing.assert_array_equal(by_numpy, by_int)
    by_array, _ = vector.reset(seed=np.array([7, 8]))
    np.testing.assert_array_equal(by_array, by_int)
    for bad in ([7], [7, -1], [7, "8"], [True, 8], True, -1, 7.0, np.array([[7, 8]])):
        with pytest.raises(ConfigError, match="`seed` must be an int >= 0 or a list of 2"):
            vector.reset(seed=bad)


def test_val_reward_and_a_partial_reset_leave_the_other_slots_alone():
    vector, singles = _pair("LossWeighting-CubicScales-v1", 3, **CUBIC)
    vector.reset(seed=3)
    for k, env in enumerate(singles):
        env.reset(seed=3 + k)
    rng = np.random.default_rng(1)
    for step in range(9):
        if step == 4:  # slot 1 starts a fresh run mid-episode; 0 and 2 go on
            v_obs, _ = vector.reset(options={"reset_mask": np.array([False, True, False])})
            fresh = singles[1].reset()[0]
            np.testing.assert_allclose(v_obs[1], fresh, rtol=1e-5)
        actions = rng.uniform(-0.9, 0.9, vector.action_space.shape).astype(np.float32)
        v_obs, s_obs, v_rew, s_rew = _step_both(vector, singles, actions)
        np.testing.assert_allclose(v_obs, s_obs, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(v_rew, s_rew, rtol=1e-3, atol=1e-5)


def test_image_runs_with_batchnorm_match_to_float_tolerance():
    # Convolutions and BatchNorm sum in another order when batched over runs (as they do
    # between thread counts), so the comparison is looser and the horizon short.
    kwargs = {"epochs": 2, "warmup_epochs": 1, "augment": True}
    vector, singles = _pair("LossWeighting-Digits10-v1", 2, **kwargs)
    v_obs, _ = vector.reset(seed=0)
    s_obs = np.stack([env.reset(seed=k)[0] for k, env in enumerate(singles)])
    np.testing.assert_allclose(v_obs, s_obs, rtol=1e-2)
    rng = np.random.default_rng(2)
    for _ in range(3):
        actions = rng.uniform(-0.9, 0.9, vector.action_space.shape).astype(np.float32)
        v_obs, s_obs, _, _ = _step_both(vector, singles, actions)
        np.testing.assert_allclose(v_obs, s_obs, rtol=1e-2)


def test_sb3_sac_drives_the_batched_vector_env():
    from stable_baselines3 import SAC

    from agents.sb3_vec_env import SB3VecEnvAdapter

    vector = gym.make_vec(
        "LossWeighting-Cubic-v1", num_envs=4, vectorization_mode="vector_entry_point", **CUBIC
    )
    env = SB3VecEnvAdapter(vector)
    model = SAC("MlpPolicy", env, learning_starts=8, batch_size=16, seed=0, device="cpu")
    model.learn(24)
    assert model.num_timesteps == 24
    assert model.replay_buffer.size() == 6  # 6 vector steps of 4 slots
    rewards = model.replay_buffer.rewards[: model.replay_buffer.size()]
    assert np.isfinite(rewards).all()
    # The slots are independent runs: a per-slot method answers for each slot asked.
    per_slot = env.env_method("evaluate", "val")
    assert per_slot == [vector.unwrapped.evaluate("val", k) for k in range(4)]
    assert per_slot[0] != per_slot[1]
    assert env.env_method("evaluate", "val", indices=[2]) == [per_slot[2]]
    assert env.env_method("evaluate", "val", 3) == [per_slot[3]] * 4  # an explicit slot


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_envs": 0}, "num_envs"),
        ({"num_envs": 2, "aggregator": "upgrad"}, "aggregator"),
        ({"num_envs": 2, "batching": "uniform"}, "batching"),
        ({"num_envs": 2, "reward": "best"}, "reward"),
    ],
)
def test_bad_vector_arguments_name_themselves(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        gym.make_vec("LossWeighting-Cubic-v1", vectorization_mode="vector_entry_point", **kwargs)


def test_bad_actions_and_reset_masks_are_refused():
    vector = gym.make_vec(
        "LossWeighting-Cubic-v1", num_envs=2, vectorization_mode="vector_entry_point", **CUBIC
    )
    vector.reset(seed=0)
    with pytest.raises(ConfigError, match="shape"):
        vector.step(np.zeros((3, 20), dtype=np.float32))
    with pytest.raises(ConfigError, match="reset_mask"):
        vector.reset(options={"reset_mask": [1, 0]})
    # As SyncVectorEnv: a mask that restarts nothing is refused, not ignored.
    with pytest.raises(ConfigError, match="at least one slot"):
        vector.reset(options={"reset_mask": np.zeros(2, dtype=bool)})


def test_a_step_before_the_first_reset_is_a_config_error():
    vector = gym.make_vec(
        "LossWeighting-Cubic-v1", num_envs=2, vectorization_mode="vector_entry_point", **CUBIC
    )
    with pytest.raises(ConfigError, match=r"step\(\) before reset\(\)"):
        vector.step(np.zeros(vector.action_space.shape, dtype=np.float32))
    # Nor can a first, partial reset leave a slot without a run.
    with pytest.raises(ConfigError, match=r"never reset \(slots \[0\] are not\)"):
        vector.reset(seed=0, options={"reset_mask": np.array([False, True])})


def test_a_reset_info_is_not_rewritten_by_later_resets():
    vector = gym.make_vec(
        "LossWeighting-Cubic-v1", num_envs=2, vectorization_mode="vector_entry_point", **CUBIC
    )
    _, info = vector.reset(seed=0)
    kept = info["base_losses"]
    before = kept.copy()
    vector.reset(seed=[None, 123], options={"reset_mask": np.array([False, True])})
    for _ in range(6):  # both slots end their runs and autoreset
        *_, infos = vector.step(np.zeros(vector.action_space.shape, dtype=np.float32))
    assert infos["_base_losses"].all()
    np.testing.assert_array_equal(kept, before)


def _ours_and_sync(num_envs: int, mode: str):
    """The batched form and SyncVectorEnv over single envs, both with autoreset ``mode``."""
    from gymnasium.vector import AutoresetMode

    ours = gym.make_vec(
        "LossWeighting-Cubic-v1",
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode=mode,
        **CUBIC,
    )
    assert ours.metadata["autoreset_mode"] == AutoresetMode(mode)
    theirs = gym.make_vec(
        "LossWeighting-Cubic-v1",
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode(mode)},
        **CUBIC,
    )
    return ours, theirs


def test_infos_follow_gymnasiums_same_step_layout():
    """Key by key and mask by mask, the infos SyncVectorEnv gives over the single envs with
    SAME_STEP autoreset: reset info at the top level of an ended slot, its step's info in
    final_info, its last observation in final_obs."""
    ours, theirs = _ours_and_sync(2, "SameStep")
    assert_same_vector_infos(ours.reset(seed=5)[1], theirs.reset(seed=5)[1])
    actions = np.zeros(ours.action_space.shape, dtype=np.float32)
    for step in range(7):  # the 6th step ends both runs
        _, _, terminated, _, info = ours.step(actions)
        _, _, _, _, expected = theirs.step(actions)
        assert terminated.all() == (step == 5)
        assert_same_vector_infos(info, expected)
    assert "final_info" not in info and info["_losses"].all()
    # A partial reset reports the reset slots only.
    _, info = ours.reset(options={"reset_mask": np.array([False, True])})
    assert info["_base_losses"].tolist() == [False, True]


def test_sb3_adapter_hands_sb3_the_ended_steps_info():
    from agents.sb3_vec_env import SB3VecEnvAdapter

    vector = gym.make_vec(
        "LossWeighting-Cubic-v1", num_envs=2, vectorization_mode="vector_entry_point", **CUBIC
    )
    env = SB3VecEnvAdapter(vector)
    env.seed(3)
    env.reset()
    singles = [gym.make("LossWeighting-Cubic-v1", **CUBIC) for _ in range(2)]
    for k, single in enumerate(singles):
        single.reset(seed=3 + k)
    for _ in range(6):
        env.step_async(np.zeros((2, 20), dtype=np.float32))
        obs, _, dones, infos = env.step_wait()
        ends = [single.step(np.zeros(20, dtype=np.float32)) for single in singles]
    assert dones.all()
    assert all("losses" in info and "terminal_observation" in info for info in infos)
    assert all(info["batch"] == 2 and info["epoch"] == 3 for info in infos)  # the last batch
    assert all("base_losses" in info and info["epoch"] == 2 for info in env.reset_infos)
    for k, (single, end, info) in enumerate(zip(singles, ends, infos)):
        # The episode terminated (its last epoch ended): SB3 must not bootstrap past it.
        assert end[2] and info["TimeLimit.truncated"] is False
        # The ended step's observation is the terminal one; the returned one starts anew.
        np.testing.assert_allclose(info["terminal_observation"], end[0], rtol=1e-5)
        np.testing.assert_allclose(obs[k], single.reset()[0], rtol=1e-5)
        assert not np.allclose(obs[k], end[0])


def test_sb3_adapter_passes_dict_infos_and_episode_statistics():
    """Gymnasium lays out a dict-valued info as a vector info dict of its own: the adapter
    hands each slot its own dict, and an episode summary from RecordEpisodeStatistics
    reaches SB3 in the ended step's info, where SB3's logger reads ``ep_rew_mean``."""
    from gymnasium.vector import AutoresetMode
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    from agents.sb3_vec_env import SB3VecEnvAdapter

    vector = gym.make_vec(
        "LossWeighting-Cubic-v1", num_envs=2, vectorization_mode="vector_entry_point", **CUBIC
    )
    env = SB3VecEnvAdapter(RecordEpisodeStatistics(vector))
    env.reset()
    returns = np.zeros(2)
    for _ in range(6):
        env.step_async(np.zeros((2, 20), dtype=np.float32))
        _, rewards, dones, infos = env.step_wait()
        returns += rewards
    assert dones.all()
    for k, info in enumerate(infos):
        assert info["episode"]["l"] == 6 and info["terminal_observation"].shape == (20,)
        assert info["episode"]["r"] == pytest.approx(returns[k], rel=1e-5)
    assert all("episode" not in info for info in env.reset_infos)

    grouping = gym.make_vec(
        "TaskGrouping-Digits10-v1",
        num_envs=2,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
    )
    env = SB3VecEnvAdapter(grouping)
    env.reset()
    actions = np.zeros((2, 10), dtype=np.int8)
    actions[0, :3], actions[1, 5:] = 1, 1
    env.step_async(actions)
    infos = env.step_wait()[3]
    assert sorted(infos[0]["group_gains"]) == ["0", "1", "2"]
    assert sorted(infos[1]["group_gains"]) == ["5", "6", "7", "8", "9"]
    # Attributes and methods of a SyncVectorEnv's slots are each slot's own env's.
    assert env.get_attr("budget") == [3, 3]
    env.set_attr("budget", 5, indices=[1])
    assert grouping.get_attr("budget") == (3, 5) and env.get_attr("budget", indices=1) == [5]
    # Slot 0 grouped tasks 0-2 (one network, seven tasks alone: 8), slot 1 tasks 5-9 (6).
    evaluations = env.env_method("evaluate", "test")
    assert [e["networks"] for e in evaluations] == [8, 6]
    assert env.env_method("evaluate", "test", indices=[1]) == evaluations[1:]


def test_next_step_autoreset_matches_sync_vector_env_through_staggered_ends():
    """NEXT_STEP: an ended slot's next step restarts it without training it on the action;
    the other slots train on theirs. Staggered by partial resets, so restarts and training
    steps share a step; observations, rewards, ends and infos as SyncVectorEnv's."""
    ours, theirs = _ours_and_sync(3, "NextStep")
    assert_same_vector_infos(ours.reset(seed=5)[1], theirs.reset(seed=5)[1])
    rng = np.random.default_rng(0)
    ends = [[]]
    for step in range(14):
        if step in (2, 3):  # slot 1, then slot 2, start afresh: the runs end a step apart
            mask = np.arange(3) == step - 1
            v_obs, info = ours.reset(options={"reset_mask": mask})
            s_obs, expected = theirs.reset(options={"reset_mask": mask})
            np.testing.assert_allclose(v_obs, s_obs, rtol=1e-5)
            assert_same_vector_infos(info, expected)
        actions = rng.uniform(-0.9, 0.9, ours.action_space.shape).astype(np.float32)
        actions[ends[-1]] = np.nan  # a restarting slot's action is not read
        v_obs, v_rew, v_term, v_trunc, info = ours.step(actions)
        s_obs, s_rew, s_term, s_trunc, expected = theirs.step(actions)
        np.testing.assert_allclose(v_obs, s_obs, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(v_rew, s_rew, rtol=1e-3, atol=1e-5)
        np.testing.assert_array_equal(v_term, s_term)
        np.testing.assert_array_equal(v_trunc, s_trunc)
        assert_same_vector_infos(info, expected)
        ends.append(np.flatnonzero(v_term).tolist())
    assert ends[6:10] == [[0], [], [1], [2]]  # and each restarted on the step after
    assert "final_obs" not in info


def test_next_step_autoreset_takes_normalize_observation():
    """Gymnasium's NormalizeObservation takes NEXT_STEP envs only; it normalises the batched
    form's observations as it does SyncVectorEnv's."""
    from gymnasium.wrappers import vector as vector_wrappers

    ours, theirs = map(vector_wrappers.NormalizeObservation, _ours_and_sync(2, "NextStep"))
    np.testing.assert_allclose(ours.reset(seed=2)[0], theirs.reset(seed=2)[0], atol=1e-4)
    actions = np.zeros(ours.action_space.shape, dtype=np.float32)
    for _ in range(8):  # through the runs' end and restart
        v_obs, v_rew, *_ = ours.step(actions)
        s_obs, s_rew, *_ = theirs.step(actions)
        np.testing.assert_allclose(v_obs, s_obs, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(v_rew, s_rew, rtol=1e-3, atol=1e-5)


def test_disabled_autoreset_takes_gymnasiums_vector_observation_wrappers():
    """Gymnasium's observation wrappers take NEXT_STEP or DISABLED envs (NormalizeObservation
    NEXT_STEP only)."""
    from gymnasium.wrappers import vector as vector_wrappers

    same_step = gym.make_vec(
        "LossWeighting-Cubic-v1", num_envs=2, vectorization_mode="vector_entry_point", **CUBIC
    )
    envs = gym.make_vec(
        "LossWeighting-Cubic-v1",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        autoreset_mode="Disabled",
        **CUBIC,
    )
    # Log-losses: an observation wrapper, which refuses SAME_STEP envs.
    wrapped = vector_wrappers.TransformObservation(envs, np.log1p, envs.observation_space)
    wrapped.reset(seed=1)
    same_step.reset(seed=1)
    actions = np.zeros(envs.action_space.shape, dtype=np.float32)
    for _ in range(6):
        _, reward, terminated, _, info = wrapped.step(actions)
        _, expected, _, _, expected_info = same_step.step(actions)
        np.testing.assert_array_equal(reward, expected)
    assert terminated.all() and "final_obs" not in info and info["_losses"].all()
    # The ended runs stay ended (their last observation, as SAME_STEP's final_obs) until reset.
    np.testing.assert_array_equal(envs.unwrapped._obs(), np.stack(list(expected_info["final_obs"])))
    with pytest.raises(ConfigError, match=r"All 2 slots have ended .*reset_mask"):
        wrapped.step(actions)
    wrapped.reset(options={"reset_mask": np.array([True, True])})
    wrapped.step(actions)
    with pytest.raises(ConfigError, match="`autoreset_mode` must be one of"):
        gym.make_vec("LossWeighting-Cubic-v1", num_envs=2, autoreset_mode="Sometimes")


def test_disabled_autoreset_on_the_auxlabel_vector_form():
    from gymnasium.wrappers import vector as vector_wrappers

    envs = vector_wrappers.FlattenObservation(
        gym.make_vec(
            "AuxLabel-Digits-v1",
            num_envs=100,
            vectorization_mode="vector_entry_point",
            autoreset_mode="Disabled",
        )
    )
    envs.reset(seed=0, options={"mode": "train_main"})
    for _ in range(12):
        obs, _, terminated, _, info = envs.step(np.zeros(100, dtype=np.int64))
    assert terminated.all() and info["batch"][0] == 11 and obs.shape[0] == 100
    with pytest.raises(ConfigError, match=r"All 100 slots have ended and"):
        envs.step(np.zeros(100, dtype=np.int64))
    with pytest.raises(ConfigError, match="must hold every slot"):
        envs.reset(options={"reset_mask": np.arange(100) < 50})  # the slots share one epoch
    with pytest.raises(ConfigError, match="at least one slot"):
        envs.reset(options={"reset_mask": np.zeros(100, dtype=bool)})
    envs.reset()
    with pytest.raises(ConfigError, match=r"one action of Discrete\(5\) per slot; got shape"):
        envs.step(np.zeros(3, dtype=np.int64))
    # Gymnasium's loop restarts the ended slots: here all of them, as one epoch.
    envs.reset(options={"reset_mask": np.ones(100, dtype=bool)})
    # The trained network is canonical: the next epoch goes on from it.
    assert envs.unwrapped.learner.epoch == 1 and envs.unwrapped.learner.position == 0


def test_next_step_autoreset_on_the_auxlabel_vector_form():
    """The epoch's last step returns its last batch; the next step ignores its actions and
    returns the next epoch's first batch (SAME_STEP's observation at the end) with reward 0
    and the reset info."""
    kwargs = {"num_envs": 100, "vectorization_mode": "vector_entry_point"}
    same = gym.make_vec("AuxLabel-Digits-v1", **kwargs)
    envs = gym.make_vec("AuxLabel-Digits-v1", autoreset_mode="NextStep", **kwargs)
    for env in (same, envs):
        env.reset(seed=0, options={"mode": "train_main"})
    actions = np.zeros(100, dtype=np.int64)
    for _ in range(12):
        obs, _, terminated, _, info = envs.step(actions)
        expected_obs, _, _, _, expected = same.step(actions)
    assert terminated.all() and "final_obs" not in info and info["batch"][0] == 11
    # Reference policies read the indices of the batch the observation shows: the last one.
    shown = envs.unwrapped.sample_indices()
    np.testing.assert_array_equal(
        envs.unwrapped.learner.data.train.labels[shown], obs["primary_label"]
    )
    last = np.stack([slot["image"] for slot in expected["final_obs"]])
    np.testing.assert_array_equal(obs["image"], last)
    obs, reward, terminated, truncated, info = envs.step(np.full(100, -1))  # not read
    assert not (terminated.any() or truncated.any()) and not reward.any()
    np.testing.assert_array_equal(obs["image"], expected_obs["image"])
    assert info["epoch"].tolist() == [1] * 100 and info["_mode"].all() and "batch" not in info
    envs.step(actions)  # and the epoch goes on


TWO_BATCHES = {"train_subset": 40, "train_batch_size": 20, "eval_batch_size": 8}


@pytest.mark.parametrize("autoreset", ["SameStep", "NextStep"])
def test_the_auxlabel_vector_forms_autoreset_keeps_the_train_main_mode(autoreset):
    """A loop of train_main epochs driven by the autoreset stays in train_main: each epoch
    goes on from the last one's network (rewards 0, the canonical network moves), rather
    than training throwaway copies of the canonical one."""
    envs = gym.make_vec(
        "AuxLabel-Digits-v1",
        20,
        vectorization_mode="vector_entry_point",
        autoreset_mode=autoreset,
        **TWO_BATCHES,
    )
    envs.reset(seed=0, options={"mode": "train_main"})
    actions = np.zeros(20, dtype=np.int64)
    envs.step(actions)
    _, _, terminated, _, info = envs.step(actions)
    assert terminated.all()
    if autoreset == "NextStep":
        _, _, _, _, info = envs.step(actions)  # the reset step starts the next epoch
    task = envs.unwrapped.task
    assert info["mode"].tolist() == ["train_main"] * 20 and task.mode == "train_main"
    canonical = [v.clone() for v in task.canonical["net"].values()]
    envs.step(actions)
    _, rewards, terminated, _, _ = envs.step(actions)
    assert terminated.all() and not rewards.any()
    moved = list(task.canonical["net"].values())
    assert not all(torch.equal(a, b) for a, b in zip(canonical, moved))


@pytest.mark.parametrize("autoreset", ["NextStep", "Disabled"])
def test_an_auxlabel_vector_epoch_cut_by_max_batches_is_ended(autoreset):
    """A truncated epoch is as ended as a terminated one: the next step restarts it
    (NextStep: nothing trained) or is refused (Disabled); it never trains a batch past the
    cut."""
    envs = gym.make_vec(
        "AuxLabel-Digits-v1",
        20,
        vectorization_mode="vector_entry_point",
        autoreset_mode=autoreset,
        max_batches=1,
        **TWO_BATCHES,
    )
    envs.reset(seed=0)
    actions = np.zeros(20, dtype=np.int64)
    _, _, terminated, truncated, _ = envs.step(actions)
    assert truncated.all() and not terminated.any() and envs.unwrapped.learner.position == 1
    if autoreset == "Disabled":
        with pytest.raises(ConfigError, match="have ended"):
            envs.step(actions)
        return
    _, rewards, _, _, info = envs.step(actions)
    assert not rewards.any() and "batch" not in info and envs.unwrapped.learner.position == 0


def test_a_train_main_epoch_evaluates_no_validation_potential(monkeypatch):
    """``reward="val"`` needs the validation loss where a train_agent episode starts; a
    train_main epoch, which earns no reward, does not pay a pass over the validation split."""
    env = gym.make(
        "AuxLabel-Digits-v1", reward="val", restore="none", train_batch_size=20
    ).unwrapped
    env.reset(seed=0, options={"mode": "train_main"})
    calls = []
    evaluate = env.learner.evaluate
    monkeypatch.setattr(
        env.learner, "evaluate", lambda split="test": calls.append(split) or evaluate(split)
    )
    for _ in range(20):  # one SGD step: a network the potential has not seen
        env.step(0)
    env.reset()
    env.step(0)
    assert calls == []


def test_autoreset_mode_of_the_sync_form_goes_in_vector_kwargs():
    from gymnasium.vector import AutoresetMode

    sync = gym.make_vec(
        "LossWeighting-Cubic-v1",
        num_envs=2,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        **CUBIC,
    )
    assert sync.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    sync.close()
    with pytest.raises(ConfigError, match=r"native vector form.*vector_kwargs=\{'autoreset_mode'"):
        gym.make_vec("LossWeighting-Cubic-v1", 2, vectorization_mode="sync", autoreset_mode="x")
