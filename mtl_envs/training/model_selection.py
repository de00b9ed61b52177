"""Early stopping and grid search on validation for :class:`MultiTaskLearner` runs.

The protocol of the Multi-Task Hypernetwork paper (``000_6f85eb44aaf9e6f8.txt``, section 4,
"Experimental setup", and its reference code): validate every 5 epochs; stop once the
validation loss is no lower than it was 20 epochs earlier (at most 2,000 epochs); every
hyperparameter combination (learning rate in {1e-3, 10^-3.5, 1e-4, 10^-4.5}, ...) is trained
and the one with the lowest validation loss is kept. Here the kept network is the one from
the best validation check, not the one at the stopping epoch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mtl_envs.errors import ConfigError
from mtl_envs.training.multitask_learner import MultiTaskLearner
from mtl_envs.utils import check_int

PAPER_LEARNING_RATES = (1e-3, 10**-3.5, 1e-4, 10**-4.5)


@dataclass
class EarlyStopping:
    """When to validate and when to stop."""

    val_every: int = 5
    patience: int = 20
    """Stop when the validation loss is >= its value ``patience`` epochs earlier."""
    max_epochs: int = 2000
    metric: str = "mean_mse"
    """A lower-is-better key of :meth:`MultiTaskLearner.evaluate` on the val split."""

    def __post_init__(self) -> None:
        for name in ("val_every", "patience", "max_epochs"):
            check_int(name, getattr(self, name))
        if self.patience % self.val_every:
            raise ConfigError(
                f"`patience` ({self.patience}) must be a multiple of `val_every` "
                f"({self.val_every})."
            )


def train_early_stopped(learner: MultiTaskLearner, stopping: EarlyStopping) -> dict[str, Any]:
    """Train until the stopping rule fires; leave the learner at its best validation check.

    A non-finite validation loss (a diverged run) stops training at once.

    Returns:
        ``epochs`` trained, ``best_epoch``, ``best_val`` (``inf`` if no check was finite)
        and the validation ``curve`` as (epoch, value) pairs.
    """
    curve: list[tuple[int, float]] = []
    best_val, best_epoch, best_state = math.inf, 0, None
    lag = stopping.patience // stopping.val_every
    epoch = 0
    while epoch < stopping.max_epochs:
        learner.train_epoch()
        epoch += 1
        if epoch % stopping.val_every and epoch != stopping.max_epochs:
            continue
        value = learner.evaluate("val")[stopping.metric]
        curve.append((epoch, value))
        if not math.isfinite(value):
            break
        if value < best_val:
            best_val, best_epoch = value, epoch
            best_state = copy.deepcopy(learner.net.state_dict())
        if len(curve) > lag and value >= curve[-1 - lag][1]:
            break
    if best_state is not None:
        learner.net.load_state_dict(best_state)
    return {"epochs": epoch, "best_epoch": best_epoch, "best_val": best_val, "curve": curve}


def grid_search(
    make_learner: Callable[[dict[str, Any]], MultiTaskLearner],
    grid: Sequence[dict[str, Any]],
    stopping: EarlyStopping,
    on_fit: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    record: Callable[[MultiTaskLearner], dict[str, float]] | None = None,
) -> tuple[MultiTaskLearner, dict[str, Any], list[dict[str, Any]]]:
    """Fit one learner per grid point with early stopping; keep the best on validation.

    Args:
        make_learner: builds a fresh learner from a grid point (e.g. ``{"lr": 1e-3}``).
        grid: the hyperparameter combinations, tried in order (ties keep the first).
        on_fit: called with (point, fit summary) after each fit, e.g. to advance a bar.
        record: metrics of each fitted learner (at its best validation check) kept in its
            summary as ``recorded``, e.g. its test error, so that a selection made later
            across seeds can report the point it picks. The selection here never reads them.

    Returns:
        The best learner (at its best validation check), its grid point, and every fit's
        summary (point, epochs, best_epoch, best_val and, with ``record``, recorded).
    """
    if not grid:
        raise ConfigError("`grid` must hold at least one hyperparameter combination.")
    best: tuple[float, MultiTaskLearner, dict[str, Any]] | None = None
    fits = []
    for point in grid:
        learner = make_learner(dict(point))
        summary = train_early_stopped(learner, stopping)
        fits.append({"params": dict(point), **{k: v for k, v in summary.items() if k != "curve"}})
        if record is not None:
            fits[-1]["recorded"] = record(learner)
        if on_fit is not None:
            on_fit(point, summary)
        if best is None or summary["best_val"] < best[0]:
            best = (summary["best_val"], learner, dict(point))
    assert best is not None
    return best[1], best[2], fits


__all__ = ["PAPER_LEARNING_RATES", "EarlyStopping", "grid_search", "train_early_stopped"]
