"""Choosing task groups under a budget (ETAP section 3.2.3; Standley et al., 2020).

Every task takes the best gain of the selected groups it belongs to. Two objectives:

* ``"etap"`` (ETAP section 3.2.3, the paper's Table 4): the selected groups must cover all n
  tasks and at most B groups are selected, single-task groups (gain 0) included; a task whose
  groups all hurt it keeps that (negative) gain. Solved exactly as a mixed-integer program
  (:func:`cover_search`, HiGHS's branch-and-cut through SciPy).
* ``"fallback"``: a selection S of groups of two or more tasks scores
  ``sum_t max(0, max_{G in S, t in G} y_{G->t})``: a task no selected group helps or covers is
  trained alone (gain 0) at no cost to the budget. The score is a facility-location function,
  hence monotone submodular, which gives :func:`branch_and_bound` an admissible bound.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from mtl_envs.errors import ConfigError
from mtl_envs.utils import check_choice, check_int

Group = tuple[int, ...]
"""A task group: sorted task indices (the one definition of the alias)."""
OBJECTIVES = ("etap", "fallback")


def gain_matrix(
    candidates: Sequence[Group], gains: Mapping[Group, Mapping[int, float]], num_tasks: int
) -> np.ndarray:
    """(len(candidates), n) matrix: gain of task t in candidate c, 0 where t is not in c."""
    m = np.zeros((len(candidates), num_tasks))
    for c, group in enumerate(candidates):
        for t in group:
            m[c, t] = gains[group][t]
    return m


def selection_score(matrix: np.ndarray, selected: Sequence[int]) -> float:
    """Total gain of the selected candidate rows (STL fallback: per-task floor at 0)."""
    if not len(selected):
        return 0.0
    return float(np.maximum(matrix[list(selected)].max(axis=0), 0.0).sum())


def exhaustive_search(matrix: np.ndarray, budget: int) -> tuple[list[int], float]:
    """The exact optimum by trying every selection of at most ``budget`` candidates."""
    best: tuple[list[int], float] = ([], 0.0)
    for size in range(1, budget + 1):
        for combo in itertools.combinations(range(len(matrix)), size):
            score = selection_score(matrix, combo)
            if score > best[1] + 1e-12:
                best = (list(combo), score)
    return best


def undominated(matrix: np.ndarray) -> np.ndarray:
    """Indices of candidates no other candidate beats or ties on every task.

    A selection using a dominated candidate scores no more than the same selection with the
    dominating one, so an exact search may drop dominated candidates (keeping one of any
    identical rows).
    """
    positive = np.maximum(matrix, 0.0)
    keep = []
    for c in np.argsort(-positive.sum(axis=1), kind="stable"):
        row = positive[c]
        if not row.any():
            continue
        if keep and (positive[keep] >= row).all(axis=1).any():
            continue
        keep.append(int(c))
    return np.array(sorted(keep), dtype=np.int64)


def branch_and_bound(matrix: np.ndarray, budget: int) -> tuple[list[int], float]:
    """The exact optimum by depth-first branch-and-bound.

    Dominated candidates are dropped first; the rest are tried in order of their
    stand-alone score. A branch is cut when its score plus the ``budget - |S|`` largest
    marginal gains of the remaining candidates (an upper bound, by submodularity), or the
    sum over tasks of the best value any remaining candidate offers, cannot beat the best
    selection found.
    """
    check_int("budget", budget)
    kept = undominated(matrix)
    positive = np.maximum(matrix[kept], 0.0)
    order = np.argsort(-positive.sum(axis=1), kind="stable")
    m = positive[order]
    # suffix_best[i, t] = best value of task t among candidates i, i+1, ...
    suffix_best = np.maximum.accumulate(m[::-1], axis=0)[::-1] if len(m) else m
    best_sel: list[int] = []
    best = 0.0

    def search(start: int, chosen: list[int], current: np.ndarray, value: float) -> None:
        nonlocal best, best_sel
        if value > best + 1e-12:
            best, best_sel = value, list(chosen)
        left = budget - len(chosen)
        if left == 0 or start >= len(m):
            return
        if np.maximum(current, suffix_best[start]).sum() <= best + 1e-12:
            return
        marginal = np.maximum(m[start:] - current, 0.0).sum(axis=1)
        if value + sum(heapq.nlargest(left, marginal.tolist())) <= best + 1e-12:
            return
        # Visit the most promising candidates first so good bounds come early.
        for offset in np.argsort(-marginal, kind="stable"):
            if marginal[offset] <= 0.0:
                break
            c = start + int(offset)
            rest = np.delete(marginal, offset)
            bound = value + marginal[offset] + sum(heapq.nlargest(left - 1, rest.tolist()))
            if bound <= best + 1e-12:
                continue
            chosen.append(c)
            new = np.maximum(current, m[c])
            search(c + 1, chosen, new, float(new.sum()))
            chosen.pop()

    search(0, [], np.zeros(matrix.shape[1]), 0.0)
    return sorted(int(kept[order[c]]) for c in best_sel), best


def cover_search(
    candidates: Sequence[Group], matrix: np.ndarray, budget: int
) -> tuple[list[int], float]:
    """The exact optimum of ETAP's objective: at most ``budget`` candidates that cover every
    task, each task scored by its best selected group (``matrix[c, t]``, t in c).

    Binary x_c selects candidate c; y_{c,t} in [0, 1] assigns task t to a selected c:
    ``max sum y_{c,t} matrix[c, t]`` s.t. ``sum_c x_c <= B``, ``sum_{c ni t} y_{c,t} = 1`` for
    every t, ``y_{c,t} <= x_c``. For fixed x the y-problem is a choice per task, so y is
    integral at the optimum. Returns the chosen candidate indices and the total gain.

    The gains are divided by their largest magnitude and HiGHS runs with no relative gap
    (its default stops within 0.01% of the bound, and its absolute gap of about 1e-6 would
    swallow raw TAG scores of order 1e-5 whole): the optimum is exact up to 1e-6 of the
    largest gain.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix

    check_int("budget", budget)
    n = matrix.shape[1]
    pairs = [(c, t) for c, group in enumerate(candidates) for t in group]
    pc = np.array([c for c, _ in pairs])
    pt = np.array([t for _, t in pairs])
    if set(pt.tolist()) != set(range(n)):
        raise ConfigError("The candidates do not cover every task: no selection is feasible.")
    num_c, num_p = len(candidates), len(pairs)
    values = matrix[pc, pt]
    scale = float(np.abs(values).max()) or 1.0
    cost = np.concatenate([np.zeros(num_c), -values / scale])
    p_cols = num_c + np.arange(num_p)
    budget_row = csr_matrix(
        (np.ones(num_c), (np.zeros(num_c), np.arange(num_c))), (1, num_c + num_p)
    )
    cover_rows = csr_matrix((np.ones(num_p), (pt, p_cols)), (n, num_c + num_p))
    link_rows = csr_matrix(
        (
            np.concatenate([np.ones(num_p), -np.ones(num_p)]),
            (np.tile(np.arange(num_p), 2), np.concatenate([p_cols, pc])),
        ),
        (num_p, num_c + num_p),
    )
    result = milp(
        cost,
        constraints=[
            LinearConstraint(budget_row, 0, budget),
            LinearConstraint(cover_rows, 1, 1),
            LinearConstraint(link_rows, -np.inf, 0),
        ],
        integrality=np.concatenate([np.ones(num_c), np.zeros(num_p)]),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0.0},
    )
    if not result.success:
        raise RuntimeError(f"The group-selection program failed: {result.message}")
    chosen = sorted(int(c) for c in np.flatnonzero(result.x[:num_c] > 0.5))
    return chosen, selection_value(matrix, chosen, "etap", candidates)


