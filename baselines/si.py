"""Scale-invariant loss balancing (SI): ``sum_i log L_i`` with equal weights (IGB eq. 2)."""

from __future__ import annotations

from typing import Any

import torch

from baselines.loss_weighting import run_weighting_baseline
from harness.config import RunConfig
from mtl_envs.training.weighting import Weighting


class SI(Weighting):
    loss_mode = "log"

    def weights(self, losses: torch.Tensor, learner) -> torch.Tensor:
        return torch.ones_like(losses)


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_weighting_baseline(config, seed, "si", SI)
