"""Random grouping: ``budget`` distinct groups drawn uniformly from the candidates (all of
them when the budget is larger; under
ETAP's objective the last one takes in every task left uncovered, as in the env)."""

from __future__ import annotations

from typing import Any

import numpy as np

from baselines.grouping import GroupingProblem, run_selection
from baselines.grouping import check_config as check_config  # the registry's pre-run check
from harness.config import RunConfig
from mtl_envs.training.grouping import complete_cover


def select(problem: GroupingProblem, budget: int, seed: int) -> tuple[list, dict[str, Any]]:
    candidates = problem.candidates
    rng = np.random.default_rng(seed)
    # A budget above the number of candidates draws them all, as the other methods may.
    draws = rng.choice(len(candidates), min(budget, len(candidates)), replace=False)
    groups = [candidates[i] for i in draws]
    if problem.objective == "etap":
        groups = complete_cover(groups, problem.num_tasks)
    return groups, {}


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_selection(config, seed, "random", select)
