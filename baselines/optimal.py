"""The exact optimum: branch-and-bound on the true gains of every group (exhaustive in effect:
the bound only prunes selections that cannot win)."""

from __future__ import annotations

from typing import Any

from baselines.grouping import run_selection, true_matrix
from mtl_envs.experiment import RunConfig
from mtl_envs.training.grouping import branch_and_bound


def select(table: dict, budget: int, seed: int) -> tuple[list, dict[str, Any]]:
    candidates, truth = true_matrix(table)
    picks, _ = branch_and_bound(truth, budget)
    return [candidates[c] for c in picks], {}


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_selection(config, seed, "optimal", select)
