"""The exact optimum on the true (test) gains of every group: an oracle, the upper reference
of ETAP's Table 4 (exhaustive in effect: the solver only prunes selections that cannot win)."""

from __future__ import annotations

from typing import Any

from baselines.grouping import GroupingProblem, run_selection
from baselines.grouping import check_config as check_config  # the registry's pre-run check
from harness.config import RunConfig


def select(problem: GroupingProblem, budget: int, seed: int) -> tuple[list, dict[str, Any]]:
    return problem.solve(problem.matrix("test"), budget), {}


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_selection(config, seed, "optimal", select, oracle=True)
