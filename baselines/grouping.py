"""Shared runner of the task-grouping methods: select groups per budget, score them on the
held-out test gains of the ground-truth table (ETAP Table 4).

A method is a ``select(problem, budget, seed) -> (groups, extra)`` function. The
:class:`GroupingProblem` gives it the candidate groups, the affinities and the gains of the
split methods may learn from (validation, the env's ``gain_split``); a method that reads the
test gains instead is an *oracle* and its results say so (``"oracle": true``). Every result
holds the selection's true total gain and total loss on the test split, the optimum for the
same budget (exact, on the test gains) and the gap to it. The objective is the env's
(``"etap"``: every task covered, single-task networks count against the budget, ETAP section
3.2.3; ``"fallback"``: uncovered or hurt tasks are trained alone at no cost).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import mtl_envs  # noqa: F401
from harness.config import RunConfig
from harness.lifecycle import finished_result
from harness.recording import TensorBoardLog
from harness.results import run_dir, write_result
from mtl_envs.errors import ConfigError, PathNotFoundError
from mtl_envs.families import require_family
from mtl_envs.training.group_trainer import (
    group_name,
    load_gain_table,
    table_affinity,
    table_gains,
)
from mtl_envs.training.grouping import (
    Group,
    best_selection,
    evaluate_selection,
    gain_matrix,
    selection_candidates,
)
from mtl_envs.utils import check_int, is_int


@dataclass
class GroupingProblem:
    """A gain table seen through one objective and one learning split."""

    table: dict[str, Any]
    objective: str
    split: str
    """The split whose gains a fair method may read (``"val"``); ``"test"`` makes every
    method that reads gains an oracle."""
    _matrices: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def num_tasks(self) -> int:
        return len(self.table["task_names"])

    @property
    def candidates(self) -> list[Group]:
        return selection_candidates(self.num_tasks, self.objective)

    def affinity(self, kind: str = "etap") -> np.ndarray:
        return table_affinity(self.table, kind)

    def gains(self, split: str | None = None) -> dict[Group, dict[int, float]]:
        """Per-group, per-task gains on ``split`` (default: the learning split)."""
        values = table_gains(self.table, split or self.split)
        return {g: {t: values[group_name(g)][str(t)] for t in g} for g in self.candidates}

    def matrix(self, split: str | None = None) -> np.ndarray:
        """(candidates, n) gain matrix on ``split`` (default: the learning split)."""
        split = split or self.split
        if split not in self._matrices:
            self._matrices[split] = gain_matrix(self.candidates, self.gains(split), self.num_tasks)
        return self._matrices[split]

    def solve(self, matrix: np.ndarray, budget: int) -> list[Group]:
        """The exact optimum of the objective on ``matrix`` (one row per candidate)."""
        chosen, _ = best_selection(self.candidates, matrix, budget, self.objective)
        return [self.candidates[c] for c in chosen]


Selector = Callable[[GroupingProblem, int, int], tuple[list[Group], dict[str, Any]]]


def env_settings(config: RunConfig) -> dict[str, Any]:
    """The TaskGrouping env's kwargs: registered ones, then the run's."""
    require_family(config.env_id, "TaskGrouping")
    return config.env_settings()


def budgets(config: RunConfig) -> list[int]:
    """``method_kwargs.budgets`` (e.g. [2, 3, 4]) or the env's own budget."""
    if "budgets" not in config.method_kwargs:
        budget = env_settings(config).get("budget", 3)
        check_int("env_kwargs.budget", budget)
        return [budget]
    values = config.method_kwargs["budgets"]
    if not (
        isinstance(values, (list, tuple)) and values and all(is_int(b) and b >= 1 for b in values)
    ):
        raise ConfigError(
            f"`method_kwargs.budgets` must be a non-empty list of positive ints; got {values!r}."
        )
    return [int(b) for b in values]


def grouping_problem(config: RunConfig) -> GroupingProblem:
    """The table, objective and learning split the env id and its kwargs define."""
    from mtl_envs.envs.task_grouping import TaskGroupingEnv
    from mtl_envs.utils import check_choice

    settings = env_settings(config)
    defaults = inspect.signature(TaskGroupingEnv).parameters
    objective = settings.get("objective", defaults["objective"].default)
    split = settings.get("gain_split", defaults["gain_split"].default)
    check_choice("objective", objective, ("etap", "fallback"))
    check_choice("gain_split", split, ("val", "test"))
    return GroupingProblem(_gain_table(config, settings), objective, split)


