"""Every registered id against Gymnasium's and SB3's checkers, determinism, and the MDP."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import cheap_kwargs, same_values
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mtl_envs
from mtl_envs.errors import ConfigError
from mtl_envs.families import family_of

ENV_IDS = mtl_envs.registered_ids()
SMALL = {"train_batch_size": 20, "eval_batch_size": 32}


def test_ids_registered():
    for name in ("CIFAR100", "CIFAR10", "SVHN", "Digits", "CIFAR100Small"):
        for version in ("v1", "v0"):  # v0 stays for the results recorded on it
            assert f"AuxLabel-{name}-{version}" in ENV_IDS
            assert f"AuxLabelWeighted-{name}-{version}" in ENV_IDS
    with pytest.warns(DeprecationWarning, match="AuxLabel-Digits-v0 is out of date"):
        old = gym.make("AuxLabel-Digits-v0")
    assert old.unwrapped.task.observed_image == "raw"
    assert gym.make("AuxLabel-Digits-v1").unwrapped.task.observed_image == "trained"
    for name in ("Digits10", "CIFAR100MTL", "Exam"):
        assert f"LossWeighting-{name}-v1" in ENV_IDS
    for name in ("Digits10", "CIFAR100MTL"):
        assert f"TaskGrouping-{name}-v1" in ENV_IDS
    # The v0 ids (bounded weight ratios; free single-task fallback) point to v1.
    with pytest.raises(gym.error.DeprecatedEnv, match="LossWeighting-Digits10-v1"):
        gym.make("LossWeighting-Digits10-v0")
    with pytest.raises(gym.error.DeprecatedEnv, match="TaskGrouping-Digits10-v1"):
        gym.make("TaskGrouping-Digits10-v0")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("env_id", ENV_IDS, ids=ENV_IDS)
def test_check_env(env_id, data_env):
    # Registered defaults (VGG16 for CIFAR/SVHN) on small files in the official layouts.
    env = gym.make(env_id, **cheap_kwargs(env_id))
    check_env(env.unwrapped)  # with the render check: a second env built with render_mode="ansi"
    sb3_check_env(env.unwrapped, warn=False)
    env.close()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("env_id", ENV_IDS, ids=ENV_IDS)
def test_every_id_repeats_its_trajectory_under_the_same_seed(env_id, data_env):
    """A seeded reset makes the run again: the same observations, rewards, ends and infos
    for the same actions, on one env reset twice (no state leaks between episodes)."""
    env = gym.make(env_id, **cheap_kwargs(env_id))
    runs = []
    for seed in (11, 11, 12):
        obs, info = env.reset(seed=seed)
        env.action_space.seed(3)
        steps = [(obs, info)]
        for _ in range(6):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            steps.append((obs, reward, terminated, truncated, info))
            if terminated or truncated:
                break
        runs.append(steps)
    assert len(runs[0]) == len(runs[1])
    for first, second in zip(runs[0], runs[1]):
        assert all(same_values(a, b) for a, b in zip(first, second)), env_id
    # Another seed, another run, where the seed sets one (a training run's network and data
    # order); a grouping env reading its gain table is one fixed MDP that only actions move.
    other = not all(
        all(same_values(a, b) for a, b in zip(first, third))
        for first, third in zip(runs[0], runs[2])
    )
    assert other == (family_of(env_id).name != "TaskGrouping"), env_id
    env.close()


def rollout(env, seed, steps, action_seed=0):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(action_seed)
    trajectory = []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trajectory.append(
            (
                obs["image"].copy(),
                int(obs["primary_label"]),
                reward,
                terminated,
                truncated,
                tuple(sorted(info.items())),
            )
        )
    return trajectory


@pytest.mark.parametrize("env_id", ["AuxLabel-Digits-v1", "AuxLabelWeighted-Digits-v1"])
def test_same_seed_same_trajectory(env_id):
    env = gym.make(env_id, **SMALL)
    first = rollout(env, seed=7, steps=3 * 20)
    second = rollout(gym.make(env_id, **SMALL), seed=7, steps=3 * 20)
    other = rollout(env, seed=8, steps=3 * 20)
    for a, b in zip(first, second):
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    rewards = [t[2] for t in first]
    assert [r != 0 for r in rewards] == [(i + 1) % 20 == 0 for i in range(60)]
    assert rewards != [t[2] for t in other]


def test_reward_is_eq4_on_hand_numbers(monkeypatch):
    env = gym.make("AuxLabel-Digits-v1", **SMALL).unwrapped
    env.reset(seed=0)
    learner = env.learner
    monkeypatch.setattr(learner, "primary_loss", lambda idx: torch.tensor(1.5))
    # Sub-class 0 for even positions, 1 for odd: with balanced primary labels the batch-mean
    # target is spread over 2 sub-classes of each primary class present.
    labels = [env._labels[j] for j in range(20)]
    actions = [j % 2 for j in range(20)]
    for a in actions:
        *_, reward = env.step(a)[:2]
    classes = [5 * y + a for y, a in zip(labels, actions)]
    counts = np.bincount(classes) / 20
    entropy = -sum(p * math.log(p) for p in counts if p > 0)
    assert reward == pytest.approx(-1.5 + 0.2 * entropy, rel=1e-6)


def test_reward_scores_b_r_clean_training_images_after_the_sgd_step(monkeypatch):
    """Eq. 3: the reward's loss is measured on B_R distinct training images, un-augmented and
    in eval mode, by the main network after the batch's SGD step (not before it)."""
    env = gym.make("AuxLabel-Digits-v1", **SMALL).unwrapped
    env.reset(seed=0)
    learner = env.learner
    before = [p.detach().clone() for p in learner.net.parameters()]
    seen = []
    real = learner.primary_loss

    def spy(indices):
        seen.append((indices.clone(), [p.detach().clone() for p in learner.net.parameters()]))
        return real(indices)

    monkeypatch.setattr(learner, "primary_loss", spy)
    labels = [env._labels[j] for j in range(20)]
    for _ in range(20):
        _, reward, *_ = env.step(0)
    ((indices, at_call),) = seen
    assert len(indices) == 32 and len(set(indices.tolist())) == 32
    after = list(learner.net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(at_call, after))
    assert not all(torch.equal(a, b) for a, b in zip(before, after))
    learner.net.eval()
    with torch.no_grad():
        images = learner.data.train.images[indices].float() / 255
        mean = torch.tensor(learner.data.mean).view(1, -1, 1, 1)
        std = torch.tensor(learner.data.std).view(1, -1, 1, 1)
        (logits,) = learner.net((images - mean) / std, heads=[0])
        loss = torch.nn.functional.cross_entropy(logits, learner.data.train.labels[indices])
    counts = np.bincount([5 * y for y in labels]) / 20  # sub-class 0 of each primary class
    entropy = -sum(p * math.log(p) for p in counts if p > 0)
    assert reward == pytest.approx(-float(loss) + 0.2 * entropy, rel=1e-5)


