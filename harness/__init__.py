"""The experiment harness above envs, agents and baselines: run configs, results,
comparisons, the policy-sensitivity probe and the ``mtl-envs`` command.

Nothing under ``mtl_envs/`` imports it.
"""
