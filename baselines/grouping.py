"""Shared runner of the task-grouping methods: select groups per budget, score them on the
ground-truth table (ETAP Table 4).

A method is a ``select(table, budget, seed) -> (groups, extra)`` function. Every result
holds the selection's true total gain and total test loss, the optimum for the same budget
(branch-and-bound on the true gains, exact) and the gap to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np

import mtl_envs  # noqa: F401
from mtl_envs.experiment import RunConfig, finished_result, write_result
from mtl_envs.training.group_trainer import group_name, load_gain_table
from mtl_envs.training.grouping import (
    branch_and_bound,
    candidate_groups,
    evaluate_selection,
    gain_matrix,
)

GROUPING_ENTRY_POINT = "mtl_envs.envs.task_grouping:TaskGroupingEnv"
Group = tuple[int, ...]
Selector = Callable[[dict, int, int], tuple[list[Group], dict[str, Any]]]


def is_task_grouping(env_id: str) -> bool:
    return gym.spec(env_id).entry_point == GROUPING_ENTRY_POINT


def env_settings(config: RunConfig) -> dict[str, Any]:
    if not is_task_grouping(config.env_id):
        raise ValueError(f"`env_id` {config.env_id!r} is not a TaskGrouping environment.")
    return {**gym.spec(config.env_id).kwargs, **config.env_kwargs}


def budgets(config: RunConfig) -> list[int]:
    """``method_kwargs.budgets`` (e.g. [2, 3, 4]) or the env's own budget."""
    values = config.method_kwargs.get("budgets", [env_settings(config).get("budget", 3)])
    if not values or not all(isinstance(b, int) and b >= 1 for b in values):
        raise ValueError(f"`method_kwargs.budgets` must be positive ints; got {values!r}.")
    return list(values)


def true_matrix(table: dict) -> tuple[list[Group], np.ndarray]:
    n = len(table["task_names"])
    candidates = candidate_groups(n)
    gains = {g: {t: table["gains"][group_name(g)][str(t)] for t in g} for g in candidates}
    return candidates, gain_matrix(candidates, gains, n)


@lru_cache(maxsize=32)
def _optimum(table_key: str, budget: int) -> tuple[tuple[Group, ...], float]:
    table = load_gain_table(table_key)
    candidates, matrix = true_matrix(table)
    chosen, score = branch_and_bound(matrix, budget)
    return tuple(candidates[c] for c in chosen), score


def run_selection(config: RunConfig, seed: int, method: str, select: Selector) -> dict[str, Any]:
    """Run ``select`` for every budget; write one result per budget; return the last.

    With ``config.resume`` the budgets whose result is written already are not redone.
    """
    settings = env_settings(config)
    table_key = settings.get("table") or settings["dataset"]
    table = load_gain_table(table_key)
    result: dict[str, Any] = {}
    for budget in budgets(config):
        finished = finished_result(config, method, seed, f"B={budget}")
        if finished is not None:
            result = finished
            continue
        start = time.perf_counter()
        groups, extra = select(table, budget, seed)
        seconds = time.perf_counter() - start
        optimum, best = _optimum(table_key, budget)
        quality = evaluate_selection(table, groups)
        optimal_quality = evaluate_selection(table, optimum)
        final = {
            "test/total_gain": quality["total_gain"],
            "test/total_loss": quality["total_loss"],
            "test/optimal_gain": best,
            "test/optimal_loss": optimal_quality["total_loss"],
            "test/gap": best - quality["total_gain"],
        }
        result = write_result(
            config,
            method,
            seed,
            final,
            setting=f"B={budget}",
            wall_time_s=seconds,
            extra={
                "groups": [list(g) for g in groups],
                "optimal_groups": [list(g) for g in optimum],
                **extra,
            },
        )
    return result
