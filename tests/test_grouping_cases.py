"""Task grouping on hand-made gain tables with hand-worked numbers: the env's observation,
evaluation and ETAP gain source, the gain predictor and its grid (ETAP section 3.2 and
appendix B.2), affinity averaging (eq. 6), the grouping baselines and the exact search."""

import json
import math

import gymnasium as gym
import numpy as np
import pytest

import mtl_envs  # noqa: F401
from mtl_envs.errors import ConfigError
from mtl_envs.training.group_trainer import all_groups, group_name

# Three tasks, hand-made gains. Test and validation gains disagree on purpose, and each
# group's two per-seed losses differ (1 - g -+ 0.1), so a split or a seed mix-up shows.
TEST_GAINS = {
    "0-1": {"0": 0.3, "1": 0.2},
    "0-2": {"0": -0.1, "2": 0.1},
    "1-2": {"1": -0.2, "2": 0.4},
    "0-1-2": {"0": 0.1, "1": 0.1, "2": -0.3},
}
VAL_GAINS = {
    "0-1": {"0": 0.1, "1": 0.0},
    "0-2": {"0": 0.2, "2": 0.3},
    "1-2": {"1": 0.0, "2": -0.1},
    "0-1-2": {"0": 0.05, "1": 0.05, "2": 0.05},
}
# Not symmetric: [i][j] is the score from task i to task j.
AFFINITY = [[0.0, 1.0, 2.0], [3.0, 0.0, 4.0], [5.0, 6.0, 0.0]]


def three_task_table() -> dict:
    singles = {str(t): {str(t): 0.0} for t in range(3)}
    gains, val = {**singles, **TEST_GAINS}, {**singles, **VAL_GAINS}

    def losses(table):
        return {
            k: {t: [1.0 - v - 0.1, 1.0 - v + 0.1] for t, v in g.items()} for k, g in table.items()
        }

    return {
        "dataset": "toy",
        "task_names": ["a", "b", "c"],
        "protocol": {},
        "seeds": [0, 1],
        "gains": gains,
        "losses": losses(gains),
        "val_gains": val,
        "val_losses": losses(val),
        "affinity": {"etap": AFFINITY, "tag": np.eye(3).tolist()},
    }


def four_task_table() -> dict:
    """Four tasks (11 groups of two or more); validation gains are not a shift of the test
    gains, so a predictor fitted on the wrong split predicts other numbers."""
    rng = np.random.default_rng(0)
    gains, val = {}, {}
    for g in all_groups(4):
        key = group_name(g)
        gains[key] = {str(t): 0.0 if len(g) == 1 else float(rng.uniform(-0.3, 0.3)) for t in g}
        val[key] = {str(t): 0.0 if len(g) == 1 else float(rng.uniform(-0.3, 0.3)) for t in g}
    losses = {k: {t: [1.0 - v] * 2 for t, v in g.items()} for k, g in gains.items()}
    val_losses = {k: {t: [1.0 - v] * 2 for t, v in g.items()} for k, g in val.items()}
    affinity = rng.normal(0.0, 1.0, (4, 4)).tolist()
    return {
        "dataset": "toy4",
        "task_names": ["a", "b", "c", "d"],
        "protocol": {},
        "seeds": [0, 1],
        "gains": gains,
        "losses": losses,
        "val_gains": val,
        "val_losses": val_losses,
        "affinity": {"etap": affinity, "tag": affinity},
    }


def write(tmp_path, table, name="toy") -> str:
    path = tmp_path / f"{name}_gains.json"
    path.write_text(json.dumps(table))
    return str(path)


def make(path, **kwargs):
    return gym.make("TaskGrouping-Digits10-v1", table=path, **kwargs).unwrapped


# ----------------------------------------------------------------------------- the env


