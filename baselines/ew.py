"""Equal Weighting (EW): minimise ``sum_i L_i``, the reference of IGB's T metric."""

from __future__ import annotations

import torch

from mtl_envs.training.weighting import Weighting


class EW(Weighting):
    loss_mode = "sum"

    def weights(self, losses: torch.Tensor, learner) -> torch.Tensor:
        return torch.ones_like(losses)
