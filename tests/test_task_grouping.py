"""The TaskGrouping env and the grouping methods on a hand-made gain table."""

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import same_values
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mtl_envs  # noqa: F401
from harness.config import RunConfig
from harness.registry import ORACLES
from mtl_envs.errors import ConfigError
from mtl_envs.training.group_trainer import all_groups, group_name


@pytest.fixture
def table_path(tmp_path):
    """Four tasks; tasks 0 and 1 help each other, task 3 is hurt by every partner."""
    rng = np.random.default_rng(0)
    gains, losses = {}, {}
    for g in all_groups(4):
        key = group_name(g)
        gains[key] = {}
        for t in g:
            if len(g) == 1:
                value = 0.0
            elif t == 3:
                value = -0.3
            elif set(g) >= {0, 1}:
                value = 0.4 - 0.05 * len(g)
            else:
                value = float(rng.uniform(-0.1, 0.1))
            gains[key][str(t)] = value
            losses[key] = losses.get(key, {})
            losses[key][str(t)] = [1.0 - value, 1.0 - value]
    affinity = np.eye(4).tolist()
    # Validation gains: every multi-task gain 0.01 lower than on test.
    val_gains = {k: {t: v - 0.01 * (len(g) > 1) for t, v in g.items()} for k, g in gains.items()}
    val_losses = {k: {t: [1.0 - val_gains[k][t]] * 2 for t in g} for k, g in gains.items()}
    table = {
        "dataset": "toy",
        "task_names": ["a", "b", "c", "d"],
        "protocol": {},
        "seeds": [0, 1],
        "gains": gains,
        "losses": losses,
        "val_gains": val_gains,
        "val_losses": val_losses,
        "affinity": {"etap": affinity, "tag": affinity},
    }
    path = tmp_path / "toy_gains.json"
    path.write_text(json.dumps(table))
    return path


def make(table_path, **kwargs):
    return gym.make("TaskGrouping-Digits10-v1", table=str(table_path), **kwargs).unwrapped


def test_reward_is_the_increase_of_total_gain(table_path):
    env = make(table_path, budget=3, objective="fallback", gain_split="test")
    obs, _ = env.reset(seed=0)
    assert obs["budget_left"] == 3 and not obs["covered"].any()
    # {0, 1}: both gain 0.4 - 0.1 = 0.3 -> reward 0.6.
    _, r1, term, _, info = env.step(np.array([1, 1, 0, 0]))
    assert r1 == pytest.approx(0.6) and not term and info["total_gain"] == pytest.approx(0.6)
    # {0, 1, 3}: 0 and 1 get 0.25 < 0.3 (kept), 3 gets -0.3 -> floor 0 (trained alone): reward 0.
    _, r2, *_ = env.step(np.array([1, 1, 0, 1]))
    assert r2 == pytest.approx(0.0)
    obs, _, term, _, info = env.step(np.array([0, 0, 0, 0]))  # stop early
    assert term and info["stopped"] and obs["covered"].tolist() == [1, 1, 0, 1]


def test_etap_objective_covers_every_task_and_rewards_from_validation(table_path):
    table = json.loads(table_path.read_text())
    env = make(table_path, budget=2)  # v1 defaults: objective "etap", gain_split "val"
    env.reset(seed=0)
    # {0, 1}: validation gains 0.3 - 0.01 each.
    _, r1, term, _, _ = env.step(np.array([1, 1, 0, 0]))
    assert r1 == pytest.approx(0.58) and not term
    # The last group takes in the uncovered task 3: {2} becomes {2, 3}.
    obs, r2, term, _, info = env.step(np.array([0, 0, 1, 0]))
    val = table["val_gains"]["2-3"]
    assert info["group"] == [2, 3] and term and obs["covered"].tolist() == [1, 1, 1, 1]
    assert r2 == pytest.approx(val["2"] + val["3"])  # task 3's -0.31 counts: no free fallback
    assert info["total_gain"] == pytest.approx(r1 + r2)
    # evaluate() scores the same selection on the test gains.
    test = table["gains"]
    quality = env.evaluate("test")
    assert quality["total_gain"] == pytest.approx(0.6 + test["2-3"]["2"] + test["2-3"]["3"])
    assert quality["networks"] == 2
    # Stopping with tasks uncovered trains them together as the final group.
    env.reset()
    _, reward, term, _, info = env.step(np.zeros(4, dtype=np.int8))
    assert term and info["group"] == [0, 1, 2, 3]
    assert reward == pytest.approx(sum(table["val_gains"]["0-1-2-3"].values()))