def test_observation_holds_raw_best_gains_the_budget_left_and_the_tables_affinity(tmp_path):
    env = make(
        write(tmp_path, three_task_table()), budget=3, objective="fallback", gain_split="test"
    )
    env.reset(seed=0)
    obs, reward, *_ = env.step(np.array([0, 1, 1]))
    # {1, 2} on test: task 1 -0.2 (hurt, floored only in the reward), task 2 0.4.
    assert reward == pytest.approx(0.4)
    np.testing.assert_allclose(obs["best_gain"], [0.0, -0.2, 0.4], rtol=1e-6)
    assert obs["covered"].tolist() == [0, 1, 1]  # a hurt task is covered all the same
    assert obs["budget_left"] == 2
    np.testing.assert_array_equal(obs["affinity"], np.array(AFFINITY, dtype=np.float32))
    obs, *_ = env.step(np.array([1, 1, 0]))
    np.testing.assert_allclose(obs["best_gain"], [0.3, 0.2, 0.4], rtol=1e-6)
    assert obs["budget_left"] == 1


def test_stopping_under_etaps_objective_trains_the_uncovered_tasks_and_says_so(tmp_path):
    env = make(write(tmp_path, three_task_table()), budget=3)  # objective etap, val gains
    env.reset(seed=0)
    _, r1, term, _, info = env.step(np.array([1, 1, 0]))
    assert r1 == pytest.approx(0.1 + 0.0) and not term and not info["stopped"]
    _, r2, term, _, info = env.step(np.zeros(3, dtype=np.int8))
    assert info["group"] == [2] and info["stopped"] and term and r2 == 0.0


def test_evaluate_averages_each_tasks_loss_over_the_tables_seeds(tmp_path):
    from mtl_envs.training.grouping import evaluate_selection

    table = three_task_table()
    env = make(write(tmp_path, table), budget=2, objective="fallback", gain_split="test")
    env.reset(seed=0)
    env.step(np.array([1, 1, 0]))
    # Seed losses (0.6, 0.8) for task 0 in {0,1}, (0.7, 0.9) for task 1, task 2 alone
    # (0.9, 1.1): the means 0.7 + 0.8 + 1.0; the first seeds alone would give 2.2.
    quality = env.evaluate("test")
    assert quality["total_loss"] == pytest.approx(2.5)
    assert quality["total_gain"] == pytest.approx(0.5) and quality["networks"] == 2
    assert evaluate_selection(table, [(0, 1)], "fallback")["total_loss"] == pytest.approx(2.5)


def test_a_group_selected_twice_is_one_network(tmp_path):
    from mtl_envs.training.grouping import evaluate_selection

    table = three_task_table()
    # {0,1} twice and task 2 alone: two networks, the gain of {0,1} once per task.
    quality = evaluate_selection(table, [(0, 1), (1, 0)], "etap")
    assert quality["networks"] == 2 and quality["total_gain"] == pytest.approx(0.5)
    env = make(write(tmp_path, table), budget=3, objective="fallback", gain_split="test")
    env.reset(seed=0)
    env.step(np.array([1, 1, 0]))
    _, reward, *_ = env.step(np.array([1, 1, 0]))
    assert reward == 0.0 and env.evaluate("test")["networks"] == 2


def expected_etap_draw(num_tasks: int, k: int, seed: int) -> list:
    multi = [g for g in all_groups(num_tasks) if len(g) > 1]
    return [multi[i] for i in np.random.default_rng(seed).choice(len(multi), k, replace=False)]


def test_etap_gain_source_draws_its_groups_and_folds_from_the_first_seed(tmp_path):
    from mtl_envs.training.gain_prediction import ETAPPredictor

    table = four_task_table()
    env = make(write(tmp_path, table), gains="etap", etap_train_groups=5, seeds=[3, 0])
    chosen = expected_etap_draw(4, 5, 3)
    assert env.source.train_groups == chosen
    # The cross-validation folds are the seed's too (seed 0's would differ).
    keys = [(g, t) for g in chosen for t in g]
    folds = [(a.tolist(), b.tolist()) for a, b in env.source.model.mapping.cv]
    mine = [(a.tolist(), b.tolist()) for a, b in ETAPPredictor(np.eye(4), seed=3).folds(keys)]
    other = [(a.tolist(), b.tolist()) for a, b in ETAPPredictor(np.eye(4), seed=0).folds(keys)]
    assert folds == mine and mine != other


