"""TaskGrouping: an agent picks which task groups to train, under a budget (ETAP)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mtl_envs.training.gain_prediction import ETAPPredictor
from mtl_envs.training.group_trainer import (
    GroupProtocol,
    GroupTrainer,
    all_groups,
    group_name,
    load_gain_table,
)
from mtl_envs.utils import check_choice, default_data_root

GAIN_SOURCES = ("table", "train", "etap")
AFFINITIES = ("etap", "tag")

Group = tuple[int, ...]


class TableGains:
    """Gains looked up in a precomputed table of every group."""

    def __init__(self, table: dict[str, Any]):
        self.table = table
        self.num_tasks = len(table["task_names"])

    def gains(self, group: Group) -> dict[int, float]:
        return {int(t): v for t, v in self.table["gains"][group_name(group)].items()}


class TrainedGains:
    """Gains from real training, cached on disk by :class:`GroupTrainer`."""

    def __init__(self, trainer: GroupTrainer, seeds: tuple[int, ...]):
        self.trainer, self.seeds = trainer, seeds
        self.num_tasks = trainer.num_tasks

    def gains(self, group: Group) -> dict[int, float]:
        return self.trainer.gains(group, self.seeds)


class PredictedGains:
    """ETAP's predictions, fitted on ``train_groups`` groups measured by ``truth``."""

    def __init__(self, truth, affinity: np.ndarray, train_groups: int, seed: int):
        rng = np.random.default_rng(seed)
        candidates = [g for g in all_groups(truth.num_tasks) if len(g) > 1]
        if not 1 <= train_groups <= len(candidates):
            raise ValueError(
                f"`etap_train_groups` must be in [1, {len(candidates)}]; got {train_groups!r}."
            )
        chosen = [candidates[i] for i in rng.choice(len(candidates), train_groups, replace=False)]
        measured = {g: truth.gains(g) for g in chosen}
        self.train_groups = chosen
        self.model = ETAPPredictor(affinity, seed=seed).fit(chosen, measured)
        self.num_tasks = truth.num_tasks

    def gains(self, group: Group) -> dict[int, float]:
        return self.model.predict(group)