def test_modes_and_canonical_model():
    env = gym.make("AuxLabel-Digits-v1", **SMALL).unwrapped
    env.reset(seed=0, options={"mode": "train_agent"})
    canonical = [p.clone() for p in env.learner.net.parameters()]
    for _ in range(40):
        env.step(env.action_space.sample())
    assert not all(torch.equal(a, b) for a, b in zip(canonical, env.learner.net.parameters()))
    env.reset(options={"mode": "train_main"})  # never from the agent's network
    assert all(torch.equal(a, b) for a, b in zip(canonical, env.learner.net.parameters()))
    for _ in range(40):
        env.step(env.action_space.sample())
    env.reset(options={"mode": "train_agent"})  # back to the canonical model
    assert all(torch.equal(a, b) for a, b in zip(canonical, env.learner.net.parameters()))
    env.reset(options={"mode": "train_main"})
    terminated, info = False, {}
    while not terminated:
        _, reward, terminated, _, info = env.step(env.action_space.sample())
        assert reward == 0.0 and info["mode"] == "train_main"
    trained = [p.clone() for p in env.learner.net.parameters()]
    env.reset(options={"mode": "train_agent"})  # the trained network is canonical now
    assert all(torch.equal(a, b) for a, b in zip(trained, env.learner.net.parameters()))
    assert env.learner.epoch == 1


