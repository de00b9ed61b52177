"""Uncertainty Weighting (UW), Kendall, Gal and Cipolla (2018).

Each task has a learnable log-variance s_i = log sigma_i^2; the objective is
``sum_i L_i / (2 exp(s_i)) + s_i / 2``, so the weights are ``w_i = 1 / (2 exp(s_i))`` and the
regulariser ``sum_i s_i / 2`` keeps the variances from growing without bound.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from baselines.loss_weighting import run_weighting_baseline
from harness.config import RunConfig
from mtl_envs.training.weighting import Weighting


class UW(Weighting):
    loss_mode = "sum"

    def __init__(self) -> None:
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(0))

    def reset(self, num_tasks: int) -> None:
        self.log_vars = nn.Parameter(torch.zeros(num_tasks))

    def weights(self, losses: torch.Tensor, learner) -> torch.Tensor:
        return 0.5 * torch.exp(-self.log_vars)

    def objective(self, losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # d/ds_i of L_i / (2 e^{s_i}) + s_i / 2, with L_i a constant here.
        return (weights * losses).sum() + 0.5 * self.log_vars.sum()


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_weighting_baseline(config, seed, "uw", UW)
