"""Uncertainty Weighting (UW), Kendall, Gal and Cipolla (2018).

Each task has a learnable log-variance s_i = log sigma_i^2; the objective is
``sum_i L_i / (2 exp(s_i)) + s_i / 2``, so the weights are ``w_i = 1 / (2 exp(s_i))`` and the
regulariser ``sum_i s_i / 2`` keeps the variances from growing without bound.

The log-variances learn at 0.025 (``lr``), in their own optimiser group, as in the code IGB's
comparison was run with (IGB4MTL, the Nash-MTL code base: ``method_params_lr``); at the
network's rate (1e-3 under Adam) each moves by about 1e-3 a step and the weights stay near
their initial 0.5 over a CPU-sized run.
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
    lr = 0.025

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