def test_single_and_vector_forms_start_train_main_from_the_canonical_model():
    """RL-AUX's cycle: an agent epoch on a copy, then the main epoch from the canonical
    network, in the per-sample env as in the vector form (whose autoreset restores)."""
    single = gym.make("AuxLabel-Digits-v1", **SMALL).unwrapped
    vector = gym.make_vec(
        "AuxLabel-Digits-v1", num_envs=20, vectorization_mode="vector_entry_point", **SMALL
    )
    single.reset(seed=3, options={"mode": "train_main"})
    single.reset(seed=3)  # a seeded reset starts over in train_agent mode
    vector.reset(seed=3)
    assert single.task.mode == vector.unwrapped.task.mode == "train_agent"
    canonical = [p.clone() for p in single.learner.net.parameters()]
    terminated = False
    while not terminated:
        *_, terminated, _, _ = single.step(0)
    terms = np.zeros(20, dtype=bool)
    while not terms.all():
        _, _, terms, _, _ = vector.step(np.zeros(20, dtype=np.int64))
    single.reset(options={"mode": "train_main"})
    vector.reset(options={"mode": "train_main"})
    for a, b, c in zip(
        canonical, single.learner.net.parameters(), vector.unwrapped.learner.net.parameters()
    ):
        assert torch.equal(a, b) and torch.equal(b, c)


def test_restore_every_batch_and_max_batches():
    env = gym.make("AuxLabel-Digits-v1", restore="batch", max_batches=2, **SMALL).unwrapped
    env.reset(seed=0)
    canonical = [p.clone() for p in env.learner.net.parameters()]
    for step in range(40):
        _, reward, terminated, truncated, _ = env.step(0)
        if step == 19:
            assert reward != 0.0
            assert all(torch.equal(a, b) for a, b in zip(canonical, env.learner.net.parameters()))
    assert truncated and not terminated


def test_vector_env_matches_per_sample_env():
    single = gym.make("AuxLabelWeighted-Digits-v1", **SMALL).unwrapped
    vector = gym.make_vec(
        "AuxLabelWeighted-Digits-v1", num_envs=20, vectorization_mode="vector_entry_point", **SMALL
    )
    single.reset(seed=11)
    obs, _ = vector.reset(seed=11)
    rng = np.random.default_rng(0)
    for _ in range(3):
        actions = np.stack([rng.integers(0, 5, 20), rng.integers(0, 21, 20)], axis=1)
        for j in range(20):
            s_obs = single._obs()
            assert np.array_equal(s_obs["image"], obs["image"][j])
            assert s_obs["primary_label"] == obs["primary_label"][j]
            _, s_reward, *_ = single.step(actions[j])
        obs, rewards, terms, truncs, infos = vector.step(actions)
        assert np.allclose(rewards, s_reward) and s_reward != 0.0
    for a, b in zip(single.learner.net.parameters(), vector.unwrapped.learner.net.parameters()):
        assert torch.equal(a, b)


def test_vector_env_autoresets_same_step():
    vector = gym.make_vec(
        "AuxLabel-Digits-v1", num_envs=100, vectorization_mode="vector_entry_point"
    )
    vector.reset(seed=0, options={"mode": "train_main"})
    for step in range(12):
        obs, rewards, terms, truncs, infos = vector.step(np.zeros(100, dtype=np.int64))
        assert terms.all() == (step == 11)
    assert infos["final_obs"][0]["image"].shape == (1, 8, 8)
    # Gymnasium's SAME_STEP layout: the new epoch's reset info on top, the step's below.
    assert sorted(k for k in infos if not k.startswith("_")) == [
        "epoch",
        "final_info",
        "final_obs",
        "mode",
    ]
    assert infos["epoch"].tolist() == [1] * 100 and infos["_mode"].all()
    assert infos["final_info"]["batch"][0] == 11 and infos["final_info"]["_diverged"].all()
    assert vector.unwrapped.learner.epoch == 1 and vector.unwrapped.learner.position == 0
    # The returned observation is the new epoch's first batch, not the ended one's.
    final = np.stack([o["image"] for o in infos["final_obs"]])
    assert not np.array_equal(obs["image"], final)
    labels = vector.unwrapped.learner.data.train.labels.cpu().numpy()
    np.testing.assert_array_equal(obs["primary_label"], labels[vector.unwrapped.sample_indices()])


