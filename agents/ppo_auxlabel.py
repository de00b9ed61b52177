"""Train an RL-AUX agent with SB3 PPO on the vector AuxLabel env (RL-AUX appendix B).

    python -m harness.train configs/auxlabel_digits_ppo.yaml [key=value ...]   (method: ppo)

The protocol alternates, for ``epochs`` cycles:

1. one *train-agent* epoch: the canonical main network is restored, PPO labels every batch,
   the main network trains on the labels and PPO learns from the rewards;
2. one *train-main* epoch: the deterministic policy labels every batch and the main network
   trains on them, then becomes the new canonical model; validation is evaluated (every
   ``eval_every`` cycles), and test once on the final and once on the best-validation
   network.

PPO runs on the natively vectorised env through :class:`~agents.sb3_vec_env.SB3VecEnvAdapter`,
one slot per sample of a batch, so the policy's forward passes are batched. Every slot of a
batch receives that batch's reward (eq. 4), so a rollout must span several batches: SB3
normalises the advantages of each minibatch, and over the 100 transitions of a single batch
(``n_steps=1``) that subtracts the shared reward exactly, leaving a policy update that never
sees the reward. A rollout of ``n_steps`` batches compares the batches' rewards instead; the
default is the largest divisor of the epoch's batches up to 10 (:func:`default_n_steps`), and
``n_steps=1`` is refused unless ``normalize_advantage`` is off. With minibatches of 100 and
10 PPO epochs, the agent takes 10 gradient steps per batch whatever ``n_steps`` is. The paper
gives no rollout length (appendix B). The per-sample form, :class:`AuxLabelEnv`, rewards only
each batch's last image, so there a rollout shorter than a batch still carries the reward.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

import mtl_envs  # noqa: F401  (registers the ids)
from agents.extractors import ImageLabelExtractor
from agents.sb3_vec_env import SB3VecEnvAdapter
from agents.settings import check_agent_values
from harness.config import RunConfig
from harness.lifecycle import run_epochs
from harness.results import run_dir
from mtl_envs.envs.aux_label import AuxLabelVectorEnv
from mtl_envs.errors import ConfigError
from mtl_envs.families import require_family
from mtl_envs.io import atomic_save, save_torch
from mtl_envs.training.losses import weight_from_bin
from mtl_envs.utils import check_kwargs, resolve_device

# RL-AUX appendix B: lr 3e-4, entropy coefficient 0.01; SB3's 10 epochs; minibatches of
# 100 (SB3's default is 64) are this project's choice: one batch of slots each.
# n_steps (batches per rollout) defaults to default_n_steps() of the epoch's batches.
PPO_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "ent_coef": 0.01,
    "n_epochs": 10,
    "batch_size": 100,
    "gamma": 0.99,
}
MAX_DEFAULT_N_STEPS = 10
# Appendix C.2: 256 image features from a backbone that mirrors the main network's (VGG16
# on the paper's ids, with the main network's backbone_kwargs) unless `policy.backbone`
# names another.
POLICY_DEFAULTS: dict[str, Any] = {"image_features": 256}


class RewardStats(BaseCallback):
    """Mean reward and reward terms over the steps of one train-agent epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.sums: dict[str, float] = {}
        self.count = 0

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]
        self.sums["agent/reward"] = self.sums.get("agent/reward", 0.0) + float(
            self.locals["rewards"][0]
        )
        for key in ("primary_eval_loss", "label_entropy", "train_aux_loss"):
            if key in info:
                self.sums[f"agent/{key}"] = self.sums.get(f"agent/{key}", 0.0) + float(info[key])
        self.count += 1
        return True

    def pop(self) -> dict[str, float]:
        out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