def test_budget_ends_the_episode(table_path):
    env = make(table_path, budget=1)
    env.reset(seed=0)
    _, _, terminated, truncated, _ = env.step(np.array([0, 1, 1, 0]))
    assert terminated and not truncated
    with pytest.raises(ConfigError, match=r"selection has ended .*call reset\(\)"):
        env.step(np.array([1, 0, 0, 0]))  # no silent steps past the budget
    env.reset()
    assert env.step(np.array([1, 0, 0, 0]))[2]  # a new selection: one group, then the end


def test_checkers_and_bad_input(table_path):
    env = make(table_path)
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(np.array([2, 0, 0, 0]))
    with pytest.raises(ValueError, match="`gains` must be one of"):
        make(table_path, gains="oracle")
    with pytest.raises(ConfigError, match=r"`table` .no_such_table.*build_gain_table"):
        gym.make("TaskGrouping-Digits10-v1", table="no_such_table")
    # ETAP's cross-validation keeps each training group's rows together: two groups or more.
    with pytest.raises(ConfigError, match=r"`etap_train_groups` must be an int >= 2; got 1"):
        make(table_path, gains="etap", etap_train_groups=1)
    # A table without TAG's affinities (a hand-made one) names what it holds.
    table = json.loads(table_path.read_text())
    del table["affinity"]["tag"]
    no_tag = table_path.with_name("no_tag_gains.json")
    no_tag.write_text(json.dumps(table))
    with pytest.raises(ConfigError, match=r"`affinity` 'tag': gain table .* holds .*\['etap'\]"):
        make(no_tag, affinity="tag")


def test_etap_train_groups_above_the_tables_groups_name_the_option(table_path, tmp_path):
    # Four tasks have 11 groups of two or more to train ETAP's predictor on.
    from harness.registry import run_method

    config = RunConfig(
        method="etap",
        env_id="TaskGrouping-Digits10-v1",
        env_kwargs={"table": str(table_path)},
        output_dir=str(tmp_path),
        method_kwargs={"budgets": [2], "etap_train_groups": 12},
    )
    with pytest.raises(
        ConfigError, match=r"`method_kwargs.etap_train_groups` must be in \[2, 11\]"
    ):
        run_method(config, "etap", 0)


def test_random_groups_take_every_candidate_when_the_budget_exceeds_them(table_path, tmp_path):
    # Four tasks give 15 candidate groups under ETAP's objective (the default; single tasks
    # too): a budget of 20 draws them all (numpy refused a sample larger than the population).
    from harness.registry import run_method

    config = RunConfig(
        method="random",
        env_id="TaskGrouping-Digits10-v1",
        env_kwargs={"table": str(table_path)},
        output_dir=str(tmp_path),
        method_kwargs={"budgets": [20]},
    )
    result = run_method(config, "random", 0)
    assert len({tuple(g) for g in result["groups"]}) == len(result["groups"]) == 15


def test_etap_gain_source_fits_on_table_groups(table_path):
    env = make(table_path, gains="etap", etap_train_groups=6, objective="fallback")
    assert len(env.source.train_groups) == 6
    env.reset(seed=0)
    _, reward, *_ = env.step(np.array([1, 1, 0, 0]))
    # The reward is the first group's total gain under the predictor, each task's gain
    # floored at 0 (a task that loses falls back to training alone), not the table's.
    predicted = env.source.model.predict((0, 1))
    assert set(predicted) == {0, 1}
    assert reward == pytest.approx(sum(max(g, 0.0) for g in predicted.values()))
    table = make(table_path, objective="fallback")
    table.reset(seed=0)
    _, from_table, *_ = table.step(np.array([1, 1, 0, 0]))
    assert reward != pytest.approx(from_table)


