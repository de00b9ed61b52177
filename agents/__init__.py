"""RL agents for the mtl-envs environments (Stable-Baselines3), in one registry.

Imports stay lazy so ``import agents`` is cheap: ``AGENTS`` maps a method name to the dotted
path of its ``run(config, seed)`` function.
"""

AGENTS: dict[str, str] = {
    "ppo": "agents.train:run",
}

__all__ = ["AGENTS"]