def _gain_table(config: RunConfig, settings: dict[str, Any]) -> dict[str, Any]:
    """The run's table of trained groups; every grouping method is scored on its test gains,
    so an id without one (ETAP's predictions alone) cannot run them."""
    name = settings.get("table") or settings["dataset"]
    try:
        return load_gain_table(name)
    except PathNotFoundError as err:
        if settings.get("table") is None and settings.get("gains") == "etap":
            raise ConfigError(
                f"{config.env_id} has no table of trained groups (its gains are ETAP's "
                f"predictions), and the grouping methods are scored on such a table's test "
                f"gains. Build one with scripts/build_gain_table.py and pass it as "
                f"`env_kwargs.table`, or use an id with a table: {_table_ids()}."
            ) from None
        from mtl_envs.training.group_trainer import shipped_tables
        from mtl_envs.utils import suggest

        argument = "env_kwargs.table" if settings.get("table") else "env_kwargs.dataset"
        raise ConfigError(f"`{argument}`: {err}{suggest(str(name), shipped_tables())}") from None


def _table_ids() -> list[str]:
    from mtl_envs.families import FAMILIES

    family = FAMILIES["TaskGrouping"]
    return [i for i in family.ids() if family.kwargs(i).get("gains") == "table"]


def check_config(config: RunConfig) -> None:
    """Fail before anything runs on an id or ``env_kwargs.table`` without a gain table."""
    _gain_table(config, env_settings(config))


# Exact searches are deterministic given the table, so the seeds of a run share one. Keyed
# by the table's content (its digest), not its path: a table rewritten in place is new.
_SEARCHES: dict[tuple[str, str, str, int], list[Group]] = {}


def memoised_search(
    problem: GroupingProblem, kind: str, budget: int, search: Callable[[], list[Group]]
) -> list[Group]:
    """``search()``, computed once per table content, objective, ``kind`` and budget."""
    digest = problem.table.get("digest")
    if digest is None:  # a table built in memory, not loaded: nothing to key it by
        return search()
    key = (digest, problem.objective, kind, budget)
    if key not in _SEARCHES:
        _SEARCHES[key] = search()
    return _SEARCHES[key]


def _optimum(problem: GroupingProblem, budget: int) -> list[Group]:
    """The exact optimum on the test gains (what every method is scored against)."""
    return memoised_search(
        problem, "optimum", budget, lambda: problem.solve(problem.matrix("test"), budget)
    )


def run_selection(
    config: RunConfig,
    seed: int,
    method: str,
    select: Selector,
    oracle: bool = False,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``select`` for every budget; write one result per budget; return the last.

    ``oracle``: the method reads the test gains whatever the learning split (the exact
    optimum); a learning split of ``"test"`` makes every method an oracle. With
    ``config.resume`` the budgets whose result is written already are not redone, if their
    results hold the same ``settings`` (fields ``select`` returns: an agent's resolved
    hyperparameters).
    """
    problem = grouping_problem(config)
    oracle = oracle or problem.split == "test"
    result: dict[str, Any] = {}
    # One TensorBoard run per method and seed, its x axis the budget: gain against budget.
    tb = TensorBoardLog(run_dir(config, method, seed) / "tb" if config.tensorboard else None)
    try:
        for budget in budgets(config):
            finished = finished_result(config, method, seed, f"B={budget}", settings)
            if finished is not None:  # resumed: its point is in the log already
                result = finished
                continue
            result = _run_budget(config, seed, method, select, problem, budget, oracle)
            tb.scalars(result["final"], budget)
    finally:
        tb.close()
    return result


def _run_budget(
    config: RunConfig,
    seed: int,
    method: str,
    select: Selector,
    problem: GroupingProblem,
    budget: int,
    oracle: bool,
) -> dict[str, Any]:
    """One budget of :func:`run_selection`: select, score on the test gains, write."""
    start = time.perf_counter()
    groups, extra = select(problem, budget, seed)
    seconds = time.perf_counter() - start
    optimum = _optimum(problem, budget)
    quality = evaluate_selection(problem.table, groups, problem.objective, "test")
    if problem.objective == "etap" and quality["networks"] > budget:
        raise RuntimeError(
            f"{method} selected {groups}, which trains {quality['networks']} networks: more "
            f"than the budget {budget} allows under ETAP's objective."
        )
    best = evaluate_selection(problem.table, optimum, problem.objective, "test")
    final = {
        "test/total_gain": quality["total_gain"],
        "test/total_loss": quality["total_loss"],
        "test/networks": quality["networks"],
        "test/optimal_gain": best["total_gain"],
        "test/optimal_loss": best["total_loss"],
        "test/gap": best["total_gain"] - quality["total_gain"],
    }
    if "val_gains" in problem.table:
        val = evaluate_selection(problem.table, groups, problem.objective, "val")
        final["val/total_gain"] = val["total_gain"]
    return write_result(
        config,
        method,
        seed,
        final,
        setting=f"B={budget}",
        wall_time_s=seconds,
        extra={
            "groups": [list(g) for g in groups],
            "optimal_groups": [list(g) for g in optimum],
            "objective": problem.objective,
            "gain_split": problem.split,
            "oracle": oracle,
            **extra,
        },
    )
