"""Value checks of the SB3 hyperparameters a run config sets (``agent:``).

SB3 checks few values itself, and those with ``assert``: a zero batch size or a discount of
5 would train on garbage, a learning rate of ``"abc"`` fails deep inside the algorithm. Each
runner checks its ``agent`` settings here before anything trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtl_envs.errors import ConfigError
from mtl_envs.utils import check_bool, check_int, check_number, is_finite_number, is_int

POSITIVE_INTS = ("batch_size", "n_steps", "n_epochs", "buffer_size", "target_update_interval")
UNIT_INTERVAL = ("gamma", "gae_lambda", "tau")  # in [0, 1]
POSITIVE_NUMBERS = ("learning_rate", "clip_range", "max_grad_norm")
NON_NEGATIVE_NUMBERS = ("vf_coef",)
BOOLS = ("normalize_advantage", "use_sde", "use_sde_at_warmup", "optimize_memory_usage")


def check_agent_values(agent: Mapping[str, Any], *, learned_entropy: bool = False) -> None:
    """Raise ``ConfigError`` naming ``agent.<key>`` for a value SB3 would misuse.

    ``learned_entropy``: the algorithm can learn its entropy coefficient (SAC's ``"auto"``);
    PPO's must be a number, or it fails mid-training."""
    for key in BOOLS:
        if key in agent:
            check_bool(f"agent.{key}", agent[key])  # "false" would read as True
    for key in POSITIVE_INTS:
        if key in agent:
            check_int(f"agent.{key}", agent[key])
    for key in POSITIVE_NUMBERS:
        if key in agent:
            check_number(f"agent.{key}", agent[key], strict=True)
    for key in NON_NEGATIVE_NUMBERS:
        if key in agent:
            check_number(f"agent.{key}", agent[key])
    for key in UNIT_INTERVAL:
        value = agent.get(key, 0.0)
        if not (is_finite_number(value) and 0.0 <= value <= 1.0):
            raise ConfigError(f"`agent.{key}` must be a number in [0, 1]; got {value!r}.")
    if "gradient_steps" in agent:
        steps = agent["gradient_steps"]
        if not (is_int(steps) and (steps >= 1 or steps == -1)):
            raise ConfigError(
                f"`agent.gradient_steps` must be a positive int, or -1 (as many as env steps); "
                f"got {steps!r}."
            )
    if "ent_coef" in agent:
        coef = agent["ent_coef"]
        learned = isinstance(coef, str) and (coef == "auto" or coef.startswith("auto_"))
        if not (learned and learned_entropy) and not (is_finite_number(coef) and coef >= 0):
            kinds = ", or 'auto' / 'auto_<initial>'" if learned_entropy else ""
            raise ConfigError(
                f"`agent.ent_coef` must be a non-negative number{kinds}; got {coef!r}."
            )
    if "train_freq" in agent:
        freq = agent["train_freq"]
        if is_int(freq):
            freq = [freq, "step"]
        if not (
            isinstance(freq, (list, tuple))
            and len(freq) == 2
            and is_int(freq[0])
            and freq[0] >= 1
            and freq[1] in ("step", "episode")
        ):
            raise ConfigError(
                f"`agent.train_freq` must be [n, 'step'] or [n, 'episode'] with n a positive "
                f"int; got {agent['train_freq']!r}."
            )
