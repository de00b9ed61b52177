"""Gymnasium environments: thin MDP shells over the learners in ``mtl_envs.training``."""
