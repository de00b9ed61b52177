"""Random Loss Weighting (RLW), Lin et al. (2022): ``w = n * softmax(z)``, z ~ N(0, I) per batch.

The weights are drawn from the learner's generator, so a seeded run is reproducible.
"""

from __future__ import annotations

from typing import Any

import torch

from baselines.loss_weighting import run_weighting_baseline
from harness.config import RunConfig
from mtl_envs.training.weighting import Weighting, random_weights


class RLW(Weighting):
    loss_mode = "sum"

    def weights(self, losses: torch.Tensor, learner) -> torch.Tensor:
        return random_weights(len(losses), learner.generator, losses.device)


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_weighting_baseline(config, seed, "rlw", RLW)
