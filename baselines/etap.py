"""ETAP + exact selection: predict every group's gains from affinities and a few trained
groups (their gains on the learning split), then select groups under the budget on the
predictions (ETAP section 3.2; selection, section 3.2.3)."""

from __future__ import annotations

from typing import Any

from baselines.grouping import GroupingProblem, run_selection
from baselines.grouping import check_config as check_config  # the registry's pre-run check
from harness.config import RunConfig
from harness.registry import method_options
from mtl_envs.training.gain_prediction import etap_selection, prediction_quality
from mtl_envs.utils import check_int


def select(
    problem: GroupingProblem,
    budget: int,
    seed: int,
    train_groups: int = 10,
    affinity: str = "etap",
) -> tuple[list, dict[str, Any]]:
    measured = problem.gains()
    groups, chosen, predicted = etap_selection(
        problem.affinity(affinity),
        problem.candidates,
        measured.__getitem__,
        budget,
        problem.objective,
        seed,
        train_groups,
        argument="method_kwargs.etap_train_groups",
    )
    # How well the predictions match the test gains of the groups ETAP did not train.
    truth = problem.gains("test")
    held_out = [g for g in problem.candidates if len(g) > 1 and g not in set(chosen)]
    extra = {
        "train_groups": [list(g) for g in chosen],
        "prediction": prediction_quality(
            [predicted[g][t] for g in held_out for t in g],
            [truth[g][t] for g in held_out for t in g],
        ),
    }
    return groups, extra


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    k = method_options(config, "etap").get("etap_train_groups", 10)
    check_int("method_kwargs.etap_train_groups", k, minimum=2)  # cross-validation folds
    return run_selection(
        config, seed, "etap", lambda problem, budget, s: select(problem, budget, s, train_groups=k)
    )
