"""Non-RL methods, one file each, in one registry: name -> ``run(config, seed) -> result``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from baselines import human, random_labels, stl

BASELINES: dict[str, Callable[..., dict[str, Any]]] = {
    "stl": stl.run,
    "human": human.run,
    "random": random_labels.run,
}

__all__ = ["BASELINES"]