def selection_value(
    matrix: np.ndarray,
    selected: Sequence[int],
    objective: str,
    candidates: Sequence[Group] | None = None,
) -> float:
    """Total gain of the selected candidate rows under ``objective``; ``"etap"`` needs the
    ``candidates`` to know membership and raises when a task is not covered."""
    check_choice("objective", objective, OBJECTIVES)
    if objective == "fallback":
        return selection_score(matrix, selected)
    best = np.full(matrix.shape[1], -np.inf)
    for c in selected:
        for t in candidates[c]:
            best[t] = max(best[t], matrix[c, t])
    if not np.isfinite(best).all():
        missing = np.flatnonzero(~np.isfinite(best)).tolist()
        raise ConfigError(f"The selection does not cover tasks {missing} (ETAP's objective).")
    return float(best.sum())


def selection_candidates(num_tasks: int, objective: str) -> list[Group]:
    """What may be selected: every group under ``"etap"`` (single tasks cost budget too),
    groups of two or more tasks under ``"fallback"`` (single tasks are its free default)."""
    from mtl_envs.training.group_trainer import all_groups

    check_choice("objective", objective, OBJECTIVES)
    groups = all_groups(num_tasks)
    return groups if objective == "etap" else [g for g in groups if len(g) > 1]


def best_selection(
    candidates: Sequence[Group], matrix: np.ndarray, budget: int, objective: str
) -> tuple[list[int], float]:
    """The exact optimum of ``objective`` over ``candidates`` (rows of ``matrix``)."""
    check_choice("objective", objective, OBJECTIVES)
    if objective == "etap":
        return cover_search(candidates, matrix, budget)
    return branch_and_bound(matrix, budget)


