"""Dynamic Weight Average (DWA), Liu, Johns and Davison (2019).

``w_i = n * softmax(r_i / T)`` with ``r_i = Lbar_i(e-1) / Lbar_i(e-2)``, the ratio of the two
previous epochs' mean losses, and temperature T = 2; equal weights for the first two epochs.
"""

from __future__ import annotations

import torch

from mtl_envs.training.weighting import Weighting, softmax_weights


class DWA(Weighting):
    loss_mode = "sum"

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"`temperature` must be positive; got {temperature!r}.")
        self.temperature = temperature

    def weights(self, losses: torch.Tensor, learner) -> torch.Tensor:
        history = learner.loss_history
        if len(history) < 2:
            return torch.ones_like(losses)
        ratio = history[-1] / history[-2].clamp_min(1e-12)
        return softmax_weights(ratio / self.temperature)
