"""Random grouping: ``budget`` distinct groups of two or more tasks, drawn uniformly."""

from __future__ import annotations

from typing import Any

import numpy as np

from baselines.grouping import run_selection, true_matrix
from mtl_envs.experiment import RunConfig


def select(table: dict, budget: int, seed: int) -> tuple[list, dict[str, Any]]:
    candidates, _ = true_matrix(table)
    rng = np.random.default_rng(seed)
    return [candidates[i] for i in rng.choice(len(candidates), budget, replace=False)], {}


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_selection(config, seed, "random", select)
