"""TAG + branch-and-bound (Fifty et al., 2021): lookahead affinities, averaged into group
scores (ETAP eq. 7), used directly as the selection objective."""

from __future__ import annotations

from typing import Any

import numpy as np

from baselines.grouping import run_selection, true_matrix
from mtl_envs.experiment import RunConfig
from mtl_envs.training.affinity import group_affinity
from mtl_envs.training.grouping import branch_and_bound, gain_matrix

_SELECTIONS: dict[tuple[str, int], list] = {}


def select(table: dict, budget: int, seed: int) -> tuple[list, dict[str, Any]]:
    """TAG's selection is deterministic given the table, so seeds share one search."""
    key = (table.get("protocol_key", ""), budget)
    if key in _SELECTIONS:
        return _SELECTIONS[key], {}
    candidates, truth = true_matrix(table)
    affinity = np.asarray(table["affinity"]["tag"])
    scores = {g: group_affinity(affinity, g) for g in candidates}
    picks, _ = branch_and_bound(gain_matrix(candidates, scores, truth.shape[1]), budget)
    _SELECTIONS[key] = [candidates[c] for c in picks]
    return _SELECTIONS[key], {}


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_selection(config, seed, "tag", select)
