"""Dynamic Weight Average (DWA), Liu, Johns and Davison (2019).

``w_i = n * softmax(r_i / T)`` with ``r_i = Lbar_i(e-1) / Lbar_i(e-2)``, the ratio of the two
previous epochs' mean losses, and temperature T = 2; equal weights for the first two epochs.
This is the paper's epoch-level rule; the code IGB's comparison ran with (IGB4MTL, from the
Nash-MTL code base) takes the ratio of two 25-batch windows instead. ``dwa_si`` puts the same
weights (ratios of the plain epoch losses) on the log losses, ``sum_i w_i log L_i`` (IGB eq. 2),
IGB Table 4's "DWA + SI".
"""

from __future__ import annotations

from typing import Any

import torch

from baselines.loss_weighting import run_weighting_baseline
from harness.config import RunConfig
from mtl_envs.errors import ConfigError
from mtl_envs.training.weighting import Weighting, softmax_weights


class DWA(Weighting):
    def __init__(self, temperature: float = 2.0, scale_invariant: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"`temperature` must be positive; got {temperature!r}.")
        self.temperature = temperature
        self.loss_mode = "log" if scale_invariant else "sum"

    def weights(self, losses: torch.Tensor, learner) -> torch.Tensor:
        history = learner.loss_history
        if len(history) < 2:
            return torch.ones_like(losses)
        ratio = history[-1] / history[-2].clamp_min(1e-12)
        return softmax_weights(ratio / self.temperature)


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_weighting_baseline(config, seed, "dwa", DWA)


def run_si(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_weighting_baseline(config, seed, "dwa_si", lambda: DWA(scale_invariant=True))