def test_etap_gain_source_is_fitted_on_the_reward_splits_gains(tmp_path):
    from mtl_envs.training.gain_prediction import ETAPPredictor

    table = four_task_table()
    env = make(write(tmp_path, table), gains="etap", etap_train_groups=6, seeds=[1])
    chosen = env.source.train_groups
    affinity = np.array(table["affinity"]["etap"])

    def fitted(split):
        values = table["val_gains" if split == "val" else "gains"]
        gains = {g: {t: values[group_name(g)][str(t)] for t in g} for g in chosen}
        return ETAPPredictor(affinity, seed=1).fit(chosen, gains)

    on_val, on_test = fitted("val"), fitted("test")
    held_out = [g for g in all_groups(4) if len(g) > 1 and g not in chosen]
    assert any(on_val.predict(g) != pytest.approx(on_test.predict(g)) for g in held_out)
    for g in held_out:
        assert env.group_gains(g) == pytest.approx(on_val.predict(g), abs=1e-12)


def test_etap_gain_source_may_train_on_every_group_of_two_or_more(tmp_path):
    env = make(write(tmp_path, four_task_table()), gains="etap", etap_train_groups=11)
    assert sorted(env.source.train_groups) == sorted(g for g in all_groups(4) if len(g) > 1)
    with pytest.raises(ConfigError, match=r"`etap_train_groups` must be in \[2, 11\]"):
        make(write(tmp_path, four_task_table()), gains="etap", etap_train_groups=12)


# --------------------------------------------------------------- gain table, trainer


def test_a_gain_table_without_affinities_is_refused(tmp_path):
    from mtl_envs.training.group_trainer import load_gain_table

    table = three_task_table()
    del table["affinity"]
    with pytest.raises(ConfigError, match="missing key 'affinity'"):
        load_gain_table(write(tmp_path, table))


def test_task_losses_read_each_split_from_the_cache(tmp_path):
    """One cached run holds both splits: test losses under "losses", validation ones under
    "val_losses"; the gains of each split divide by the STL loss of that split."""
    from mtl_envs.io import atomic_write_json
    from mtl_envs.training.group_trainer import GroupProtocol, GroupTrainer

    trainer = GroupTrainer(GroupProtocol(epochs=1), cache_dir=tmp_path, device="cpu")
    runs = {
        (0, 1): ({"0": 0.5, "1": 0.6}, {"0": 0.7, "1": 0.8}),
        (0,): ({"0": 1.0}, {"0": 1.4}),
        (1,): ({"1": 0.5}, {"1": 0.4}),
    }
    for group, (test, val) in runs.items():
        path = trainer._path(group, 0)
        atomic_write_json(
            path, {"group": list(group), "seed": 0, "losses": test, "val_losses": val}
        )
    assert trainer.task_losses((1, 0), seed=0) == {0: 0.5, 1: 0.6}
    assert trainer.task_losses((0, 1), seed=0, split="val") == {0: 0.7, 1: 0.8}
    # Test: (1.0 - 0.5) / 1.0, (0.5 - 0.6) / 0.5; validation: (1.4 - 0.7) / 1.4, (0.4 - 0.8) / 0.4.
    assert trainer.gains((0, 1), [0]) == pytest.approx({0: 0.5, 1: -0.2})
    assert trainer.gains((0, 1), [0], split="val") == pytest.approx({0: 0.5, 1: -1.0})


# ------------------------------------------------------------------ the gain predictor


def test_etap_searches_the_papers_grid():
    """Section 4 / B.2: degree 2..6, knots 2 .. sqrt(|G_train|) (groups, not rows), ridge
    alpha 1e-3 .. 1."""
    from mtl_envs.training.gain_prediction import ALPHAS, ETAPPredictor

    rng = np.random.default_rng(0)
    groups = [g for g in all_groups(5) if len(g) == 2]  # 10 groups, 20 rows
    gains = {g: {t: float(rng.normal()) for t in g} for g in groups}
    model = ETAPPredictor(rng.normal(size=(5, 5)), residual=False).fit(groups, gains)
    grid = model.mapping.param_grid
    assert grid["splinetransformer__degree"] == [2, 3, 4, 5, 6]
    assert grid["splinetransformer__n_knots"] == [2, 3]  # int(sqrt(10)), not int(sqrt(20))
    assert grid["ridge__alpha"] == list(ALPHAS) and ALPHAS[0] == 1e-3 and ALPHAS[-1] == 1.0


