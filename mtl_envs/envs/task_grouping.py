"""TaskGrouping: an agent picks which task groups to train, under a budget (ETAP)."""

from __future__ import annotations

import inspect
import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mtl_envs.envs.rendering import RENDER_FPS, RENDER_MODES, TextRender, check_render_mode, spread
from mtl_envs.errors import ConfigError, PathNotFoundError
from mtl_envs.training.gain_prediction import ETAPPredictor
from mtl_envs.training.group_trainer import (
    GAIN_SPLITS,
    GroupProtocol,
    GroupTrainer,
    all_groups,
    group_name,
    load_gain_table,
    shipped_tables,
    table_affinity,
    table_gains,
    table_losses,
)
from mtl_envs.training.grouping import OBJECTIVES, Group, complete_cover, selection_quality
from mtl_envs.utils import (
    check_choice,
    check_int,
    check_options,
    check_seeds,
    config_from_dict,
    default_data_root,
    resolve_device,
    suggest,
)

GAIN_SOURCES = ("table", "train", "etap")
AFFINITIES = ("etap", "tag")


class TableGains:
    """Gains looked up in a precomputed table of every group."""

    def __init__(self, table: dict[str, Any]):
        self.table = table
        self.num_tasks = len(table["task_names"])

    def gains(self, group: Group, split: str) -> dict[int, float]:
        return {int(t): v for t, v in table_gains(self.table, split)[group_name(group)].items()}

    def losses(self, group: Group, split: str) -> dict[int, float]:
        values = table_losses(self.table, split)[group_name(group)]
        return {int(t): float(np.mean(v)) for t, v in values.items()}


class TrainedGains:
    """Gains from real training, cached on disk by :class:`GroupTrainer`."""

    def __init__(self, trainer: GroupTrainer, seeds: tuple[int, ...]):
        self.trainer, self.seeds = trainer, seeds
        self.num_tasks = trainer.num_tasks

    def gains(self, group: Group, split: str) -> dict[int, float]:
        return self.trainer.gains(group, self.seeds, split)

    def losses(self, group: Group, split: str) -> dict[int, float]:
        per_seed = [self.trainer.task_losses(group, s, split) for s in self.seeds]
        return {t: float(np.mean([p[t] for p in per_seed])) for t in group}


class PredictedGains:
    """ETAP's predictions, fitted on ``train_groups`` groups measured by ``truth`` on
    ``split``."""

    def __init__(self, truth, affinity: np.ndarray, train_groups: int, seed: int, split: str):
        rng = np.random.default_rng(seed)
        candidates = [g for g in all_groups(truth.num_tasks) if len(g) > 1]
        if not 2 <= train_groups <= len(candidates):
            raise ConfigError(
                f"`etap_train_groups` must be in [2, {len(candidates)}] (ETAP's cross-"
                f"validation keeps each group's rows together); got {train_groups!r}."
            )
        chosen = [candidates[i] for i in rng.choice(len(candidates), train_groups, replace=False)]
        measured = {g: truth.gains(g, split) for g in chosen}
        self.train_groups = chosen
        self.model = ETAPPredictor(affinity, seed=seed).fit(chosen, measured)
        self.num_tasks = truth.num_tasks

    def gains(self, group: Group, split: str) -> dict[int, float]:
        return self.model.predict(group)