def test_bad_arguments_are_named():
    with pytest.raises(
        ConfigError,
        match="Unknown AuxLabel argument 'hierarchy_factr'. Did you mean 'hierarchy_factor'",
    ):
        gym.make("AuxLabel-Digits-v1", hierarchy_factr=3)
    with pytest.raises(
        ValueError, match=r"`label_space` must be one of \['hierarchical', 'flat'\]"
    ):
        gym.make("AuxLabel-Digits-v1", label_space="tree")
    with pytest.raises(ValueError, match="restore"):
        gym.make("AuxLabel-Digits-v1", restore="never")
    with pytest.raises(ConfigError, match="Did you mean 'small_cnn'"):
        gym.make("AuxLabel-Digits-v1", backbone="small-cnn")
    with pytest.raises(ValueError, match=r"`num_envs` \(8\) must equal `train_batch_size` \(100\)"):
        gym.make_vec("AuxLabel-Digits-v1", num_envs=8, vectorization_mode="vector_entry_point")
    env = gym.make("AuxLabel-Digits-v1").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(7)
    with pytest.raises(ValueError, match="options\\['mode'\\]"):
        env.reset(options={"mode": "train"})


def test_flat_label_space():
    """Flat labels: label 49 is class 9's last sub-class; for a sample of another class it
    lies outside the sample's block, whose uniform distribution becomes its target. The
    batch's mean target then puts n_9 / 20 on class 49 and n_c / 100 on each of class c's
    five, and eq. 3's entropy is that distribution's."""
    env = gym.make("AuxLabel-Digits-v1", label_space="flat", **SMALL).unwrapped
    assert env.action_space == gym.spaces.Discrete(50)
    obs, _ = env.reset(seed=0)
    labels = []
    for _ in range(20):  # one batch of 20
        labels.append(int(obs["primary_label"]))
        obs, reward, _, _, info = env.step(49)
    assert np.isfinite(reward)
    counts = np.bincount(labels, minlength=10)
    assert 0 < counts[9] < 20  # both kinds of sample in the batch
    mass = [counts[9] / 20] + [n / 100 for n in counts[:9] for _ in range(5) if n]
    expected = -sum(m * np.log(m) for m in mass)
    assert info["label_entropy"] == pytest.approx(expected, rel=1e-5)


def test_auxlabel_validation_reward_telescopes_over_a_run():
    env = gym.make("AuxLabel-Digits-v1", reward="val", restore="none", train_batch_size=20)
    env = env.unwrapped
    env.reset(seed=0)
    start = env.task.val_potential()
    total = 0.0
    for episode in range(2):
        if episode:
            env.reset()
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += reward
            done = terminated or truncated
    # Only the episodes' last steps are rewarded; the run returns its validation-loss drop.
    assert total == pytest.approx(env.task.val_potential() - start, rel=1e-5)
    with pytest.raises(ValueError, match="restore='batch'"):
        gym.make("AuxLabel-Digits-v1", reward="val", restore="batch")


def test_auxlabel_validation_reward_refuses_the_per_batch_rewards_settings():
    """reward='val' reads neither eq. 4's entropy weight nor its B_R: a changed value would
    change nothing, so it is refused rather than ignored."""
    for name, value in (("entropy_coef", 0.0), ("eval_batch_size", 32)):
        with pytest.raises(ValueError, match=f"`{name}` \\({value}\\) sets RL-AUX eq. 4"):
            gym.make("AuxLabel-Digits-v1", reward="val", **{name: value})
    with pytest.raises(ValueError, match="`entropy_coef`"):
        gym.make("AuxLabel-CIFAR100Small-v1", entropy_coef=1.0)
    # The defaults are what an id that never set them carries.
    gym.make("AuxLabel-Digits-v1", reward="val", entropy_coef=0.2, eval_batch_size=256).close()


