"""PPO on the TaskGrouping env: learn which groups to train under each budget.

    mtl-envs run configs/taskgrouping_digits10_ppo.yaml

For every budget in ``method_kwargs.budgets`` a fresh agent trains for ``agent.total_timesteps``
env steps (episodes of at most ``budget`` steps, rewards from the gains of the env's
``gain_split``: validation by default), then its deterministic policy selects the groups,
which are scored on the test gains like every other grouping method. With
``env_kwargs.gain_split: test`` the agent learns from the gains it is scored on: an oracle,
and its results say so.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
from stable_baselines3 import PPO

import mtl_envs  # noqa: F401
from agents.settings import check_agent_values
from baselines.grouping import GroupingProblem, env_settings, run_selection
from baselines.grouping import check_config as check_table
from harness.config import RunConfig
from harness.results import portable_kwargs, run_dir
from mtl_envs.utils import check_int, check_kwargs, resolve_device

# Short episodes: small rollouts, a few epochs per update.
PPO_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "n_steps": 256,
    "batch_size": 64,
    "n_epochs": 10,
    "gamma": 1.0,
    "ent_coef": 0.01,
    "total_timesteps": 20_000,
}


def check_config(config: RunConfig) -> None:
    """Fail before anything trains on ``agent`` keys SB3's PPO does not take, or on an id
    without a gain table to score the selection on."""
    check_table(config)
    agent = {k: v for k, v in config.agent.items() if k != "total_timesteps"}
    check_kwargs("agent", agent, PPO, owner="SB3 PPO", fixed=("policy", "env", "seed", "verbose"))
    check_agent_values(agent)
    check_int("agent.total_timesteps", config.agent.get("total_timesteps", 1))


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    check_config(config)
    kwargs = {**PPO_DEFAULTS, **config.agent}
    steps = kwargs.pop("total_timesteps")
    device = kwargs.pop("device", str(resolve_device("auto")))
    # Compared on resume: the data path is the machine's, not the run's.
    settings = {k: v for k, v in portable_kwargs(env_settings(config)).items() if k != "budget"}
    resolved = {"agent": {**kwargs, "total_timesteps": steps}, "env": settings}

    def select(problem: GroupingProblem, budget: int, s: int) -> tuple[list, dict[str, Any]]:
        env = gym.make(config.env_id, **{**config.env_kwargs, "budget": budget})
        model = PPO(
            "MultiInputPolicy", env, seed=s, device=device, verbose=0, **copy.deepcopy(kwargs)
        )
        if config.tensorboard:  # the agent's learning curve, beside the budget's result
            from stable_baselines3.common.logger import configure

            out = run_dir(config, "ppo", seed, f"B={budget}") / "tb_agent"
            model.set_logger(configure(str(out), ["tensorboard"]))
        model.learn(steps)
        model.logger.close()
        obs, _ = env.reset(seed=s)
        done, info = False, {"selected": []}
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        env.close()
        groups = [tuple(g) for g in info["selected"]]
        return groups, resolved

    return run_selection(config, seed, "ppo", select, settings=resolved)