def check_env_kwargs(kwargs: dict[str, Any]) -> None:
    """Check TaskGrouping constructor kwargs without loading a table or training: known
    names, values inside their choices."""
    valid = [p for p in inspect.signature(TaskGroupingEnv).parameters if p != "unknown"]
    for key in kwargs:
        if key not in valid:
            raise ConfigError(
                f"Unknown TaskGrouping argument {key!r}.{suggest(key, valid)} "
                f"Valid arguments: {valid}."
            )
    choices = {
        "gains": GAIN_SOURCES,
        "affinity": AFFINITIES,
        "objective": OBJECTIVES,
        "gain_split": GAIN_SPLITS,
    }
    for name, values in choices.items():
        if name in kwargs:
            check_choice(name, kwargs[name], values)
    for name, least in (("budget", 1), ("etap_train_groups", 2)):
        if name in kwargs:
            check_int(name, kwargs[name], minimum=least)
    if "seeds" in kwargs:
        check_seeds("seeds", kwargs["seeds"])
    if kwargs.get("protocol") is not None:
        # Checked whether or not this env trains: a table mode ignores it, a typo too.
        protocol = kwargs["protocol"]
        if not isinstance(protocol, dict):
            raise ConfigError(
                f"`protocol` must be a mapping of GroupProtocol fields; got {protocol!r}."
            )
        config_from_dict(GroupProtocol, {"dataset": "digits10", **protocol})
    for name in ("cache_dir", "data_root"):
        value = kwargs.get(name)
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"`{name}` must be a folder path or None; got {value!r}.")
    for name, what in (("table", "a gain table's path or shipped name"), ("dataset", "a name")):
        value = kwargs.get(name)
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"`{name}` must be {what}; got {value!r}.")
    if "device" in kwargs:
        resolve_device(kwargs["device"])


