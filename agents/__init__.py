"""RL agents for the mtl-envs environments (Stable-Baselines3), in one registry.

Imports stay lazy so ``import agents`` is cheap: ``AGENTS`` maps a method name to the dotted
path of its ``run(config, seed)`` function.
"""

AGENTS: dict[str, str] = {
    "ppo": "agents.ppo:run",  # RL-AUX on AuxLabel ids, group selection on TaskGrouping ids
    "igbv2": "agents.sac_lossweighting:run",  # IGBv2 (SAC) on LossWeighting ids
}

__all__ = ["AGENTS"]
