"""Choosing task groups under a budget (ETAP eq. 2; Standley et al., 2020).

A selection S of groups scores ``sum_t max(0, max_{G in S, t in G} y_{G->t})``: every task
takes the best selected group it belongs to, or is trained alone (single-task learning, gain
0) when no selected group helps it or none covers it. The score is a facility-location
function, hence monotone submodular, which gives branch-and-bound an admissible bound.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence

import numpy as np

Group = tuple[int, ...]


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
    if budget < 1:
        raise ValueError(f"`budget` must be a positive int; got {budget!r}.")
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


def evaluate_selection(table: dict, groups: Sequence[Group]) -> dict[str, float]:
    """True quality of a selection, from a gain table (ETAP Table 4).

    ``total_gain``: the selection score with the table's gains; ``total_loss``: the sum over
    tasks of the test loss each task gets from its best selected group or, failing that,
    from single-task training (losses averaged over the table's seeds).
    """
    from mtl_envs.training.group_trainer import group_name

    n = len(table["task_names"])
    best_gain = np.zeros(n)
    best_loss = np.array([np.mean(table["losses"][str(t)][str(t)]) for t in range(n)])
    for group in groups:
        key = group_name(group)
        for t in group:
            best_gain[t] = max(best_gain[t], table["gains"][key][str(t)])
            best_loss[t] = min(best_loss[t], float(np.mean(table["losses"][key][str(t)])))
    return {"total_gain": float(best_gain.sum()), "total_loss": float(best_loss.sum())}


def candidate_groups(num_tasks: int) -> list[Group]:
    """Groups of two or more tasks (single tasks are the free STL fallback)."""
    from mtl_envs.training.group_trainer import all_groups

    return [g for g in all_groups(num_tasks) if len(g) > 1]