def test_etap_mapping_extrapolates_linearly_beyond_the_training_affinities():
    """Gains equal to the group affinity z; the training groups see z in [0, 1], the pair
    {3, 4} has z = 10: a linear continuation predicts far above every training gain (a
    constant one would stay near 1)."""
    from mtl_envs.training.affinity import group_affinity
    from mtl_envs.training.gain_prediction import ETAPPredictor

    rng = np.random.default_rng(0)
    affinity = rng.uniform(0.0, 1.0, (5, 5))
    affinity[3, 4] = affinity[4, 3] = 10.0
    train = [g for g in all_groups(5) if len(g) > 1 and not {3, 4} <= set(g)]
    gains = {g: group_affinity(affinity, g) for g in train}
    model = ETAPPredictor(affinity).fit(train, gains)
    predicted = model.predict((3, 4))
    assert min(predicted.values()) > 3.0


def test_prediction_quality_by_hand():
    from mtl_envs.training.gain_prediction import prediction_quality

    # Truth (1, 2, 4), mean 7/3: SS_tot = 42/9, SS_res = 1, R^2 = 1 - 9/42 = 11/14; the
    # arguments the other way round would give 1 - 1/2.
    quality = prediction_quality([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert quality["r2"] == pytest.approx(11 / 14)
    assert quality["pearson"] == pytest.approx(np.corrcoef([1, 2, 3], [1, 2, 4])[0, 1])
    assert all(math.isnan(v) for v in prediction_quality([1.0], [1.0]).values())


def test_etap_selection_draws_multi_task_groups_and_folds_from_its_seed(monkeypatch):
    import mtl_envs.training.gain_prediction as gain_prediction
    from mtl_envs.training.grouping import selection_candidates

    seeds = []

    class Spy(gain_prediction.ETAPPredictor):
        def __init__(self, affinity, residual=True, seed=0):
            seeds.append(seed)
            super().__init__(affinity, residual, seed)

    monkeypatch.setattr(gain_prediction, "ETAPPredictor", Spy)
    rng = np.random.default_rng(1)
    affinity = rng.normal(size=(4, 4))
    candidates = selection_candidates(4, "etap")  # single tasks first: never trained
    measured = {g: {t: float(rng.normal(0, 0.1)) for t in g} for g in candidates}
    _, chosen, _ = gain_prediction.etap_selection(
        affinity, candidates, measured.__getitem__, 2, "etap", seed=7, train_groups=5
    )
    assert chosen == expected_etap_draw(4, 5, 7) and seeds == [7]


# ----------------------------------------------------------------- affinity collection


def test_affinities_average_each_pair_over_the_steps_that_labelled_both(monkeypatch):
    """Scarce Digits10 (30 labels per task) leaves some tasks out of some batches: eq. 6's
    mean for a pair runs over the steps whose batch labelled both tasks. Step k's scores are
    replaced by k * ones; the expected mean is worked out from the batches' masks. (~2 s)"""
    import torch

    import mtl_envs.training.affinity as affinity
    from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig

    steps = []
    monkeypatch.setattr(
        affinity,
        "step_affinity",
        lambda grads, losses, lr, momentum=0.0, buffer=None: torch.full(
            (10, 10), float(len(steps))
        ),
    )
    cfg = MultiTaskLearnerConfig(
        dataset="digits10",
        dataset_kwargs={"labels_per_task": 30},
        backbone="mlp",
        backbone_kwargs={"hidden": [8]},
        head_hidden=4,
        optimizer="sgd",
        device="cpu",
    )
    learner = MultiTaskLearner(cfg, seed=0)
    prepare = learner.prepare_batch

    def recording(indices):
        batch = prepare(indices)
        steps.append(batch.mask.any(0).numpy().copy())  # step k = len(steps)
        return batch

    monkeypatch.setattr(learner, "prepare_batch", recording)
    scores = affinity.collect_affinities(learner, epochs=1)
    present = np.array(steps)
    both = present[:, :, None] & present[:, None, :]
    k = np.arange(1, len(steps) + 1)[:, None, None]
    expected = (k * both).sum(0) / both.sum(0)
    assert not present.all()  # some batch misses a task: the case under test
    np.testing.assert_allclose(scores.etap_no_momentum, expected, rtol=1e-6)


# ------------------------------------------------------------------------- baselines


def problem_of(table, objective="fallback", split="val", tmp_path=None, name="toy"):
    from baselines.grouping import GroupingProblem
    from mtl_envs.training.group_trainer import load_gain_table

    return GroupingProblem(load_gain_table(write(tmp_path, table, name)), objective, split)


def test_random_groups_follow_the_seed(tmp_path):
    from baselines.random_groups import select

    problem = problem_of(four_task_table(), tmp_path=tmp_path)
    draws = {}
    for seed in (0, 1, 2):
        picks = np.random.default_rng(seed).choice(len(problem.candidates), 2, replace=False)
        draws[seed] = [problem.candidates[i] for i in picks]
        assert select(problem, 2, seed)[0] == draws[seed]
    assert len({tuple(d) for d in draws.values()}) > 1


def test_tag_selection_is_kept_apart_per_objective(tmp_path):
    from baselines.tag import select

    table = three_task_table()
    table["affinity"]["tag"] = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    path = write(tmp_path, table, "tag_objectives")
    from baselines.grouping import GroupingProblem
    from mtl_envs.training.group_trainer import load_gain_table

    fallback = GroupingProblem(load_gain_table(path), "fallback", "val")
    etap = GroupingProblem(load_gain_table(path), "etap", "val")
    assert select(fallback, 1, 0)[0] == [(0, 1)]
    # ETAP's objective must cover task 2: one group can only be all three.
    assert select(etap, 1, 0)[0] == [(0, 1, 2)]


def run_grouping(method, path, tmp_path, **method_kwargs):
    from harness.config import RunConfig
    from harness.registry import run_method

    config = RunConfig(
        method=method,
        env_id="TaskGrouping-Digits10-v1",
        env_kwargs={"table": path, "objective": "fallback"},
        output_dir=str(tmp_path / "out"),
        tensorboard=False,
        progress=False,
        method_kwargs={"budgets": [1], **method_kwargs},
    )
    return run_method(config, method, 0)


def test_results_hold_the_test_optimum_and_the_validation_gain(tmp_path):
    """On validation {0, 2} is the best single group (0.5), on test {0, 1} (0.5 against
    {1, 2}'s 0.4): the optimum a result compares with is the test one, and val/total_gain is
    the selection's gain on the validation split."""
    table = three_task_table()
    result = run_grouping("random", write(tmp_path, table), tmp_path)
    assert result["optimal_groups"] == [[0, 1]]
    assert result["final"]["test/optimal_gain"] == pytest.approx(0.5)
    (group,) = result["groups"]
    key = group_name(group)
    val_gain = sum(max(v, 0.0) for v in table["val_gains"][key].values())
    test_gain = sum(max(v, 0.0) for v in table["gains"][key].values())
    assert result["final"]["val/total_gain"] == pytest.approx(val_gain)
    assert result["final"]["test/total_gain"] == pytest.approx(test_gain)
    assert result["final"]["test/gap"] == pytest.approx(0.5 - test_gain)


def test_etap_method_trains_ten_groups_by_default(tmp_path):
    result = run_grouping("etap", write(tmp_path, four_task_table()), tmp_path)
    assert len(result["train_groups"]) == 10  # registered default, ETAP's setting


def test_trained_gains_average_losses_over_the_envs_seeds():
    from mtl_envs.envs.task_grouping import TrainedGains

    class Trainer:
        num_tasks = 2

        def task_losses(self, group, seed, split="test"):
            per_seed = {0: {0: 0.4, 1: 1.0}, 1: {0: 0.8, 1: 2.0}}[seed]
            return {t: per_seed[t] + (0.5 if split == "val" else 0.0) for t in group}

    losses = TrainedGains(Trainer(), (0, 1)).losses((0, 1), "test")
    assert losses == pytest.approx({0: 0.6, 1: 1.5})
    assert TrainedGains(Trainer(), (0, 1)).losses((1,), "val") == pytest.approx({1: 2.0})


def test_trained_gains_are_each_seeds_eq1_averaged_over_the_envs_seeds():
    """ETAP eq. 1 per seed, then the mean: seed 0 has single-task loss 1.0 and group loss 0.5
    (gain 0.5), seed 1 has 2.0 and 1.5 (gain 0.25): 0.375, where seed 0 alone gives 0.5."""
    from types import SimpleNamespace

    from mtl_envs.envs.task_grouping import TrainedGains
    from mtl_envs.training.group_trainer import GroupTrainer

    losses = {(0,): (1.0, 2.0), (1,): (1.0, 1.0), (0, 1): (0.5, 1.5)}
    trainer = GroupTrainer.__new__(GroupTrainer)
    trainer.data = SimpleNamespace(num_tasks=2)
    trainer.task_losses = lambda group, seed, split="test": {
        t: losses[tuple(group)][seed] for t in group
    }
    assert TrainedGains(trainer, (0, 1)).gains((0, 1), "test")[0] == pytest.approx(0.375)


def test_a_group_chosen_again_costs_a_step_of_budget_and_earns_nothing(tmp_path):
    env = make(write(tmp_path, three_task_table()), budget=2, objective="fallback")
    env.reset(seed=0)
    obs, reward, terminated, *_ = env.step(np.array([1, 1, 0]))
    assert reward > 0 and not terminated and obs["budget_left"] == 1
    obs, reward, terminated, *_ = env.step(np.array([1, 1, 0]))
    assert reward == 0.0 and terminated and obs["budget_left"] == 0


# ------------------------------------------------------------------------- selection


def test_cover_search_is_exact_for_gains_far_below_highs_tolerances():
    """Gains of order 1e-7 sit below HiGHS's absolute gap and feasibility tolerances: only
    the rescaling keeps the optimum exact (brute force over every covering pair)."""
    import itertools

    from mtl_envs.training.grouping import (
        cover_search,
        gain_matrix,
        selection_candidates,
        selection_value,
    )

    n = 4
    candidates = selection_candidates(n, "etap")
    for seed in range(4):
        rng = np.random.default_rng(seed)
        gains = {g: {t: float(rng.normal(0.0, 1e-7)) for t in g} for g in candidates}
        m = gain_matrix(candidates, gains, n)
        for budget in (1, 2):
            exact = max(
                selection_value(m, combo, "etap", candidates)
                for size in range(1, budget + 1)
                for combo in itertools.combinations(range(len(candidates)), size)
                if set().union(*(candidates[c] for c in combo)) == set(range(n))
            )
            _, value = cover_search(candidates, m, budget)
            assert value == pytest.approx(exact, rel=1e-9, abs=0), (seed, budget)


def test_an_empty_selection_scores_zero():
    from mtl_envs.training.grouping import selection_score, selection_value

    m = np.array([[0.2, -0.1, 0.0]])
    assert selection_score(m, []) == 0.0
    assert selection_value(m, [], "fallback") == 0.0


def test_budgets_must_be_positive(tmp_path):
    from baselines.grouping import budgets
    from harness.config import RunConfig

    for bad in ([0], [2, 0], [], [1.5], 3):
        config = RunConfig(
            method="random",
            env_id="TaskGrouping-Digits10-v1",
            output_dir=str(tmp_path),
            method_kwargs={"budgets": bad},
        )
        with pytest.raises(ConfigError, match="`method_kwargs.budgets` must be a non-empty list"):
            budgets(config)
    config = RunConfig(method="random", env_id="TaskGrouping-Digits10-v1", output_dir=str(tmp_path))
    assert budgets(config) == [3]  # the id's registered budget


# -------------------------------------------------------------------------- tabular


def test_tabular_config_feeds_metadata_only_in_the_metadata_setting():
    from baselines.tabular import tabular_learner_config
    from mtl_envs.families import require_family

    base = require_family("LossWeighting-Cubic-v1", "LossWeighting").learner_config(
        "LossWeighting-Cubic-v1", {}
    )
    point = {"lr": 1e-3}
    assert not tabular_learner_config(
        base, "hard_sharing", "no_metadata", point, {}, 0
    ).use_metadata
    assert tabular_learner_config(base, "hard_sharing", "metadata", point, {}, 0).use_metadata


def test_tabular_protocol_grid_and_stopping_defaults(tmp_path, monkeypatch):
    """Section 4: l_h in {0, 1, 2} for the hypernetwork, one point per rate otherwise; the
    documented stopping defaults (validate every 5 epochs, patience 20, at most 2000)."""
    import baselines.tabular as tabular
    from harness.config import RunConfig

    seen = {}

    class Stop(Exception):
        pass

    def grid_search(make_learner, grid, stopping, on_fit=None, record=None):
        seen["grid"], seen["stopping"] = grid, stopping
        raise Stop

    monkeypatch.setattr(tabular, "grid_search", grid_search)
    config = RunConfig(
        method="hypernet",
        env_id="LossWeighting-Cubic-v1",
        env_kwargs={"device": "cpu"},
        output_dir=str(tmp_path),
        tensorboard=False,
        progress=False,
        method_kwargs={"learning_rates": [1e-3, 1e-4], "metadata": False},
    )
    with pytest.raises(Stop):
        tabular.run_tabular(config, 0, "hypernet")
    assert seen["grid"] == [
        {"lr": lr, "extractor_layers": d} for lr in (1e-3, 1e-4) for d in (0, 1, 2)
    ]
    stopping = seen["stopping"]
    assert (stopping.val_every, stopping.patience, stopping.max_epochs) == (5, 20, 2000)


def table_favouring(pair, tasks=3) -> dict:
    """Every multi-task gain -0.1 except ``pair``'s 0.5; TAG's affinity links ``pair`` only."""
    gains = {
        group_name(g): {str(t): 0.5 if g == pair else (0.0 if len(g) == 1 else -0.1) for t in g}
        for g in all_groups(tasks)
    }
    tag = np.zeros((tasks, tasks))
    tag[pair[0], pair[1]] = tag[pair[1], pair[0]] = 1.0
    losses = {k: {t: [1.0 - v] for t, v in g.items()} for k, g in gains.items()}
    return {
        "task_names": [f"t{i}" for i in range(tasks)],
        "protocol": {},
        "gains": gains,
        "losses": losses,
        "affinity": {"etap": tag.tolist(), "tag": tag.tolist()},
    }


def test_a_table_rewritten_in_place_is_read_again(tmp_path):
    from baselines import tag
    from baselines.grouping import GroupingProblem, _optimum
    from mtl_envs.training.group_trainer import load_gain_table

    path = tmp_path / "rewritten_gains.json"
    for pair in ((0, 1), (1, 2)):
        path.write_text(json.dumps(table_favouring(pair)))
        problem = GroupingProblem(load_gain_table(path), "fallback", "test")
        assert _optimum(problem, 1) == [pair]
        assert tag.select(problem, 1, 0)[0] == [pair]


def test_etap_predictor_refuses_groups_that_are_not_task_sets():
    from mtl_envs.training.gain_prediction import ETAPPredictor

    groups = [(0, 1), (0, 2), (1, 2), (0, 1, 2)]
    model = ETAPPredictor(np.arange(9.0).reshape(3, 3))
    model.fit(groups, {g: {t: 0.1 * len(g) + 0.01 * t for t in g} for g in groups})
    for bad in [(-1, 0), (0, 0, 1), (0, 3)]:
        with pytest.raises(ConfigError):
            model.predict(bad)


def test_group_trainer_gains_need_a_seed():
    from mtl_envs.training.group_trainer import GroupTrainer

    trainer = GroupTrainer.__new__(GroupTrainer)  # no data: task_losses is stubbed
    trainer.task_losses = lambda group, seed, split="test": {t: 1.0 for t in group}
    with pytest.raises(ConfigError):
        trainer.gains((0, 1), seeds=[])


@pytest.mark.parametrize("kwargs", [{"table": 5}, {"dataset": 5}])
def test_task_grouping_refuses_a_table_or_dataset_that_is_no_name(kwargs):
    with pytest.raises(ConfigError):
        gym.make("TaskGrouping-Digits10-v1", **kwargs)


def test_grouping_baselines_take_the_envs_own_defaults(monkeypatch):
    """A config that names no objective or gain split gets the env class's defaults."""
    import inspect

    from baselines.grouping import grouping_problem
    from harness.config import RunConfig
    from mtl_envs.envs.task_grouping import TaskGroupingEnv

    params = inspect.signature(TaskGroupingEnv).parameters
    assert (params["objective"].default, params["gain_split"].default) == ("etap", "val")
    config = RunConfig(method="random", env_id="TaskGrouping-Digits10-v1")
    settings = {k: v for k, v in config.env_settings().items()}
    for name in ("objective", "gain_split"):
        settings.pop(name, None)
    monkeypatch.setattr(RunConfig, "env_settings", lambda self: dict(settings))
    problem = grouping_problem(config)
    assert (problem.objective, problem.split) == ("etap", "val")
    defaults = list(TaskGroupingEnv.__init__.__defaults__)
    names = [p for p in params if params[p].default is not inspect.Parameter.empty]
    defaults[names.index("objective")] = "fallback"
    monkeypatch.setattr(TaskGroupingEnv.__init__, "__defaults__", tuple(defaults))
    assert grouping_problem(config).objective == "fallback"


def test_selection_candidates_per_objective():
    """Under the fallback objective a task trained alone is the free default, never a
    candidate; under ETAP's it is one, since every task must be covered by a chosen group."""
    from mtl_envs.training.grouping import candidate_groups, selection_candidates

    multi = [(0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert selection_candidates(3, "fallback") == multi == candidate_groups(3)
    assert selection_candidates(3, "etap") == all_groups(3)


def test_etap_chooses_its_hyperparameters_by_cross_validated_mse():
    """Appendix B.2: the spline mapping's degree, knots and ridge penalty, and the residual
    model's penalty over the whole alpha grid, chosen by cross-validated mean squared error."""
    from mtl_envs.training.gain_prediction import ALPHAS, ETAPPredictor

    rng = np.random.default_rng(0)
    groups = [g for g in all_groups(4) if len(g) > 1]
    gains = {g: {t: float(rng.normal()) for t in g} for g in groups}
    model = ETAPPredictor(rng.normal(size=(4, 4))).fit(groups, gains)
    assert model.correction.param_grid == {"alpha": list(ALPHAS)}
    assert model.mapping.scoring == model.correction.scoring == "neg_mean_squared_error"


@pytest.mark.parametrize("objective", ["fallback", "etap"])
def test_etap_selection_spends_the_whole_budget(monkeypatch, objective):
    """With a predictor that is exact, ETAP's selection is the budget's optimum: {0, 1} and
    {2, 3} help (0.3 per task), every other group hurts (-0.1 per task). Budget 2: both
    pairs, 1.2. Budget 1: one pair, 0.6, under the fallback objective; under ETAP's, which
    must cover every task with the one group, all four together, -0.4."""
    import mtl_envs.training.gain_prediction as gp
    from mtl_envs.training.grouping import selection_candidates

    good = {(0, 1), (2, 3)}
    measured = {
        g: {t: 0.0 if len(g) == 1 else (0.3 if g in good else -0.1) for t in g}
        for g in selection_candidates(4, "etap")
    }

    class Exact:
        def __init__(self, affinity, residual=True, seed=0):
            pass

        def fit(self, groups, gains):
            return self

        def predict(self, group):
            return dict(measured[tuple(sorted(group))])

    monkeypatch.setattr(gp, "ETAPPredictor", Exact)
    candidates = selection_candidates(4, objective)

    def select(budget):
        groups, _, _ = gp.etap_selection(
            np.zeros((4, 4)),
            candidates,
            measured.__getitem__,
            budget,
            objective,
            seed=0,
            train_groups=2,
        )
        return sorted(groups)

    assert select(2) == [(0, 1), (2, 3)]
    assert select(1) == ([(0, 1)] if objective == "fallback" else [(0, 1, 2, 3)])
