"""IGBv1 (IGB, Algorithm 1, eq. 3): ``w = n * softmax(L / L_base)`` on the log losses.

Equal weights for the first two epochs; L_base = the mean batch losses of the second epoch.
Tasks further from their (assumed zero) ideal loss, relative to their own scale, get more
weight.
"""

from __future__ import annotations

from typing import Any

import torch

from baselines.loss_weighting import run_weighting_baseline
from harness.config import RunConfig
from mtl_envs.training.weighting import Weighting, softmax_weights


class IGBv1(Weighting):
    loss_mode = "log"

    def weights(self, losses: torch.Tensor, learner) -> torch.Tensor:
        if learner.base_losses is None:
            return torch.ones_like(losses)
        return softmax_weights(losses / learner.base_losses)


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_weighting_baseline(config, seed, "igbv1", IGBv1)
