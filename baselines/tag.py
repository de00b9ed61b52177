"""TAG + exact selection (Fifty et al., 2021): lookahead affinities, averaged into group
scores (ETAP eq. 7), used directly as the selection objective (single tasks score 0)."""

from __future__ import annotations

from typing import Any

from baselines.grouping import GroupingProblem, memoised_search, run_selection
from baselines.grouping import check_config as check_config  # the registry's pre-run check
from harness.config import RunConfig
from mtl_envs.training.affinity import group_affinity
from mtl_envs.training.grouping import gain_matrix


def select(problem: GroupingProblem, budget: int, seed: int) -> tuple[list, dict[str, Any]]:
    """TAG's selection is deterministic given the table, so seeds share one search."""

    def search() -> list:
        affinity = problem.affinity("tag")
        scores = {g: group_affinity(affinity, g) for g in problem.candidates}
        matrix = gain_matrix(problem.candidates, scores, problem.num_tasks)
        return problem.solve(matrix, budget)

    return memoised_search(problem, "tag", budget, search), {}


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_selection(config, seed, "tag", select)