class AlternatingState:
    """What a resumed alternating run needs at an epoch boundary: the agent (policy,
    optimiser, step counters), the main network's learner and its canonical snapshot."""

    def __init__(self, model: PPO, env: AuxLabelVectorEnv):
        self.model, self.env = model, env

    def state_dict(self) -> dict[str, Any]:
        return {
            "agent": self.model.get_parameters(),
            "num_timesteps": self.model.num_timesteps,
            "n_updates": self.model._n_updates,
            "learner": self.env.learner.state_dict(),
            "canonical": self.env.task.canonical,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.set_parameters(state["agent"], exact_match=True, device=self.model.device)
        self.model.num_timesteps = state["num_timesteps"]
        self.model._n_updates = state["n_updates"]
        self.env.learner.load_state_dict(state["learner"])
        self.env.task.canonical = state["canonical"]
        # The next reset continues this run: no fresh network, no seed from construction.
        self.env.continue_run()
        self.model.get_env()._reset_seeds()


def action_metrics(env: AuxLabelVectorEnv, actions: np.ndarray) -> dict[str, float]:
    """What a train-main epoch's deterministic actions (N, 1 or 2) did: label classes used
    and, on the weighted ids, the mean sample weight (RL-AUX eq. 8) and the share above 1."""
    task = env.task
    used = np.bincount(actions[:, 0], minlength=task.num_labels)
    metrics = {"agent/label_classes_used": float((used > 0).sum())}
    if task.sample_weights:
        bins = torch.as_tensor(actions[:, 1])
        weights = weight_from_bin(bins, task.weight_bins, task.weight_exponent_range)
        metrics["agent/mean_weight"] = float(weights.mean())
        metrics["agent/share_weight_above_1"] = float((weights > 1).float().mean())
    return metrics


def default_n_steps(batches: int, cap: int = MAX_DEFAULT_N_STEPS) -> int:
    """The largest divisor of an epoch's ``batches`` up to ``cap``: the most batches one
    rollout can hold without spilling into the next epoch (12 batches give 6, 50 give 10,
    450 give 10, a prime 13 gives 1)."""
    return max(d for d in range(1, min(batches, cap) + 1) if batches % d == 0)


def rollout_settings(agent: dict[str, Any], batches: int) -> dict[str, Any]:
    """``agent`` with ``n_steps`` resolved for an epoch of ``batches`` batches; raises
    ``ConfigError`` on a rollout that spills into the next epoch or that the advantage
    normalisation makes blind to the reward (one batch, one shared reward)."""
    agent = {**agent}
    agent.setdefault("n_steps", default_n_steps(batches))
    n_steps = agent["n_steps"]
    if batches % n_steps:
        # PPO collects n_steps per rollout; a rollout must not spill into the next epoch.
        raise ConfigError(
            f"`agent.n_steps` ({n_steps}) must divide the {batches} batches of an epoch; "
            f"valid choices: {[d for d in range(1, batches + 1) if batches % d == 0]}."
        )
    if n_steps == 1 and agent.get("normalize_advantage", True):
        raise ConfigError(
            "`agent.n_steps` (1) makes each rollout one batch, whose slots share one reward: "
            "SB3's advantage normalisation subtracts it and the policy never learns from "
            f"the reward. Use n_steps >= 2 (a divisor of the {batches} batches of an epoch) "
            "or normalize_advantage: false."
        )
    return agent


def make_vector_env(config: RunConfig) -> AuxLabelVectorEnv:
    """``gym.make_vec`` of the config's AuxLabel id with one slot per batch sample."""
    family = require_family(config.env_id, "AuxLabel")
    learner_config = family.learner_config(config.env_id, config.env_kwargs)
    env = gym.make_vec(
        config.env_id,
        num_envs=learner_config.train_batch_size,
        vectorization_mode="vector_entry_point",
        **config.env_kwargs,
    )
    if not isinstance(env.unwrapped, AuxLabelVectorEnv):
        raise ConfigError(f"`env_id` {config.env_id!r} is not an AuxLabel environment.")
    return env


def check_config(config: RunConfig) -> None:
    """Fail before anything trains on ``agent``/``policy`` keys SB3's PPO or the extractor
    does not take, and on an episode budget the protocol cannot honour."""
    check_kwargs(
        "agent",
        config.agent,
        PPO,
        owner="SB3 PPO",
        fixed=("policy", "env", "seed", "verbose", "policy_kwargs"),
    )
    check_agent_values(config.agent)
    check_kwargs(
        "policy",
        config.policy,
        ImageLabelExtractor,
        owner="ImageLabelExtractor",
        fixed=("observation_space",),
    )
    settings = config.env_settings()
    if settings.get("restore", "epoch") == "none":
        raise ConfigError(
            "`env_kwargs.restore` 'none' lets the train-agent epoch train the canonical main "
            "network, which the alternating protocol restores before it (two main epochs "
            "per cycle); use 'epoch' (default) or 'batch'."
        )
    if settings.get("max_batches") is not None:
        raise ConfigError(
            f"`env_kwargs.max_batches` ({settings['max_batches']}) cuts the epochs the "
            "alternating protocol counts as whole (a train-main epoch would restart inside "
            "one cycle); use `env_kwargs.train_subset` for shorter epochs."
        )


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    """Train PPO with the alternating protocol; returns (and writes) the result dict."""
    check_config(config)
    vec = make_vector_env(config)
    env = vec.unwrapped
    venv = SB3VecEnvAdapter(vec)
    agent_kwargs = rollout_settings({**PPO_DEFAULTS, **config.agent}, env.learner.num_batches)
    main = env.learner.config
    mirror = {"backbone": main.backbone, "backbone_kwargs": dict(main.backbone_kwargs)}
    policy_cfg = {**POLICY_DEFAULTS, **({} if "backbone" in config.policy else mirror)}
    policy_cfg.update(config.policy)
    policy_kwargs = {
        "features_extractor_class": ImageLabelExtractor,
        "features_extractor_kwargs": policy_cfg,
        "net_arch": [],  # linear action and value layers (appendix C.2)
    }
    device = agent_kwargs.pop("device", str(resolve_device("auto")))
    model = PPO(
        "MultiInputPolicy",
        venv,
        seed=seed,
        device=device,
        policy_kwargs=policy_kwargs,
        verbose=0,
        **agent_kwargs,
    )
    out = run_dir(config, "ppo", seed)
    out.mkdir(parents=True, exist_ok=True)  # the agent is saved after every cycle
    if config.tensorboard:
        from stable_baselines3.common.logger import configure

        model.set_logger(configure(str(out / "tb_agent"), ["tensorboard"]))
    stats = RewardStats()
    steps_per_epoch = env.learner.num_batches * venv.num_envs

    def train_epoch(epoch: int) -> dict[str, float]:
        lr = env.learner.lr  # the cycle's rate: the train-main epoch's end steps the schedule
        # 1) train-agent epoch from the canonical model; clearing _last_obs makes SB3 reset
        # the env (with the options below) at the start of learn(), as SB3's set_env does.
        venv.set_options({"mode": "train_agent"})
        model._last_obs = None
        model.learn(steps_per_epoch, callback=stats, reset_num_timesteps=False)
        metrics = stats.pop()
        # 2) train-main epoch with the deterministic policy.
        venv.set_options({"mode": "train_main"})
        obs = venv.reset()
        chosen = []
        for _ in range(env.learner.num_batches):
            actions, _ = model.predict(obs, deterministic=True)
            chosen.append(np.asarray(actions).reshape(venv.num_envs, -1))
            obs, _, _, infos = venv.step(actions)
            if any(info.get("diverged") for info in infos):
                # The main network diverged: the env truncated the epoch and went back to
                # the canonical network, which would go on without a word. A non-finite
                # metric makes run_epochs record the epoch as the diverged one and stop.
                metrics["train/loss"] = math.nan
                break
        metrics.update(action_metrics(env, np.concatenate(chosen)))
        metrics["train/lr"] = lr
        atomic_save(out / "agent.zip", model.save)
        save_torch(out / "main_net.pt", env.task.canonical)
        return metrics

    try:
        return run_epochs(
            config=config,
            method="ppo",
            seed=seed,
            train_epoch=train_epoch,
            evaluate=env.evaluate,
            extra={"agent": agent_kwargs, "policy": policy_cfg},
            state=AlternatingState(model, env),
            models=lambda: [env.learner.net],  # the env's seeded reset builds a new one
        )
    finally:
        venv.close()