def selection_quality(
    groups: Sequence[Group],
    num_tasks: int,
    objective: str,
    gains_of: Callable[[Group], Mapping[int, float]],
    losses_of: Callable[[Group], Mapping[int, float]] | None = None,
) -> dict[str, float]:
    """Quality of a selection of ``groups`` (ETAP Table 4) from per-group gains (and losses).

    ``total_gain``: the sum over tasks of each task's best gain among the selected groups
    holding it; ``total_loss`` (with ``losses_of``): the sum over tasks of the loss each task
    gets from that group. A task no selected group covers is trained alone (gain 0, the loss
    of its single-task group); under ``"fallback"`` that is free and a hurting group is not
    used either, under ``"etap"`` each such single-task network counts: ``networks`` is the
    number of networks the selection trains (the budget bounds it under ``"etap"``).

    A task in several selected groups is scored by the one ``gains_of`` rates best, as eq. 2
    writes it (``sum_t max_G y_{G->t}``): scored on test gains, that choice among the selected
    groups is made on the test gains too, for every method alike.
    """
    check_choice("objective", objective, OBJECTIVES)
    best_gain = np.full(num_tasks, -np.inf)
    best_loss = np.full(num_tasks, np.nan)
    unique = {tuple(sorted(g)) for g in groups}
    for group in unique:
        gains = gains_of(group)
        losses = losses_of(group) if losses_of is not None else {}
        for t in group:
            if gains[t] > best_gain[t]:
                best_gain[t], best_loss[t] = gains[t], losses.get(t, np.nan)
    alone = best_gain < 0.0 if objective == "fallback" else ~np.isfinite(best_gain)
    uncovered = ~np.isfinite(best_gain)
    for t in np.flatnonzero(alone):
        best_gain[t] = 0.0
        best_loss[t] = losses_of((int(t),))[int(t)] if losses_of is not None else np.nan
    quality = {
        "total_gain": float(best_gain.sum()),
        "networks": len(unique) + int(uncovered.sum()),
    }
    if losses_of is not None:
        quality["total_loss"] = float(best_loss.sum())
    return quality


def evaluate_selection(
    table: dict, groups: Sequence[Group], objective: str = "etap", split: str = "test"
) -> dict[str, float]:
    """:func:`selection_quality` on a gain table's ``split`` (losses averaged over seeds)."""
    from mtl_envs.training.group_trainer import group_name, table_gains, table_losses

    gains, losses = table_gains(table, split), table_losses(table, split)
    return selection_quality(
        groups,
        len(table["task_names"]),
        objective,
        lambda g: {int(t): v for t, v in gains[group_name(g)].items()},
        lambda g: {int(t): float(np.mean(v)) for t, v in losses[group_name(g)].items()},
    )


def complete_cover(groups: Sequence[Group], num_tasks: int) -> list[Group]:
    """ETAP's objective needs every task covered: the last group takes in the tasks no
    group holds (the TaskGrouping env's rule for its final step)."""
    groups = [tuple(sorted(g)) for g in groups]
    missing = set(range(num_tasks)).difference(*map(set, groups))
    if missing:
        last = groups.pop() if groups else ()
        groups.append(tuple(sorted({*last, *missing})))
    return groups


def candidate_groups(num_tasks: int) -> list[Group]:
    """Groups of two or more tasks (single tasks are the free STL fallback)."""
    return selection_candidates(num_tasks, "fallback")