class TaskGroupingEnv(TextRender, gym.Env):
    """Select task groups to train, one per step, under a budget (ETAP section 2-3).

    ## Description
    n tasks may be trained in groups that share a network. Each step the agent names the
    next group; it is "trained" (its per-task MTL gains, ETAP eq. 1, come from a precomputed
    table, from real training, or from the ETAP predictor) and every task keeps the best gain
    of the selected groups it belongs to. Rewards use gains measured on ``gain_split``
    (validation by default): what an agent may learn from. :meth:`evaluate` scores the
    selection on the held-out test gains, as ETAP's Table 4 does; an agent trained with
    ``gain_split="test"`` has read the test data and is an oracle.

    ## Action Space
    ``MultiBinary(n)``: the members of the next group (a single task is a group too). All
    zeros stops the episode early.

    ## Observation Space
    | key           | space                        | meaning                                    |
    |---------------|------------------------------|--------------------------------------------|
    | `affinity`    | `Box(-inf, inf, (n, n))`     | pairwise affinity of all-task runs (below) |
    | `best_gain`   | `Box(-inf, inf, (n,))`       | each task's best gain so far (0: none yet) |
    | `covered`     | `MultiBinary(n)`             | tasks in some selected group               |
    | `budget_left` | `Discrete(budget + 1)`       | groups that may still be selected          |

    ``affinity`` is ETAP's eq. 6 (or TAG's lookahead) score of task i on task j, collected
    over the training batches of all-task runs: with a gain table, the mean over the table's
    affinity runs (two seeds for the shipped tables, ``scripts/build_gain_table.py``), so
    ``seeds`` does not change it; with ``gains="train"`` or ``"etap"`` without a table, one
    run seeded by ``seeds[0]``.

    ## Rewards
    The increase of the total gain, so the episode return is the selection's total gain.
    ``objective="etap"`` (ETAP section 3.2.3): the groups must cover every task and single
    tasks cost budget like any group; the total is ``sum_t max_{G selected, t in G} y_{G->t}``
    over covered tasks, negative when a task's groups all hurt it. To keep every episode
    feasible, the last group (budget spent, or the all-zeros action) takes in every task not
    yet covered. ``objective="fallback"``: ``sum_t max(0, max_{G selected, t in G}
    y_{G->t})``; a task in no selected group, or whose groups all hurt it, is trained alone
    at no cost (gain 0).

    ## Starting State
    Nothing selected, all best gains 0, the full budget. The episode holds no randomness:
    the problem (gains, affinities, and with ``gains="etap"`` the groups ETAP is fitted on)
    is fixed when the env is built, from ``seeds``, as a map is fixed for a maze, and
    ``reset(seed=...)`` changes nothing an episode sees. Another problem instance is another
    env (other ``seeds``, ``table`` or ``protocol``).

    ## Episode End
    Terminated when the budget is spent or the action is all zeros; a step after that is an
    error until the next ``reset()``.

    ## Arguments
    | argument            | default      | meaning                                          |
    |---------------------|--------------|--------------------------------------------------|
    | `dataset`           | per id       | multi-task dataset (`digits10`, `cifar100_mtl`)  |
    | `budget`            | 3            | B, groups that may be selected                   |
    | `objective`         | `"etap"`     | `"etap"` (cover all tasks) or `"fallback"`       |
    | `gain_split`        | `"val"`      | split whose gains make the rewards (`"test"`:    |
    |                     |              | an oracle)                                       |
    | `gains`             | per id       | `"table"`, `"train"` or `"etap"` (fitted on a    |
    |                     |              | table's groups if one exists, else trained ones) |
    | `table`             | dataset name | gain table (shipped name or file path)           |
    | `affinity`          | `"etap"`     | observed affinity: `"etap"` or `"tag"`           |
    | `etap_train_groups` | 10           | trained groups ETAP is fitted on                 |
    | `seeds`             | (0,)         | training seeds averaged by `gains="train"`; the  |
    |                     |              | first draws ETAP's groups and, without a table,  |
    |                     |              | seeds the affinity run                           |
    | `protocol`          | {}           | `GroupProtocol` overrides for training           |
    | `cache_dir`         | None         | where trained groups are cached; None:           |
    |                     |              | `$MTL_ENVS_DATA/group_cache` (or the user cache) |
    | `data_root`         | None         | folder of the dataset files (`gains="train"`)    |
    | `device`            | `"auto"`     | CUDA when present                                |
    | `render_mode`       | None         | `"ansi"`: ``render()`` returns a text frame of   |
    |                     |              | the groups chosen and the gains so far           |

    ## Version History
    * v1: ETAP's objective (cover every task, single tasks count against the budget) and
      rewards from validation gains; :meth:`evaluate` scores on test gains.
    * v0: initial release (uncovered or hurt tasks trained alone for free; rewards from the
      test gains).

    ## Example
    >>> import gymnasium as gym, mtl_envs
    >>> env = gym.make("TaskGrouping-Digits10-v1")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": RENDER_FPS}

    def __init__(
        self,
        dataset: str = "digits10",
        budget: int = 3,
        objective: str = "etap",
        gain_split: str = "val",
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
        **unknown: Any,
    ):
        self.render_mode = check_render_mode(render_mode)
        check_env_kwargs(
            {
                "dataset": dataset,
                "table": table,
                "gains": gains,
                "affinity": affinity,
                "objective": objective,
                "gain_split": gain_split,
                "budget": budget,
                "etap_train_groups": etap_train_groups,
                "seeds": seeds,
                "protocol": protocol,
                "cache_dir": cache_dir,
                "data_root": data_root,
                "device": device,
                **unknown,
            }
        )
        seeds = check_seeds("seeds", seeds)
        self.budget = budget
        self.objective = objective
        self.gain_split = gain_split
        self.gain_source = gains
        # "table" needs a table; "etap" fits on a table's groups when one exists, else trains.
        table_data = None
        if gains in ("table", "etap"):
            try:
                table_data = load_gain_table(table or dataset)
            except PathNotFoundError as error:
                if gains == "table" or table is not None:
                    argument, name = ("table", table) if table is not None else ("dataset", dataset)
                    raise ConfigError(
                        f"`{argument}` {name!r} names no gain table: {error}"
                        f"{suggest(str(name), shipped_tables())}"
                    ) from None
        if table_data is not None:
            truth = TableGains(table_data)
            scores = table_affinity(table_data, affinity)
        else:
            from mtl_envs.training.affinity import collect_affinities
            from mtl_envs.training.multitask_learner import MultiTaskLearner

            if "dataset" in (protocol or {}):
                raise ConfigError(
                    "`protocol` must not hold 'dataset': the env's `dataset` argument names it."
                )
            proto = config_from_dict(GroupProtocol, {**(protocol or {}), "dataset": dataset})
            cache = cache_dir if cache_dir is not None else default_data_root() / "group_cache"
            trainer = GroupTrainer(proto, cache_dir=cache, data_root=data_root, device=device)
            truth = TrainedGains(trainer, tuple(seeds))
            learner = MultiTaskLearner(
                proto.learner_config(data_root, device), seed=seeds[0], dataset=trainer.data
            )
            run = collect_affinities(learner, proto.epochs, tag=affinity == "tag")
            scores = run.tag if affinity == "tag" else run.etap
        self.affinity = scores.astype(np.float32)
        self.truth = truth
        self.source = (
            truth
            if gains != "etap"
            else PredictedGains(truth, scores, etap_train_groups, int(seeds[0]), gain_split)
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
        # -inf: not covered yet (reported as 0 in the observation, with `covered` = 0).
        self.best = np.full(self.num_tasks, -np.inf)
        self.covered = np.zeros(self.num_tasks, dtype=np.int8)
        self.budget_left = self.budget
        self.selected: list[Group] = []
        self.ended = False

    def group_gains(self, group: Group) -> dict[int, float]:
        """Per-task gains of ``group`` on the reward split (memoised)."""
        if group not in self._cache:
            self._cache[group] = self.source.gains(group, self.gain_split)
        return self._cache[group]

    @property
    def total_gain(self) -> float:
        """The current selection's total gain under the env's objective (reward split)."""
        best = self.best[self.covered.astype(bool)]
        if self.objective == "fallback":
            best = np.maximum(best, 0.0)
        return float(best.sum())

    def _obs(self) -> dict[str, Any]:
        return {
            "affinity": self.affinity.copy(),
            "best_gain": np.where(self.covered, self.best, 0.0).astype(np.float32),
            "covered": self.covered.copy(),
            "budget_left": np.int64(self.budget_left),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        check_options(options, ())
        check_int("seed", seed, minimum=0, optional=True)  # bools and negative seeds too
        super().reset(seed=None if seed is None else int(seed))
        self._reset_state()
        self._note_reset()
        return self._obs(), {"total_gain": 0.0}

    def step(self, action):
        if self._over is None:
            self._check_episode_running()  # a step before the first reset()
        action = np.asarray(action)  # 0/1 ints, bools or floats (SB3's Bernoulli samples)
        if action.shape != (self.num_tasks,) or not self.action_space.contains(action):
            raise ConfigError(f"Action {action!r} is outside the action space {self.action_space}.")
        if self.ended:
            raise ConfigError(
                f"The selection has ended ({len(self.selected)} group(s) of a budget of "
                f"{self.budget}); call reset() before step()."
            )
        group = tuple(int(t) for t in np.flatnonzero(action))
        if self.objective == "etap" and (not group or self.budget_left == 1):
            # ETAP covers every task: the last group takes in the tasks still uncovered.
            group = complete_cover([*self.selected, group], self.num_tasks)[-1]
        if not group:
            info = {
                "group": [],
                "total_gain": self.total_gain,
                "stopped": True,
                "selected": [list(g) for g in self.selected],
            }
            self.ended = True
            self._note_step(0.0, True, False, info)
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
            "stopped": not np.flatnonzero(action).size,
            "selected": [list(g) for g in self.selected],
        }
        terminated = self.budget_left == 0 or not np.flatnonzero(action).size
        self.ended = bool(terminated)
        self._note_step(float(reward), bool(terminated), False, info)
        return self._obs(), float(reward), bool(terminated), False, info

    def render_lines(self) -> list[str]:
        kind = "predicted " if self.gain_source == "etap" else ""
        groups = ", ".join("{" + " ".join(map(str, g)) + "}" for g in self.selected) or "-"
        return [
            f"groups {len(self.selected)} of a budget of {self.budget}: {groups}",
            f"tasks covered {int(self.covered.sum())} of {self.num_tasks}, total {kind}gain "
            f"{self.total_gain:.4g} on the {self.gain_split} split ({self.objective} objective)",
            spread(
                "best gain", np.where(self.covered, self.best, np.nan) if self.selected else None
            ),
        ]

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """The current selection's true quality on ``split`` (test: ETAP Table 4), under the
        env's objective: ``total_gain``, ``networks`` and, where losses are known,
        ``total_loss``. With ``gains="etap"`` the rewards are predictions; this is measured."""
        check_choice("split", split, GAIN_SPLITS)
        truth = self.truth
        return selection_quality(
            self.selected,
            self.num_tasks,
            self.objective,
            lambda g: truth.gains(g, split),
            lambda g: truth.losses(g, split),
        )
