"""Random Loss Weighting (RLW), Lin et al. (2022): ``w = n * softmax(z)``, z ~ N(0, I) per batch.

The weights are drawn from the learner's generator, so a seeded run is reproducible. ``rlw_si``
puts the same weights on the log losses, ``sum_i w_i log L_i`` (IGB eq. 2), IGB Table 4's
"RLW + SI"; a seed draws the same weights in both, so the pair differs only in the objective.
"""

from __future__ import annotations

from typing import Any

import torch

from baselines.loss_weighting import run_weighting_baseline
from harness.config import RunConfig
from mtl_envs.training.weighting import Weighting, random_weights


class RLW(Weighting):
    def __init__(self, scale_invariant: bool = False) -> None:
        super().__init__()
        self.loss_mode = "log" if scale_invariant else "sum"

    def weights(self, losses: torch.Tensor, learner) -> torch.Tensor:
        return random_weights(len(losses), learner.generator, losses.device)


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_weighting_baseline(config, seed, "rlw", RLW)


def run_si(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_weighting_baseline(config, seed, "rlw_si", lambda: RLW(scale_invariant=True))
