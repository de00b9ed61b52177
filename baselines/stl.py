"""Single-task learning (STL): the primary task alone, no auxiliary loss.

The "no auxiliary task" reference of RL-AUX section 5 (figure 4: 71.86% on CIFAR-100-20).
"""

from __future__ import annotations

from typing import Any

from baselines.auxiliary import run_aux_baseline
from mtl_envs.experiment import RunConfig


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_aux_baseline(config, seed, "stl", lambda learner, seed: None)
