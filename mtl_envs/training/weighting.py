"""The plug-in interface of loss-weighting rules and the objectives they weight.

Concrete rules (EW, SI, UW, RLW, DWA, IGBv1) live in ``baselines/``, one file each (RLW and
DWA also on the log objective, as ``rlw_si`` and ``dwa_si``); the LossWeighting env supplies
weights from the agent's action instead.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from mtl_envs.errors import ConfigError

LOSS_MODES = ("sum", "log")


def weighted_objective_terms(
    losses: torch.Tensor, weights: torch.Tensor, loss_mode: str
) -> torch.Tensor:
    """Per-task terms whose sum is the training objective.

    ``"sum"``: ``w_i L_i`` (the usual weighted sum); ``"log"``: ``w_i log L_i``, the
    scale-invariant objective of IGB eq. 2, whose gradient is ``w_i grad(L_i) / L_i`` so tasks
    on different loss scales are balanced.
    """
    if loss_mode == "sum":
        return weights * losses
    if loss_mode == "log":
        return weights * torch.log(losses.clamp_min(1e-12))
    raise ConfigError(f"`loss` must be one of {list(LOSS_MODES)}; got {loss_mode!r}.")


def objective_term_derivatives(
    losses: torch.Tensor, weights: torch.Tensor, loss_mode: str
) -> torch.Tensor:
    """``d/dL_i`` of :func:`weighted_objective_terms`: ``w_i`` for ``"sum"``, ``w_i / L_i``
    for ``"log"`` (0 where the loss is clamped)."""
    if loss_mode == "sum":
        return weights.expand_as(losses).clone()
    if loss_mode == "log":
        return torch.where(losses > 1e-12, weights / losses, torch.zeros_like(losses))
    raise ConfigError(f"`loss` must be one of {list(LOSS_MODES)}; got {loss_mode!r}.")


def softmax_weights(scores: torch.Tensor) -> torch.Tensor:
    """``n * softmax(scores)`` over the last dim: positive weights that sum to the number of
    tasks n (per row, for a batch of score vectors)."""
    return scores.shape[-1] * torch.softmax(scores, dim=-1)


class LearnerState(Protocol):
    """What a weighting rule may read of the learner that calls it."""

    base_losses: torch.Tensor | None
    """L_base, the second epoch's mean task losses (IGB), once known."""
    loss_history: list[torch.Tensor]
    """Mean task losses of every finished epoch."""
    generator: torch.Generator
    """The run's seeded generator (random rules draw from it)."""


def random_weights(
    num_tasks: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """RLW's weights ``n * softmax(z)``, ``z ~ N(0, I)`` (Lin et al., 2022), which IGB's
    Algorithm 2 (line 11) uses until the SAC agent takes over."""
    return softmax_weights(torch.randn(num_tasks, device=device, generator=generator))


class Weighting(nn.Module):
    """A loss-weighting rule: maps the current batch's task losses to task weights.

    Subclasses set ``loss_mode`` (a class attribute, or per instance where a rule runs on
    either objective) and implement :meth:`weights`. A rule with learnable
    parameters (UW) also overrides :meth:`objective`; the learner adds those parameters to its
    optimiser.
    """

    loss_mode: str = "sum"
    lr: float | None = None
    """Learning rate of the rule's own parameters; ``None``: the network's."""

    def reset(self, num_tasks: int) -> None:
        """Prepare for a fresh run with ``num_tasks`` tasks (create or zero parameters)."""

    def weights(self, losses: torch.Tensor, learner: LearnerState) -> torch.Tensor:
        """Task weights (n,) for the batch whose detached task losses are ``losses``."""
        raise NotImplementedError

    def objective(self, losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor | None:
        """Extra scalar to minimise for the rule's own parameters (``losses`` detached)."""
        return None
