"""Shared runner of the auxiliary-learning baselines: same learner and protocol as the env.

A baseline is a *labeller* (training indices -> auxiliary targets) plugged into
:meth:`~mtl_envs.training.AuxLearner.train_epoch`; the learner is built from the env id's
registered kwargs plus the run's ``env_kwargs``, so baselines and agents train the identical
main network on identical data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mtl_envs  # noqa: F401  (registers the ids)
from harness.config import RunConfig
from harness.lifecycle import TrainingState, run_epochs
from mtl_envs.families import require_family
from mtl_envs.training import AuxLearner, Labeller

LabellerFactory = Callable[[AuxLearner, int], Labeller | None]


def build_aux_learner(config: RunConfig, seed: int) -> AuxLearner:
    """The main-network learner that ``gym.make(config.env_id, **config.env_kwargs)`` would use."""
    family = require_family(config.env_id, "AuxLabel")
    return AuxLearner(family.learner_config(config.env_id, config.env_kwargs), seed=seed)


def run_aux_baseline(
    config: RunConfig,
    seed: int,
    method: str,
    make_labeller: LabellerFactory,
    extra: dict[str, Any] | None = None,
    on_epoch_end: Callable[[], None] | None = None,
    after_batches: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train ``config.epochs`` epochs with the labeller's auxiliary task; write the result.

    ``after_batches`` runs after an epoch's SGD steps, before the main network's learning-rate
    schedule steps (:meth:`AuxLearner.train_epoch`); ``on_epoch_end`` after the whole epoch
    (a learning labeller steps its own scheduler there).
    """
    learner = build_aux_learner(config, seed)
    labeller = make_labeller(learner, seed)

    def train_epoch(epoch: int) -> dict[str, float]:
        metrics = learner.train_epoch(labeller, after_batches)
        if on_epoch_end is not None:
            on_epoch_end()
        return metrics

    return run_epochs(
        config=config,
        method=method,
        seed=seed,
        train_epoch=train_epoch,
        evaluate=learner.evaluate,
        extra=extra,
        state=TrainingState(learner=learner, labeller=labeller),
        models=[learner.net],
    )
