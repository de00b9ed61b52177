"""mtl-envs: Gymnasium environments that wrap multi-task-learning training loops as MDPs.

Importing the package registers its environment ids and does nothing else::

    import gymnasium as gym
    import mtl_envs  # noqa: F401

    env = gym.make("AuxLabel-Digits-v1")

``gym.make("mtl_envs:AuxLabel-Digits-v1")`` imports the package for you.
"""

from mtl_envs.registration import register_envs, registered_ids
from mtl_envs.scores import normalized_score, reference_ids, reference_scores, scale_errors

__version__ = "0.1.0"

register_envs()

__all__ = [
    "__version__",
    "normalized_score",
    "reference_ids",
    "reference_scores",
    "registered_ids",
    "scale_errors",
]
