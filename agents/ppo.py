"""PPO: the protocol that fits the env id (RL-AUX for AuxLabel, group selection for
TaskGrouping)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

import mtl_envs  # noqa: F401
from mtl_envs.experiment import RunConfig


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    if gym.spec(config.env_id).entry_point.endswith(":TaskGroupingEnv"):
        from agents.ppo_grouping import run as run_grouping

        return run_grouping(config, seed)
    from agents.ppo_auxlabel import run as run_auxlabel

    return run_auxlabel(config, seed)