@pytest.mark.parametrize("method", ["etap", "tag", "random", "optimal"])
def test_grouping_methods_write_budgeted_results(table_path, tmp_path, method):
    from harness.registry import run_method

    config = RunConfig(
        method=method,
        env_id="TaskGrouping-Digits10-v1",
        env_kwargs={"table": str(table_path), "objective": "fallback"},
        output_dir=str(tmp_path / "out"),
        method_kwargs={"budgets": [1, 2], "etap_train_groups": 5},
    )
    result = run_method(config, method, 0)
    files = sorted((tmp_path / "out").rglob("result.json"))
    assert [f.parent.parent.name for f in files] == ["B=1", "B=2"]
    final = result["final"]
    # Budget 2: {0, 1} (0.3 each) plus {0, 1, 2}, which gives task 2 a gain of 0.25.
    assert final["test/optimal_gain"] == pytest.approx(0.85)
    assert (
        final["test/gap"] >= -1e-9 and final["test/total_loss"] >= final["test/optimal_loss"] - 1e-9
    )
    if method == "optimal":
        assert final["test/gap"] == pytest.approx(0.0)
    # Only the exact optimum reads the test gains; the others learn from validation gains.
    assert result["oracle"] == (("TaskGrouping", method) in ORACLES)
    assert result["gain_split"] == "val"
    # TensorBoard holds each budget's result at step B.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = EventAccumulator(str(tmp_path / "out" / config.env_id / method / "seed0" / "tb"))
    points = log.Reload().Scalars("test/total_gain")
    assert [p.step for p in points] == [1, 2]
    assert points[-1].value == pytest.approx(final["test/total_gain"])


@pytest.mark.parametrize("method", ["etap", "tag", "random", "optimal"])
def test_grouping_methods_under_etaps_objective(table_path, tmp_path, method):
    from harness.registry import run_method

    config = RunConfig(
        method=method,
        env_id="TaskGrouping-Digits10-v1",
        env_kwargs={"table": str(table_path)},
        output_dir=str(tmp_path),
        method_kwargs={"budgets": [2, 3], "etap_train_groups": 5},
    )
    result = run_method(config, method, 0)
    covered = sorted({t for g in result["groups"] for t in g})
    assert covered == [0, 1, 2, 3] and len(result["groups"]) <= 3
    final = result["final"]
    # Budget 3: {0, 1} (0.3 each), {0, 1, 2} for task 2 (0.25) and {3} alone (0): 0.85.
    assert final["test/optimal_gain"] == pytest.approx(0.85)
    assert sorted(map(sorted, result["optimal_groups"])) == [[0, 1], [0, 1, 2], [3]]
    assert final["test/networks"] <= 3 and final["test/gap"] >= -1e-9
    oracle = run_method(
        RunConfig(
            **{
                **config.to_dict(),
                "env_kwargs": {**config.env_kwargs, "gain_split": "test"},
                "output_dir": str(tmp_path / "oracle"),
            }
        ),
        method,
        0,
    )
    assert oracle["oracle"]  # reading test gains makes every method an oracle


def test_resume_skips_finished_budgets(table_path, tmp_path):
    from harness.registry import run_method

    def config(**extra):
        return RunConfig(
            method="random",
            env_id="TaskGrouping-Digits10-v1",
            env_kwargs={"table": str(table_path)},
            output_dir=str(tmp_path),
            method_kwargs={"budgets": [1, 2]},
            **extra,
        )

    run_method(config(), "random", 0)
    first, second = sorted(tmp_path.rglob("result.json"))
    kept = first.read_text()
    second.unlink()  # the run died during the second budget
    result = run_method(config(resume=True), "random", 0)
    assert first.read_text() == kept and second.is_file() and result["setting"] == "B=2"


def test_ppo_on_the_grouping_env(table_path, tmp_path):
    from agents.ppo_grouping import run

    config = RunConfig(
        method="ppo",
        env_id="TaskGrouping-Digits10-v1",
        env_kwargs={"table": str(table_path)},
        output_dir=str(tmp_path),
        method_kwargs={"budgets": [2]},
        agent={"total_timesteps": 256, "n_steps": 64, "batch_size": 32},
    )
    result = run(config, 0)
    assert result["setting"] == "B=2" and len(result["groups"]) <= 2
    # TensorBoard: the agent's learning curve per budget, the results against the budget.
    assert list((tmp_path / config.env_id / "ppo" / "B=2" / "seed0" / "tb_agent").glob("events*"))
    assert list((tmp_path / config.env_id / "ppo" / "seed0" / "tb").glob("events*"))
    assert result["final"]["test/total_gain"] <= result["final"]["test/optimal_gain"] + 1e-9
    # The result keeps no machine's data path, so the finished run resumes from another one.
    assert "data_root" not in result["env"]
    elsewhere = dataclasses.replace(
        config, env_kwargs={**config.env_kwargs, "data_root": str(tmp_path / "b")}, resume=True
    )
    assert run(elsewhere, 0)["final"] == result["final"]


