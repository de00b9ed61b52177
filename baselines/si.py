"""Scale-invariant loss balancing (SI): ``sum_i log L_i`` with equal weights (IGB eq. 2)."""

from __future__ import annotations

import torch

from mtl_envs.training.weighting import Weighting


class SI(Weighting):
    loss_mode = "log"

    def weights(self, losses: torch.Tensor, learner) -> torch.Tensor:
        return torch.ones_like(losses)
