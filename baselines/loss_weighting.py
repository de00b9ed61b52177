"""Shared runner of the loss-weighting baselines: same learner and protocol as the env.

A baseline is a :class:`~mtl_envs.training.weighting.Weighting` rule handed to the
:class:`~mtl_envs.training.multitask_learner.MultiTaskLearner` that
``gym.make(env_id, **env_kwargs)`` would build; the run trains ``config.epochs`` epochs
(the env's warm-up epochs included, so every method sees the same budget).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

import mtl_envs  # noqa: F401  (registers the ids)
from mtl_envs.data.multitask import MultiTaskDataset
from mtl_envs.envs.loss_weighting import split_env_kwargs
from mtl_envs.experiment import RunConfig, run_epochs
from mtl_envs.training.multitask_learner import MultiTaskLearner
from mtl_envs.training.weighting import Weighting

LOSS_WEIGHTING_ENTRY_POINT = "mtl_envs.envs.loss_weighting:LossWeightingEnv"


def is_loss_weighting(env_id: str) -> bool:
    return gym.spec(env_id).entry_point == LOSS_WEIGHTING_ENTRY_POINT


def build_learner(
    config: RunConfig,
    seed: int,
    weighting: Weighting | None = None,
    tasks: list[int] | None = None,
    dataset: MultiTaskDataset | None = None,
    **overrides: Any,
) -> MultiTaskLearner:
    """The learner of ``config.env_id`` with the run's overrides (``aggregator=...`` included)
    and then ``overrides`` (learner config fields the method fixes itself)."""
    if not is_loss_weighting(config.env_id):
        raise ValueError(
            f"`env_id` {config.env_id!r} is not a LossWeighting environment; loss-weighting "
            f"baselines need one of {[i for i in mtl_envs.registered_ids() if 'Loss' in i]}."
        )
    spec = gym.spec(config.env_id)
    kwargs = {**spec.kwargs, **config.env_kwargs}
    if weighting is not None:  # the rule picks its own objective (sum or log)
        kwargs.pop("loss", None)
    kwargs.update(overrides)
    _, learner_config = split_env_kwargs(kwargs)
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
    )