def _counting_evaluate(env, monkeypatch) -> list[str]:
    calls: list[str] = []
    evaluate = env.learner.evaluate
    monkeypatch.setattr(
        env.learner, "evaluate", lambda split="test": calls.append(split) or evaluate(split)
    )
    return calls


@pytest.mark.parametrize("restore", ["none", "epoch"])
def test_auxlabel_validation_reward_evaluates_once_per_network_state(monkeypatch, restore):
    env = gym.make("AuxLabel-Digits-v1", reward="val", restore=restore, train_batch_size=20)
    env = env.unwrapped
    calls = _counting_evaluate(env, monkeypatch)
    env.reset(seed=0)
    start = env.task.val_potential()
    done = False
    while not done:
        *_, terminated, truncated, _ = env.step(0)
        done = terminated or truncated
    assert calls == ["val", "val"]  # the run's start and the episode's end
    end = env.task.val_potential()
    env.reset()
    # "none" starts where the episode ended, "epoch" from the canonical (starting) model:
    # either value is known already.
    assert calls == ["val", "val"]
    expected = end if restore == "none" else start
    assert env.task.val_potential() == expected
    with torch.inference_mode():
        assert expected == pytest.approx(-env.learner.evaluate("val")["loss"], rel=1e-6)
    del calls[:]
    env.step(0)
    env.reset(seed=1)  # a fresh run is evaluated afresh
    assert calls == ["val"]


