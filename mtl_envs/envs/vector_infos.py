"""Info dicts and autoreset modes of the native vector envs, in Gymnasium 1.x's layout.

Gymnasium's vector envs return one dict of per-slot arrays, each key ``k`` with a bool mask
``_k`` marking the slots that set it. With ``SAME_STEP`` autoreset (what ``SyncVectorEnv``
does in that mode), a slot whose episode ended in a step reports the *reset's* info at the
top level, and the step's own info under ``final_info`` (a dict of the same layout, masked
to the ended slots), beside ``final_obs`` (an object array holding the ended slots' last
observations, None elsewhere). With ``NEXT_STEP`` autoreset (Gymnasium's default) an ended
slot is reset by the next step, which ignores its action and reports the reset's
observation and info, reward 0 and neither ``terminated`` nor ``truncated``. With
``DISABLED`` autoreset an ended slot stays ended until ``reset(options={"reset_mask": ...})``
restarts it. Gymnasium's vector observation wrappers take the last two.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from mtl_envs.errors import ConfigError

AUTORESET_MODES = (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED)


def check_autoreset_mode(value: Any) -> AutoresetMode:
    """``value`` (an ``AutoresetMode`` or its name as text, ``"SameStep"``) as the mode."""
    try:
        mode = AutoresetMode(value)
    except ValueError:
        mode = None
    if mode not in AUTORESET_MODES:
        names = [m.value for m in AUTORESET_MODES]
        raise ConfigError(
            f"`autoreset_mode` must be one of {names} (gymnasium.vector.AutoresetMode); got "
            f"{value!r}."
        )
    return mode


def reset_mask(options: dict[str, Any], num_envs: int) -> np.ndarray:
    """The slots a reset restarts: ``options["reset_mask"]`` (Gymnasium's partial reset), a
    bool array of shape (num_envs,) with a slot set (``SyncVectorEnv`` refuses a mask that
    restarts nothing), or every slot when it is absent."""
    if "reset_mask" not in options:
        return np.ones(num_envs, dtype=bool)
    mask = np.asarray(options["reset_mask"])
    if mask.shape != (num_envs,) or mask.dtype != np.bool_:
        raise ConfigError(
            f"`options['reset_mask']` must be a bool array of shape ({num_envs},); got "
            f"{options['reset_mask']!r}."
        )
    if not mask.any():
        raise ConfigError(
            f"`options['reset_mask']` must set at least one slot; got {options['reset_mask']!r}. "
            "Leave `options` out to restart every slot."
        )
    return mask


def check_not_ended(ended: np.ndarray) -> None:
    """Refuse a step while slots have ended and wait for their reset (``DISABLED`` mode)."""
    if ended.any():
        slots = np.flatnonzero(ended).tolist()
        named = (
            f"All {len(ended)} slots have"
            if len(slots) == len(ended)
            else f"Slots {slots[:10]}{' and more' if len(slots) > 10 else ''} have"
        )
        raise ConfigError(
            f"{named} ended and autoreset_mode is Disabled: restart them with "
            "reset(options={'reset_mask': mask}) before the next step."
        )


def masked(info: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    """``info``'s per-slot arrays, each with the mask ``mask`` (the slots that set it)."""
    out: dict[str, Any] = {}
    for key, values in info.items():
        out[key] = values
        out[f"_{key}"] = mask.copy()
    return out


def same_step(
    step_info: dict[str, np.ndarray],
    done: np.ndarray,
    final_obs: Any,
    reset_info: dict[str, np.ndarray],
) -> dict[str, Any]:
    """The infos of a vector step whose slots ``done`` ended and were reset in the step.

    Args:
        step_info: the step's per-slot arrays (all slots).
        done: (K,) bool, the slots whose episode ended (terminated or truncated).
        final_obs: the observations the step returned before the resets (an array with a
            leading slot axis, or a dict of such arrays).
        reset_info: the resets' per-slot arrays (read on the ``done`` slots only; callers
            may pass ``{}`` when no slot ended).
    """
    if not done.any():
        return masked(step_info, np.ones_like(done))
    infos = _merge(step_info, reset_info, done)
    last = np.full(len(done), None, dtype=object)
    for k in np.flatnonzero(done):
        if isinstance(final_obs, dict):
            last[k] = {name: values[k] for name, values in final_obs.items()}
        else:
            last[k] = final_obs[k]
    infos["final_obs"] = last
    infos["_final_obs"] = done.copy()
    infos["final_info"] = masked(step_info, done)
    infos["_final_info"] = done.copy()
    return infos


def next_step(
    step_info: dict[str, np.ndarray], reset: np.ndarray, reset_info: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The infos of a ``NEXT_STEP`` vector step in which the slots ``reset`` (K,) bool were
    reset (their episodes ended the step before) and the others stepped: the reset info on
    the first, the step's info on the others, as ``SyncVectorEnv`` lays them out."""
    if not reset.any():
        return masked(step_info, np.ones_like(reset))
    return _merge(step_info, reset_info, reset)


def _merge(
    step_info: dict[str, np.ndarray], reset_info: dict[str, np.ndarray], reset: np.ndarray
) -> dict[str, Any]:
    """The step's info on the slots not in ``reset``, the reset info on those in it: a key
    both set holds each slot's own value, and a key no slot sets is left out."""
    infos = masked({k: np.array(v, copy=True) for k, v in step_info.items()}, ~reset)
    for key, values in reset_info.items():
        values = np.asarray(values)
        if key in infos:
            where = reset.reshape(-1, *([1] * (values.ndim - 1)))
            infos[key] = np.where(where, values, infos[key])
            infos[f"_{key}"] = infos[f"_{key}"] | reset
        else:
            infos[key] = values
            infos[f"_{key}"] = reset.copy()
    for key in [k for k in step_info if not infos[f"_{k}"].any()]:
        del infos[key], infos[f"_{key}"]  # no slot sets it (Gymnasium leaves it out)
    return infos


def unbatch(infos: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """One plain dict per slot from a vector info dict: each key where its mask is set
    (a key without a mask counts for every slot); ``final_*`` entries are left out. A
    dict-valued key (Gymnasium lays out a slot's dict info as a vector info dict of its own,
    as ``RecordEpisodeStatistics`` does for ``episode``) becomes each slot's own dict."""
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, values in infos.items():
        if (isinstance(key, str) and key.startswith("_")) or key in ("final_obs", "final_info"):
            continue
        mask = infos.get(f"_{key}", np.ones(num_envs, dtype=bool))
        per_slot = unbatch(values, num_envs) if isinstance(values, dict) else values
        for i in np.flatnonzero(mask):
            out[i][key] = per_slot[i]
    return out
