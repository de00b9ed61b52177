"""Shared runner of the loss-weighting baselines: same learner and protocol as the env.

A baseline is a :class:`~mtl_envs.training.weighting.Weighting` rule handed to the
:class:`~mtl_envs.training.multitask_learner.MultiTaskLearner` that
``gym.make(env_id, **env_kwargs)`` would build; the run trains ``config.epochs`` epochs
(the env's warm-up epochs included, so every method sees the same budget).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mtl_envs  # noqa: F401  (registers the ids)
from harness.config import RunConfig
from harness.lifecycle import run_epochs
from mtl_envs.data.multitask import MultiTaskDataset
from mtl_envs.families import require_family
from mtl_envs.training.multitask_learner import MultiTaskLearner
from mtl_envs.training.weighting import Weighting


def build_learner(
    config: RunConfig,
    seed: int,
    weighting: Weighting | None = None,
    tasks: list[int] | None = None,
    dataset: MultiTaskDataset | None = None,
    **overrides: Any,
) -> MultiTaskLearner:
    """The learner of ``config.env_id`` with the run's overrides (``aggregator=...`` included)
    and then ``overrides`` (learner config fields the method fixes itself). A weighting rule
    picks its own objective (sum or log) whatever the config's ``loss``."""
    family = require_family(config.env_id, "LossWeighting")
    learner_config = family.learner_config(config.env_id, config.env_kwargs, **overrides)
    return MultiTaskLearner(
        learner_config, seed=seed, dataset=dataset, weighting=weighting, tasks=tasks
    )


def run_weighting_baseline(
    config: RunConfig,
    seed: int,
    method: str,
    make_rule: Callable[[], Weighting],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    learner = build_learner(config, seed, weighting=make_rule())

    def train_epoch(epoch: int) -> dict[str, float]:
        return learner.train_epoch()

    return run_epochs(
        config=config,
        method=method,
        seed=seed,
        train_epoch=train_epoch,
        evaluate=learner.evaluate,
        extra=extra,
        state=learner,
        models=[learner.net],
    )
