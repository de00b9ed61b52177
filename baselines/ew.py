"""Equal Weighting (EW): minimise ``sum_i L_i``, the reference of IGB's T metric."""

from __future__ import annotations

from typing import Any

import torch

from baselines.loss_weighting import run_weighting_baseline
from harness.config import RunConfig
from mtl_envs.training.weighting import Weighting


class EW(Weighting):
    loss_mode = "sum"

    def weights(self, losses: torch.Tensor, learner) -> torch.Tensor:
        return torch.ones_like(losses)


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_weighting_baseline(config, seed, "ew", EW)