def test_same_seed_same_trajectory(table_path):
    def rollout():
        env = make(table_path, budget=3)
        env.reset(seed=4)
        env.action_space.seed(4)
        out = []
        for _ in range(3):
            obs, reward, terminated, _, info = env.step(env.action_space.sample())
            out.append((obs["best_gain"].tolist(), reward, terminated, info["group"]))
            if terminated:
                break
        return out

    assert rollout() == rollout()


def test_agents_train_runs_the_grouping_config(table_path, tmp_path, capsys):
    import yaml

    from harness.train import main

    config = tmp_path / "grouping.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "method": ["ppo", "optimal"],
                "env_id": "TaskGrouping-Digits10-v1",
                "env_kwargs": {"table": str(table_path)},
                "output_dir": str(tmp_path / "out"),
                "method_kwargs": {"budgets": [2]},
                "agent": {"total_timesteps": 128, "n_steps": 64, "batch_size": 32},
            }
        )
    )
    assert main([str(config), "seeds=[1]"]) == 0
    assert "ppo seed 1: test/total_gain" in capsys.readouterr().out
    assert not list((tmp_path / "out").rglob("optimal"))  # harness.train runs the agents only


def test_the_problem_is_fixed_at_construction_and_reset_seeds_change_nothing():
    """ETAP's fitted groups come from the constructor's ``seeds``; a reset seed changes no
    episode (the MDP is deterministic)."""

    def episode(env, seed):
        obs, _ = env.reset(seed=seed)
        steps = [obs]
        for group in ([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]):
            obs, reward, terminated, truncated, info = env.step(np.array(group))
            steps.append((obs, reward, terminated, truncated, info))
        return steps

    first = gym.make("TaskGrouping-Digits10-v1", gains="etap", seeds=[0])
    other = gym.make("TaskGrouping-Digits10-v1", gains="etap", seeds=[1])
    assert first.unwrapped.source.train_groups != other.unwrapped.source.train_groups
    assert same_values(episode(first, 0), episode(first, 123))
    assert not same_values(episode(first, 0), episode(other, 0))


def test_tag_selects_by_eq7_scores_of_its_own_lookahead_affinities(table_path, tmp_path):
    """TAG's objective is ETAP eq. 7 on TAG's affinities: z_G->t = the mean over the other
    members j of z[j, t]. With z[2, 3] = z[3, 2] = 0.3 and z[0, 1] = z[1, 0] = 0.1 (the rest
    0), group scores are {2, 3} 0.6, {0, 2, 3} 0.3, {0, 1} 0.2: one group picks {2, 3},
    though the table's gains would pick {0, 1} and ETAP's (identity) affinities nothing."""

    table = json.loads(table_path.read_text())
    tag = np.zeros((4, 4))
    tag[2, 3] = tag[3, 2] = 0.3
    tag[0, 1] = tag[1, 0] = 0.1
    table["affinity"]["tag"] = tag.tolist()
    result = select_one_group("tag", table, tmp_path)
    assert result["groups"] == [[2, 3]]


def select_one_group(method: str, table: dict, tmp_path, **options) -> dict:
    """``method``'s result at budget 1 on ``table`` (written beside the run), objective
    "fallback"."""
    from harness.registry import run_method

    path = tmp_path / f"{method}_gains.json"
    path.write_text(json.dumps(table))
    config = RunConfig(
        method=method,
        env_id="TaskGrouping-Digits10-v1",
        env_kwargs={"table": str(path), "objective": "fallback"},
        output_dir=str(tmp_path / "out"),
        method_kwargs={"budgets": [1], **options},
    )
    return run_method(config, method, 0)


def test_etap_fits_on_the_learning_split_not_the_test_gains(table_path, tmp_path):
    """ETAP learns from the validation gains (gain_split 'val'; it is no oracle): on a table
    whose validation gains favour {2, 3} and whose test gains favour {0, 1}, one group with
    every multi-task group trained is the validation optimum."""

    table = json.loads(table_path.read_text())
    for key, gains in table["val_gains"].items():
        if len(gains) > 1:
            for t in gains:
                gains[t] = 0.5 if key == group_name((2, 3)) else -0.2
    table["val_losses"] = {
        k: {t: [1.0 - v] * 2 for t, v in g.items()} for k, g in table["val_gains"].items()
    }
    result = select_one_group("etap", table, tmp_path, etap_train_groups=11)
    assert result["groups"] == [[2, 3]] and result["oracle"] is False
