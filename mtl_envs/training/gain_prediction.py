"""ETAP's gain predictor: MTL gains of any group from affinity scores (ETAP section 3.2).

Stage 1 (eq. 8-9): each task's group affinity score ``z_{G->t}`` (eq. 7) is expanded in a
B-spline basis and mapped to a gain by ridge regression; spline degree (2-6), number of knots
(2 .. sqrt(|G_train|)) and the ridge penalty (1e-3 .. 1) are chosen by cross-validation
(scikit-learn ``SplineTransformer``, ``Ridge``, ``GridSearchCV`` over ``GroupKFold`` folds that
keep each training group's rows together).
Stage 2 (eq. 10-12): a ridge model on the multi-hot group encoding (plus the one-hot target
task, so the correction can differ per member) predicts the residual ``y - y_aff``; its
penalty is chosen from the same range over the same group-kept folds (appendix B.2: "cross-
validation over training groups only"); the final prediction is their sum.

Where this departs from the equations as printed:

* Eq. 11 maps the group code ``u_G`` to the residual vector of the whole group, one output
  per task of the task set; a task outside G has no gain and so no residual to fit. Here
  each (group, member) pair is one row with a scalar residual, and the target's one-hot
  lets the correction differ per member; the members' coefficients are shared by all
  targets. Measured on Digits10 (10 training groups, 5 draws): Pearson r 0.607 this way,
  0.594 with one ridge output per task (fitted on members only).
* scikit-learn's ``Ridge`` fits an unpenalised intercept, which eq. 9 and 11 do not write,
  and its ``alpha`` is twice eq. 11's lambda (no 1/2 on the squared error); the grid is
  searched by cross-validation either way.
* Outside the training range of affinities the splines extrapolate linearly (the paper
  does not say).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import SplineTransformer

from mtl_envs.errors import ConfigError
from mtl_envs.training.affinity import group_affinity
from mtl_envs.training.group_trainer import group_name
from mtl_envs.training.grouping import Group

ALPHAS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


class ETAPPredictor:
    """Predict per-task MTL gains of any group from affinities and a few trained groups.

    Args:
        affinity: (n, n) pairwise scores, ``[i, j]`` = affinity from task i to task j.
        residual: add the stage-2 residual correction.
        seed: seed of the cross-validation folds.
    """

    def __init__(self, affinity: np.ndarray, residual: bool = True, seed: int = 0):
        self.affinity = np.asarray(affinity, dtype=float)
        self.n = self.affinity.shape[0]
        self.residual = residual
        self.seed = seed
        self.mapping = None
        self.correction = None

    def _rows(
        self, groups: Sequence[Group]
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[Group, int]]]:
        z, codes, keys = [], [], []
        for group in groups:
            if len(group) < 2:
                continue
            scores = group_affinity(self.affinity, group)
            for t in group:
                code = np.zeros(2 * self.n)
                code[list(group)] = 1.0
                code[self.n + t] = 1.0
                z.append(scores[t])
                codes.append(code)
                keys.append((group, t))
        return np.array(z).reshape(-1, 1), np.array(codes), keys

    def fit(
        self, groups: Sequence[Group], gains: Mapping[Group, Mapping[int, float]]
    ) -> ETAPPredictor:
        """Fit on training groups (of two or more tasks) with their measured gains."""
        z, codes, keys = self._rows(groups)
        if len(keys) < 4:
            raise ConfigError(
                f"ETAP needs training groups with at least 4 (group, task) rows; got {len(keys)}."
            )
        y = np.array([gains[g][t] for g, t in keys])
        folds = self.folds(keys)
        max_knots = max(2, int(math.sqrt(len({g for g, _ in keys}))))
        grid = {
            "splinetransformer__degree": list(range(2, 7)),
            "splinetransformer__n_knots": list(range(2, max_knots + 1)),
            "ridge__alpha": list(ALPHAS),
        }
        pipeline = make_pipeline(SplineTransformer(extrapolation="linear"), Ridge())
        self.mapping = GridSearchCV(pipeline, grid, cv=folds, scoring="neg_mean_squared_error")
        self.mapping.fit(z, y)
        if self.residual:
            residuals = y - self.mapping.predict(z)
            self.correction = GridSearchCV(
                Ridge(), {"alpha": list(ALPHAS)}, cv=folds, scoring="neg_mean_squared_error"
            ).fit(codes, residuals)
        return self

    def folds(self, keys: Sequence[tuple[Group, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Cross-validation folds over (group, task) rows that keep each group's rows
        together: they share the group's affinity scores and its training run, so a group
        split across folds would leak into its own validation."""
        group_ids = np.unique([group_name(g) for g, _ in keys], return_inverse=True)[1]
        num_groups = int(group_ids.max()) + 1 if len(keys) else 0
        if num_groups < 2:
            raise ConfigError(
                f"ETAP's cross-validation needs 2 or more training groups; got {num_groups}."
            )
        splitter = GroupKFold(n_splits=min(5, num_groups), shuffle=True, random_state=self.seed)
        return list(splitter.split(np.zeros(len(keys)), groups=group_ids))

    def predict(self, group: Sequence[int]) -> dict[int, float]:
        """Predicted gain of every task of ``group`` (0 for a single task: it is its own STL)."""
        group = tuple(sorted(group))
        tasks = range(self.n)
        if not group or len(set(group)) != len(group) or not all(t in tasks for t in group):
            raise ConfigError(f"`group` must be distinct task ids in [0, {self.n}); got {group!r}.")
        if len(group) == 1:
            return {group[0]: 0.0}
        if self.mapping is None:
            raise RuntimeError("Call fit() before predict().")
        z, codes, keys = self._rows([group])
        pred = self.mapping.predict(z)
        if self.correction is not None:
            pred = pred + self.correction.predict(codes)
        return {t: float(p) for (_, t), p in zip(keys, pred)}