class TaskGroupingEnv(gym.Env):
    """Select task groups to train, one per step, under a budget (ETAP section 2-3).

    ## Description
    n tasks may be trained in groups that share a network. Each step the agent names the
    next group; it is "trained" (its per-task MTL gains, ETAP eq. 1, come from a precomputed
    table, from real training, or from the ETAP predictor) and every task keeps the best gain
    of the selected groups it belongs to.

    ## Action Space
    ``MultiBinary(n)``: the members of the next group. All zeros stops the episode early.

    ## Observation Space
    | key           | space                        | meaning                                    |
    |---------------|------------------------------|--------------------------------------------|
    | `affinity`    | `Box(-inf, inf, (n, n))`     | pairwise affinity from one all-task run    |
    | `best_gain`   | `Box(-inf, inf, (n,))`       | each task's best gain so far (0 = alone)   |
    | `covered`     | `MultiBinary(n)`             | tasks in some selected group               |
    | `budget_left` | `Discrete(budget + 1)`       | groups that may still be selected          |

    ## Rewards
    The increase of the total gain ``sum_t max(0, max_{G selected, t in G} y_{G->t})``
    (ETAP eq. 2). Terminal rule for uncovered tasks: a task in no selected group, or whose
    groups all hurt it, is trained alone (single-task learning, gain 0); there is no extra
    penalty, so the episode return equals the total gain of the selection.

    ## Starting State
    Nothing selected, all best gains 0, the full budget.

    ## Episode End
    Terminated when the budget is spent or the action is all zeros.

    ## Arguments
    | argument            | default      | meaning                                          |
    |---------------------|--------------|--------------------------------------------------|
    | `dataset`           | per id       | multi-task dataset (`digits10`, `cifar100_mtl`)  |
    | `budget`            | 3            | B, groups that may be selected                   |
    | `gains`             | per id       | `"table"`, `"train"` or `"etap"` (fitted on a    |
    |                     |              | table's groups if one exists, else trained ones) |
    | `table`             | dataset name | gain table (shipped name or file path)           |
    | `affinity`          | `"etap"`     | observed affinity: `"etap"` or `"tag"`           |
    | `etap_train_groups` | 10           | trained groups ETAP is fitted on                 |
    | `seeds`             | (0,)         | training seeds averaged by `gains="train"`       |
    | `protocol`          | {}           | `GroupProtocol` overrides for training           |
    | `cache_dir`         | data root    | where trained groups are cached                  |

    ## Version History
    * v0: initial release.

    ## Example
    >>> import gymnasium as gym, mtl_envs
    >>> env = gym.make("TaskGrouping-Digits10-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        dataset: str = "digits10",
        budget: int = 3,
        gains: str = "table",
        table: str | None = None,
        affinity: str = "etap",
        etap_train_groups: int = 10,
        seeds: tuple[int, ...] | list[int] = (0,),
        protocol: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        data_root: str | None = None,
        device: str = "auto",
        render_mode: str | None = None,
    ):
        if render_mode is not None:
            raise ValueError(f"`render_mode` must be None (no render modes); got {render_mode!r}.")
        check_choice("gains", gains, GAIN_SOURCES)
        check_choice("affinity", affinity, AFFINITIES)
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(f"`budget` must be a positive int; got {budget!r}.")
        self.budget = budget
        self.gain_source = gains
        # "table" needs a table; "etap" fits on a table's groups when one exists, else trains.
        table_data = None
        if gains in ("table", "etap"):
            try:
                table_data = load_gain_table(table or dataset)
            except FileNotFoundError:
                if gains == "table" or table is not None:
                    raise
        if table_data is not None:
            truth = TableGains(table_data)
            scores = np.asarray(table_data["affinity"][affinity], dtype=np.float64)
        else:
            from mtl_envs.training.affinity import collect_affinities
            from mtl_envs.training.multitask_learner import MultiTaskLearner

            proto = GroupProtocol(dataset=dataset, **(protocol or {}))
            cache = cache_dir if cache_dir is not None else default_data_root() / "group_cache"
            trainer = GroupTrainer(proto, cache_dir=cache, data_root=data_root, device=device)
            truth = TrainedGains(trainer, tuple(seeds))
            learner = MultiTaskLearner(
                proto.learner_config(data_root, device), seed=seeds[0], dataset=trainer.data
            )
            run = collect_affinities(learner, proto.epochs, tag=affinity == "tag")
            scores = run.tag if affinity == "tag" else run.etap
        self.affinity = scores.astype(np.float32)
        self.source = (
            truth
            if gains != "etap"
            else PredictedGains(truth, scores, etap_train_groups, seed=int(seeds[0]))
        )
        n = truth.num_tasks
        self.num_tasks = n
        self.action_space = spaces.MultiBinary(n)
        self.observation_space = spaces.Dict(
            {
                "affinity": spaces.Box(-np.inf, np.inf, (n, n), dtype=np.float32),
                "best_gain": spaces.Box(-np.inf, np.inf, (n,), dtype=np.float32),
                "covered": spaces.MultiBinary(n),
                "budget_left": spaces.Discrete(budget + 1),
            }
        )
        self._cache: dict[Group, dict[int, float]] = {}
        self._reset_state()

    def _reset_state(self) -> None:
        self.best = np.zeros(self.num_tasks)
        self.covered = np.zeros(self.num_tasks, dtype=np.int8)
        self.budget_left = self.budget
        self.selected: list[Group] = []

    def group_gains(self, group: Group) -> dict[int, float]:
        """Per-task gains of ``group`` from the env's gain source (memoised)."""
        if group not in self._cache:
            self._cache[group] = self.source.gains(group)
        return self._cache[group]

    @property
    def total_gain(self) -> float:
        return float(self.best.sum())

    def _obs(self) -> dict[str, Any]:
        return {
            "affinity": self.affinity.copy(),
            "best_gain": self.best.astype(np.float32),
            "covered": self.covered.copy(),
            "budget_left": np.int64(self.budget_left),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._reset_state()
        return self._obs(), {"total_gain": 0.0}

    def step(self, action):
        action = np.asarray(action)
        if action.shape != (self.num_tasks,) or not self.action_space.contains(
            action.astype(np.int8)
        ):
            raise ValueError(f"Action {action!r} is outside the action space {self.action_space}.")
        group = tuple(int(t) for t in np.flatnonzero(action))
        if not group:
            info = {
                "group": [],
                "total_gain": self.total_gain,
                "stopped": True,
                "selected": [list(g) for g in self.selected],
            }
            return self._obs(), 0.0, True, False, info
        before = self.total_gain
        gains = self.group_gains(group)
        for t, g in gains.items():
            self.best[t] = max(self.best[t], g)
            self.covered[t] = 1
        self.selected.append(group)
        self.budget_left -= 1
        reward = self.total_gain - before
        info = {
            "group": list(group),
            "group_gains": {str(t): g for t, g in gains.items()},
            "total_gain": self.total_gain,
            "stopped": False,
            "selected": [list(g) for g in self.selected],
        }
        return self._obs(), float(reward), self.budget_left == 0, False, info
