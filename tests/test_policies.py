"""Reference policies: actions inside the space on every registered id, hand-worked maps."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import cheap_kwargs, toy_reference_scores

import mtl_envs
from mtl_envs.envs.policies import REFERENCE_POLICIES, env_family, make_policy
from mtl_envs.errors import ConfigError
from mtl_envs.families import FAMILIES

ENV_IDS = mtl_envs.registered_ids()

SMALL = {"train_batch_size": 20, "eval_batch_size": 32}  # the fake CIFAR files: 180 images


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("env_id", ENV_IDS, ids=ENV_IDS)
def test_every_reference_policy_acts_inside_the_space(env_id, data_env):
    env = gym.make(env_id, **cheap_kwargs(env_id))
    family = env_family(env)
    for name in REFERENCE_POLICIES[family]:
        try:
            policy = make_policy(name, env, seed=0)
        except ValueError as err:
            # The human labels need CIFAR-100's fine classes; the optima need gains they can
            # look up, and they and ETAP enumerate every group (too many for 20 tasks).
            assert (name == "human" and "fine labels" in str(err)) or (
                name in ("optimal", "reward_optimal", "etap")
                and ("gain table" in str(err) or "every group" in str(err))
            )
            continue
        obs, _ = env.reset(seed=0)
        policy.reset()
        for _ in range(3):
            action = policy(obs)
            assert env.action_space.contains(action), (name, action)
            obs, reward, terminated, truncated, _ = env.step(action)
            assert np.isfinite(reward)
            if terminated or truncated:
                break
    env.close()


@pytest.mark.parametrize("env_id", ["AuxLabel-Digits-v1", "AuxLabelWeighted-CIFAR100-v1"])
def test_auxlabel_policies_in_the_vector_form(env_id, data_env):
    envs = gym.make_vec(env_id, num_envs=20, vectorization_mode="vector_entry_point", **SMALL)
    obs, _ = envs.reset(seed=0)
    for name in REFERENCE_POLICIES["AuxLabel"]:
        if name == "human" and "Digits" in env_id:
            continue
        action = make_policy(name, envs, seed=0)(obs)
        assert envs.action_space.contains(action), name
        obs, *_ = envs.step(action)
    envs.close()


def test_weighted_ids_random_is_uniform_over_the_whole_action_space(data_env):
    envs = gym.make_vec(
        "AuxLabelWeighted-CIFAR100-v1",
        num_envs=150,
        vectorization_mode="vector_entry_point",
        train_batch_size=150,
        eval_batch_size=150,
    )
    obs, _ = envs.reset(seed=0)
    bins = envs.unwrapped.task.weight_bins
    random_bins = make_policy("random", envs, seed=0)(obs)[:, 1]
    # 150 uniform draws over 21 bins: every bin is hit with probability > 0.98.
    assert set(random_bins.tolist()) == set(range(bins))
    assert set(make_policy("random", envs, seed=0, weight_bin=3)(obs)[:, 1].tolist()) == {3}
    for name in ("constant", "image_hash", "human"):
        # Bin 10 of 21 is weight 2^(10 * 10 / 20 - 5) = 1.
        assert set(make_policy(name, envs, seed=0)(obs)[:, 1].tolist()) == {10}, name
    envs.close()


def test_auxlabel_policies_follow_their_seed_and_refuse_a_bin_outside_the_space():
    envs = gym.make_vec(
        "AuxLabelWeighted-Digits-v1",
        num_envs=60,
        vectorization_mode="vector_entry_point",
        train_batch_size=60,
    )
    obs, _ = envs.reset(seed=0)
    a, b, c = (make_policy("random", envs, seed=s)(obs) for s in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # 60 uniform draws over psi = 5 sub-classes: each is missed with probability 0.8^60.
    assert set(a[:, 0].tolist()) == set(range(5))
    # Bins 0 to 20 of 21 are in the space, -1 and 21 are not.
    assert set(make_policy("constant", envs, weight_bin=20)(obs)[:, 1].tolist()) == {20}
    for bad in (-1, 21):
        with pytest.raises(ConfigError, match=r"`weight_bin` must be in \[0, 21\)"):
            make_policy("constant", envs, weight_bin=bad)
    envs.close()


def test_human_policy_gives_the_fine_class_rank(data_env):
    env = gym.make("AuxLabel-CIFAR100-v1", **SMALL).unwrapped
    obs, _ = env.reset(seed=0)
    policy = make_policy("human", env)
    fine = env.learner.data.train.fine_labels
    for _ in range(5):
        index = int(env.sample_indices()[0])
        assert policy(obs) == int(fine[index]) % 5  # fine label = 5 * superclass + rank
        obs, *_ = env.step(policy(obs))
    weighted = gym.make("AuxLabelWeighted-CIFAR100-v1", **SMALL).unwrapped
    obs, _ = weighted.reset(seed=0)
    action = make_policy("constant", weighted)(obs)
    assert action.tolist() == [0, 10]  # bin 10 of 21: weight 2^(10 * 0.5 - 5) = 1


def test_image_hash_is_fixed_per_image():
    env = gym.make("AuxLabel-Digits-v1").unwrapped
    obs, _ = env.reset(seed=0)
    policy = make_policy("image_hash", env)
    first = policy(obs)
    assert policy({**obs, "primary_label": np.int64(3)}) == first  # the pixels decide


def test_loss_weighting_policies_by_hand():
    env = gym.make("LossWeighting-Digits10-v1", warmup_epochs=1, epochs=3).unwrapped
    obs, _ = env.reset(seed=0)
    base = env.base_losses.numpy().astype(np.float64)
    weights = {
        name: env.action_to_weights(make_policy(name, env, seed=0)(obs)).numpy()
        for name in ("equal", "igbv1", "inverse_base", "drop_one")
    }
    np.testing.assert_allclose(weights["equal"], np.ones(10), rtol=1e-5)
    ratio = obs / base  # IGB eq. 3: n softmax(L / L_base)
    np.testing.assert_allclose(
        weights["igbv1"], 10 * np.exp(ratio) / np.exp(ratio).sum(), rtol=1e-4
    )
    inverse = (1 / base) / (1 / base).sum() * 10  # proportional to 1 / L_base, summing to n
    np.testing.assert_allclose(weights["inverse_base"], inverse, rtol=1e-4)
    # tanh(-7) lies 1.7e-6 from -1, where float32 actions have steps of 6e-8: 1% here.
    assert weights["drop_one"][0] == pytest.approx(10 * np.exp(-7) / (np.exp(-7) + 9), rel=1e-2)
    with pytest.raises(ConfigError, match="Valid LossWeighting reference policys"):
        make_policy("igbv3", env)


def test_loss_weighting_policies_on_normalized_losses_and_their_options():
    env = gym.make(
        "LossWeighting-Digits10-v1", warmup_epochs=1, epochs=3, observation="normalized_losses"
    ).unwrapped
    obs, _ = env.reset(seed=0)
    base = env.base_losses.numpy().astype(np.float64)  # 0.40 to 0.54: not all equal

    def weights(name, **kwargs):
        return env.action_to_weights(make_policy(name, env, seed=0, **kwargs)(obs)).numpy()

    # The observation is already L / L_base: IGB eq. 3 gives n softmax(obs).
    np.testing.assert_allclose(weights("igbv1"), 10 * np.exp(obs) / np.exp(obs).sum(), rtol=1e-4)
    # fixed: proportional to L_base^-s, summing to n (s = 2: the inverse squared; s = 0: 1).
    inverse_squared = 10 * base**-2 / (base**-2).sum()
    np.testing.assert_allclose(weights("fixed", scale=2.0), inverse_squared, rtol=1e-4)
    np.testing.assert_allclose(weights("fixed", scale=0.0), np.ones(10), rtol=1e-5)
    # drop_one task 3: 10 e^-7 / (e^-7 + 9) there (1%: see above), 10 / (e^-7 + 9) elsewhere.
    dropped = weights("drop_one", task=3)
    assert dropped[3] == pytest.approx(10 * np.exp(-7) / (np.exp(-7) + 9), rel=1e-2)
    np.testing.assert_allclose(np.delete(dropped, 3), 10 / (np.exp(-7) + 9), rtol=1e-4)
    for task in (-1, 10):
        with pytest.raises(ConfigError, match=r"`task` must be in \[0, 10\)"):
            make_policy("drop_one", env, task=task)
    # RLW: n softmax(z) for z the seed's first ten standard normals.
    z = np.random.default_rng(0).standard_normal(10)
    np.testing.assert_allclose(weights("random"), 10 * np.exp(z) / np.exp(z).sum(), rtol=1e-4)
    vec = gym.make_vec(
        "LossWeighting-Digits10-v1",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        warmup_epochs=1,
        epochs=3,
    )
    with pytest.raises(ConfigError, match="acts in the single LossWeighting env"):
        make_policy("equal", vec)(np.ones((2, 10), dtype=np.float32))
    vec.close()


def test_group_plans_are_sent_in_their_order_then_the_stop():
    env = gym.make("TaskGrouping-Digits10-v1", budget=3).unwrapped
    singletons, all_in_one = make_policy("singletons", env), make_policy("all_in_one", env)
    singletons.reset()
    all_in_one.reset()
    for task in range(3):  # task 0 alone first, then 1, then 2
        assert singletons(None).tolist() == np.eye(10, dtype=int)[task].tolist()
    assert all_in_one(None).tolist() == [1] * 10 and all_in_one(None).tolist() == [0] * 10


def test_etap_policy_fits_on_the_reward_split_with_its_seed(monkeypatch):
    import mtl_envs.training.gain_prediction as gain_prediction

    calls = []

    def etap_selection(affinity, candidates, measure, budget, objective, seed, train_groups):
        calls.append((measure((0, 1)), budget, seed, train_groups))
        return [(0,)], [], {}

    monkeypatch.setattr(gain_prediction, "etap_selection", etap_selection)
    for split in ("val", "test"):
        env = gym.make("TaskGrouping-Digits10-v1", budget=3, gain_split=split).unwrapped
        make_policy("etap", env, seed=4, train_groups=6).reset()
        assert calls[-1] == (env.truth.gains((0, 1), split), 3, 4, 6), split


def test_grouping_policies_plan_their_groups():
    env = gym.make("TaskGrouping-Digits10-v1", budget=3).unwrapped
    obs, _ = env.reset(seed=0)
    policy = make_policy("optimal", env)
    assert policy.oracle and not make_policy("etap", env).oracle
    groups, done = [], False
    while not done:
        obs, _, done, _, info = env.step(policy(obs))
    groups = info["selected"]
    assert sorted({t for g in groups for t in g}) == list(range(10)) and len(groups) <= 3
    # The optimum on the test gains scores at least as well on them as every other plan.
    best = env.evaluate("test")["total_gain"]
    for name in ("all_in_one", "singletons", "etap"):
        other = make_policy(name, env, seed=0)
        obs, _ = env.reset()
        other.reset()
        done = False
        while not done:
            obs, _, done, _, _ = env.step(other(obs))
        assert env.evaluate("test")["total_gain"] <= best + 1e-9, name
    assert torch.is_tensor(torch.as_tensor(obs["affinity"]))


def _group_return(env, policy) -> float:
    obs, _ = env.reset()
    policy.reset()
    total, done = 0.0, False
    while not done:
        obs, reward, done, _, _ = env.step(policy(obs))
        total += reward
    return total


@pytest.mark.parametrize("gains", ["table", "etap"])
def test_reward_optimal_earns_the_most_of_any_plan(gains):
    # The MDP's optimal policy: no plan of at most `budget` groups earns more of the env's
    # own rewards, also when those rewards are ETAP's predictions rather than the table.
    from mtl_envs.training.grouping import best_selection, gain_matrix, selection_candidates

    env = gym.make("TaskGrouping-Digits10-v1", budget=3, gains=gains).unwrapped
    env.reset(seed=0)
    earned = _group_return(env, make_policy("reward_optimal", env))
    candidates = selection_candidates(env.num_tasks, env.objective)
    matrix = gain_matrix(candidates, {g: env.group_gains(g) for g in candidates}, 10)
    _, best = best_selection(candidates, matrix, env.budget, env.objective)
    assert earned == pytest.approx(best, abs=1e-9)
    for name in ("all_in_one", "singletons", "etap", "optimal"):
        assert _group_return(env, make_policy(name, env, seed=0)) <= earned + 1e-9, name


def test_grouping_policies_that_read_test_gains_are_oracles():
    on_val = gym.make("TaskGrouping-Digits10-v1").unwrapped
    on_test = gym.make("TaskGrouping-Digits10-v1", gain_split="test").unwrapped
    for name, always in (("optimal", True), ("reward_optimal", False), ("etap", False)):
        assert make_policy(name, on_val).oracle == always, name
        assert make_policy(name, on_test).oracle, name
    for name in ("random", "all_in_one", "singletons"):  # they read no gains
        assert not make_policy(name, on_test).oracle, name


def test_normalized_score_on_hand_worked_numbers(monkeypatch):
    import mtl_envs.scores as scores

    table = toy_reference_scores(
        monkeypatch,
        random={"mean": 0.40, "std": 0.01, "n": 5},
        best={"mean": 0.60, "std": 0.01, "n": 5},
    )
    assert scores.normalized_score("Toy-v0", 0.40) == pytest.approx(0.0)
    assert scores.normalized_score("Toy-v0", 0.60) == pytest.approx(1.0)
    assert scores.normalized_score("Toy-v0", 0.55) == pytest.approx(0.75)  # 0.15 / 0.20
    # The ends' standard errors on that scale: 0.01 / sqrt(5) / 0.20 = 0.02236 each; 0.03
    # over 4 seeds: 0.015 / 0.20 = 0.075.
    assert scores.scale_errors("Toy-v0") == pytest.approx((0.0223607, 0.0223607))
    table["Toy-v0"]["policies"]["human"].update(std=0.03, n=4)
    assert scores.scale_errors("Toy-v0") == pytest.approx((0.0223607, 0.075))
    with pytest.raises(ConfigError, match="Toy-v0"):
        scores.reference_scores("Toy-v1")
    # Lower-is-better metrics map the same way: random 0, best 1.
    table["Toy-v0"]["policies"]["human"]["mean"] = 0.20
    assert scores.normalized_score("Toy-v0", 0.30) == pytest.approx(0.5)
    # Off the midpoint the direction shows: 0.25 is three quarters of the way to the best.
    assert scores.normalized_score("Toy-v0", 0.25) == pytest.approx(0.75)


@pytest.mark.parametrize("env_id", ENV_IDS, ids=ENV_IDS)
def test_env_family_of_an_instance_is_its_ids_family(env_id, data_env):
    """Single and vector forms, wrapped or not, name the family their id is registered in."""
    from mtl_envs.families import family_of

    expected = family_of(env_id).name
    env = gym.make(env_id, **cheap_kwargs(env_id))
    assert env_family(env) == env_family(env.unwrapped) == expected
    env.close()
    if family_of(env_id).vector_entry_point is not None:
        kwargs = cheap_kwargs(env_id)
        if expected == "AuxLabel":  # one slot per sample of a batch
            kwargs["train_batch_size"] = 2
        vec = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
        assert env_family(vec) == expected
        vec.close()
    with pytest.raises(ConfigError, match="CartPoleEnv is not an mtl-envs environment"):
        env_family(gym.make("CartPole-v1"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", FAMILIES["AuxLabel"].probe_policies)
def test_auxlabel_reference_policies_make_the_same_runs_on_v0_and_v1(name, data_env):
    """v1 changed only the image the agent observes, which no reference policy reads (the
    image hash is of the stored image): each makes the same run on both versions, so the
    reference scores probed on v0 score v1 (scripts/reference_scores.py)."""
    from harness.probe import run_policy

    kwargs = {"backbone": "small_cnn", "train_batch_size": 30, "eval_batch_size": 32}
    old, new = (
        run_policy(f"AuxLabelWeighted-CIFAR100-{v}", kwargs, name, seed=1, episodes=2)
        for v in ("v0", "v1")
    )
    assert (old.episode_return, old.test, old.val) == (new.episode_return, new.test, new.val)


def test_the_packaged_reference_scores_are_the_kept_probes(tmp_path):
    """mtl_envs/reference_scores.json is what scripts/reference_scores.py makes of the probe
    files kept in docs/results/probe, the v1 AuxLabel entries carried from v0 included."""
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("refs", root / "scripts/reference_scores.py")
    refs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refs)
    packaged = json.loads((root / "mtl_envs/reference_scores.json").read_text())
    assert packaged == refs.build_table(refs.KEPT_PROBES)
    v1 = packaged["AuxLabel-CIFAR100Small-v1"]
    assert v1["measured_on"] == "AuxLabel-CIFAR100Small-v0"

    # A probe measured on v1 itself is kept, not replaced by v0's; a probe without random
    # (no 0 of the scale) is refused by name.
    kept = json.loads((root / "docs/results/probe/AuxLabel-CIFAR100Small-v0.json").read_text())
    own = {**kept, "env_id": "AuxLabel-CIFAR100Small-v1"}
    own["policies"] = {**kept["policies"], "human": {**kept["policies"]["human"], "mean": 0.5}}
    paths = [tmp_path / "v0.json", tmp_path / "v1.json"]
    for path, probe in zip(paths, (kept, own)):
        path.write_text(json.dumps(probe))
    table = refs.build_table(paths)
    assert "measured_on" not in table["AuxLabel-CIFAR100Small-v1"]
    assert table["AuxLabel-CIFAR100Small-v1"]["policies"]["human"]["mean"] == 0.5
    del own["headroom"]
    paths[1].write_text(json.dumps(own))
    with pytest.raises(ConfigError, match=r"v1.json has no random policy"):
        refs.build_table(paths)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_human_baseline_targets_stay_in_the_trained_labels_block(data_env, noise):
    """The human baseline's auxiliary class is the fine class's rank inside the block of the
    primary label the network trains on: the fine class itself without label noise; with
    it, a flipped sample's target moves with its label, as the env's human policy's does
    (an absolute fine label would leave the block and tell the clean superclass)."""
    import torch

    from baselines.human import human_labeller
    from mtl_envs.training import AuxLearner, AuxLearnerConfig

    cfg = AuxLearnerConfig(dataset="cifar100", data_root=str(data_env), label_noise=noise)
    learner = AuxLearner(cfg, seed=0)
    train = learner.data.train
    indices = torch.arange(len(train.labels))
    targets, weights = human_labeller(learner, 0)(indices, None)
    classes = targets.argmax(1)
    assert weights is None and bool((targets.sum(1) == 1).all())
    assert torch.equal(classes // 5, train.labels) and torch.equal(
        classes % 5, train.fine_labels % 5
    )
    flipped = train.labels != train.fine_labels // 5
    assert bool(flipped.any()) == (noise > 0)
    if noise == 0:
        assert torch.equal(classes, train.fine_labels)
