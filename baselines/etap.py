"""ETAP + branch-and-bound: predict every group's gains from affinities and a few trained
groups, then select groups under the budget on the predictions (ETAP sections 3.2-3.3)."""

from __future__ import annotations

from typing import Any

import numpy as np

from baselines.grouping import run_selection, true_matrix
from mtl_envs.experiment import RunConfig
from mtl_envs.training.gain_prediction import ETAPPredictor, prediction_quality
from mtl_envs.training.grouping import branch_and_bound, gain_matrix


def select(
    table: dict, budget: int, seed: int, train_groups: int = 10, affinity: str = "etap"
) -> tuple[list, dict[str, Any]]:
    candidates, truth = true_matrix(table)
    rng = np.random.default_rng(seed)
    chosen = [candidates[i] for i in rng.choice(len(candidates), train_groups, replace=False)]
    gains = {g: {t: truth[candidates.index(g), t] for t in g} for g in chosen}
    model = ETAPPredictor(np.asarray(table["affinity"][affinity]), seed=seed).fit(chosen, gains)
    predicted = {g: model.predict(g) for g in candidates}
    matrix = gain_matrix(candidates, predicted, truth.shape[1])
    picks, _ = branch_and_bound(matrix, budget)
    held_out = [i for i, g in enumerate(candidates) if g not in gains]
    pred = [matrix[i, t] for i in held_out for t in candidates[i]]
    true = [truth[i, t] for i in held_out for t in candidates[i]]
    extra = {
        "train_groups": [list(g) for g in chosen],
        "prediction": prediction_quality(pred, true),
    }
    return [candidates[c] for c in picks], extra


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    k = int(config.method_kwargs.get("etap_train_groups", 10))
    return run_selection(
        config, seed, "etap", lambda table, budget, s: select(table, budget, s, train_groups=k)
    )