def test_a_step_before_the_first_reset_is_refused_in_every_form():
    """The AuxLabel vector form trained a batch on the run its constructor built, which the
    first reset() then rebuilt; TaskGrouping built without gym.make scored a group."""
    from mtl_envs.envs.task_grouping import TaskGroupingEnv

    vector = gym.make_vec(
        "AuxLabel-Digits-v1", 4, vectorization_mode="vector_entry_point", train_batch_size=4
    )
    grouping = TaskGroupingEnv(dataset="digits10")
    for env in (vector, grouping):
        with pytest.raises(ConfigError, match=r"step\(\) before reset\(\)"):
            env.step(env.action_space.sample())
        env.reset(seed=0)
        env.step(env.action_space.sample())


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("AuxLabel-Digits-v1", {"train_batch_size": 4, "max_batches": 1}),
        ("LossWeighting-Cubic-v1", {"epochs": 2, "warmup_epochs": 1}),
    ],
)
def test_a_step_after_the_episode_ended_asks_for_a_reset(env_id, kwargs):
    """Gymnasium's contract: after terminated or truncated the next call is reset(). A step
    there used to index past the batch (AuxLabel) or train on past the run (LossWeighting)."""
    env = gym.make(env_id, **kwargs).unwrapped  # no OrderEnforcing wrapper
    with pytest.raises(ConfigError, match=r"step\(\) before reset\(\)"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    with pytest.raises(ConfigError, match=r"step\(\) after the episode ended"):
        env.step(env.action_space.sample())
    env.reset()
    env.step(env.action_space.sample())  # a reset starts the next episode


def test_the_auxlabel_vector_form_takes_one_seed_for_its_one_run():
    vec = gym.make_vec(
        "AuxLabel-Digits-v1", 4, vectorization_mode="vector_entry_point", train_batch_size=4
    )
    first, _ = vec.reset(seed=np.int64(3))
    again, _ = vec.reset(seed=3)
    np.testing.assert_array_equal(first["image"], again["image"])
    for bad in ([3, 4, 5, 6], -1, "3", True):
        with pytest.raises(ConfigError, match="`seed` must be an int >= 0"):
            vec.reset(seed=bad)
    vec.close()


def _labelled_batches(env_id: str, batches: int, spy_inputs: list) -> tuple[list, list]:
    """Vector steps of an image-blind policy on the fake CIFAR-100 files (augmented, 9
    batches an epoch): ``batches`` across the epoch's end (SAME_STEP autoreset), then, as
    RL-AUX's alternating protocol does, a reset into ``train_main`` that drops the episode
    the autoreset began, and 3 batches more. The observed images, the rewards and the final
    parameters, with the inputs each SGD step trained on appended to ``spy_inputs``."""
    vec = gym.make_vec(
        env_id, 20, vectorization_mode="vector_entry_point", backbone="small_cnn", **SMALL
    )
    learner = vec.unwrapped.learner
    train_batch = learner.train_batch

    def spy(indices, targets, weights=None, inputs=None):
        spy_inputs.append(learner.batch_inputs(indices) if inputs is None else inputs)
        return train_batch(indices, targets, weights, inputs=spy_inputs[-1])

    learner.train_batch = spy
    obs, _ = vec.reset(seed=5)
    images, rewards = [], []
    for step in range(batches + 3):
        if step == batches:
            obs, _ = vec.reset(options={"mode": "train_main"})
        images.append(obs["image"].copy())
        obs, reward, *_ = vec.step(obs["primary_label"] % 5)
        rewards.append(reward[0])
    vec.close()
    return images, rewards, [p.detach().clone() for p in learner.net.parameters()]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_agent_sees_the_augmented_view_its_batch_trains_on(data_env):
    """v1 observes what the SGD step trains on (RL-AUX section 4); v0 observed the stored
    image. The view is drawn where the learner drew it, so an image-blind policy trains the
    same network, with the same rewards, on both."""
    batches = 12  # an epoch of 9 and 3 of the next
    new_inputs, old_inputs = [], []
    new_images, new_rewards, new_params = _labelled_batches(
        "AuxLabel-CIFAR100-v1", batches, new_inputs
    )
    old_images, old_rewards, old_params = _labelled_batches(
        "AuxLabel-CIFAR100-v0", batches, old_inputs
    )
    normalize = gym.make("AuxLabel-CIFAR100-v1", backbone="small_cnn", **SMALL).unwrapped.learner
    for image, x in zip(new_images, new_inputs):
        assert torch.equal(normalize.prepare_inputs(torch.as_tensor(image), train=False), x)
    seen_as_trained = [
        torch.equal(normalize.prepare_inputs(torch.as_tensor(image), train=False), x)
        for image, x in zip(old_images, old_inputs)
    ]
    assert not any(seen_as_trained)  # crops of the stored images, not the images
    assert all(torch.equal(a, b) for a, b in zip(new_inputs, old_inputs))
    assert new_rewards == old_rewards and any(r != 0.0 for r in new_rewards)
    assert all(torch.equal(a, b) for a, b in zip(new_params, old_params))
    # The per-sample form draws the view where the vector form does.
    single = {}
    for env_id in ("AuxLabel-CIFAR100-v1", "AuxLabel-CIFAR100-v0"):
        env = gym.make(env_id, backbone="small_cnn", **SMALL).unwrapped
        obs, _ = env.reset(seed=5)
        for step in range(20 * 13):  # 13 batches: across the epoch's end
            if step == 20 * 11 + 7:  # a reset part-way through a batch drops its episode
                obs, _ = env.reset()
            obs, _, terminated, _, _ = env.step(int(obs["primary_label"]) % 5)
            if terminated:
                obs, _ = env.reset()
        single[env_id] = [p.detach().clone() for p in env.learner.net.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(*single.values()))


def test_the_baselines_train_the_same_learner_on_v0_and_v1():
    """Baselines build their learner from the id's config and never the env, so a baseline
    run on a v0 id is the run it would be on v1."""
    family = mtl_envs.families.FAMILIES["AuxLabel"]
    for env_id in family.ids():
        if env_id.endswith("-v1"):
            old = env_id[: -len("v1")] + "v0"
            assert family.learner_config(old) == family.learner_config(env_id)