def prediction_quality(predicted: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    """Pearson correlation and R^2 of predicted against true gains (ETAP Tables 3 and 5);
    NaN for both with fewer than two gains (every group was trained: none is held out)."""
    from scipy.stats import pearsonr
    from sklearn.metrics import r2_score

    if len(predicted) < 2:
        return {"pearson": math.nan, "r2": math.nan}
    return {
        "pearson": float(pearsonr(predicted, truth)[0]),
        "r2": float(r2_score(truth, predicted)),
    }


def etap_selection(
    affinity: np.ndarray,
    candidates: Sequence[Group],
    measure: Callable[[Group], Mapping[int, float]],
    budget: int,
    objective: str,
    seed: int,
    train_groups: int = 10,
    argument: str = "train_groups",
) -> tuple[list[Group], list[Group], dict[Group, dict[int, float]]]:
    """ETAP end to end (section 3.2, selection 3.2.3): draw ``train_groups`` groups of two or
    more tasks, ``measure`` their gains (train them), fit :class:`ETAPPredictor`, predict
    every candidate and select the best groups under ``budget`` on the predictions.

    ``argument`` names ``train_groups`` in the error a count out of range raises (the
    caller's own option name). Returns the selected groups, the training groups and the
    predictions.
    """
    from mtl_envs.training.grouping import best_selection, gain_matrix

    multi = [g for g in candidates if len(g) > 1]
    if not 2 <= train_groups <= len(multi):
        # Cross-validation keeps each group's rows together: it needs two groups.
        raise ConfigError(
            f"`{argument}` must be in [2, {len(multi)}] (the groups of two or more tasks); "
            f"got {train_groups!r}."
        )
    rng = np.random.default_rng(seed)
    chosen = [multi[i] for i in rng.choice(len(multi), train_groups, replace=False)]
    model = ETAPPredictor(affinity, seed=seed).fit(chosen, {g: measure(g) for g in chosen})
    predicted = {g: model.predict(g) for g in candidates}
    matrix = gain_matrix(candidates, predicted, affinity.shape[0])
    picks, _ = best_selection(candidates, matrix, budget, objective)
    return [candidates[c] for c in picks], chosen, predicted
