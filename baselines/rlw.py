"""Random Loss Weighting (RLW), Lin et al. (2022): ``w = n * softmax(z)``, z ~ N(0, I) per batch.

The weights are drawn from the learner's generator, so a seeded run is reproducible.
"""

from __future__ import annotations

import torch

from mtl_envs.training.weighting import Weighting, random_weights


class RLW(Weighting):
    loss_mode = "sum"

    def weights(self, losses: torch.Tensor, learner) -> torch.Tensor:
        return random_weights(len(losses), learner.generator, losses.device)
