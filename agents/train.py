"""Train the RL agent of a config: ``python -m agents.train CONFIG.yaml [key=value ...]``.

The config's ``method`` picks the agent (``ppo`` for AuxLabel ids, ``igbv2`` for LossWeighting
ids); each seed writes a JSON result, TensorBoard logs and checkpoints under ``output_dir``.
``mtl-envs run`` does the same and also runs baselines listed beside the agent.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from agents import AGENTS
from mtl_envs.experiment import RunConfig, default_metric
from mtl_envs.utils import lookup


def agent_runner(name: str) -> Callable[[RunConfig, int], dict[str, Any]]:
    """The ``run(config, seed)`` function of a registered agent."""
    module, attr = lookup(AGENTS, name, kind="agent").split(":")
    return getattr(importlib.import_module(module), attr)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    config = RunConfig.from_file(argv[0], argv[1:])
    agents = [m for m in config.methods if m in AGENTS] or config.methods
    for name in agents:
        runner = agent_runner(name)
        for seed in config.seeds:
            result = runner(config, seed)
            metric = default_metric([result])
            print(f"{name} seed {seed}: {metric} {result['final'][metric]:.4f}")


if __name__ == "__main__":
    main()
