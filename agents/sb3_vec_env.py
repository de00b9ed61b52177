"""Drive a Gymnasium ``VectorEnv`` with Stable-Baselines3.

SB3 has its own ``VecEnv`` API (``reset()`` returns observations only, ``step`` returns a
``dones`` array and a list of info dicts, final observations go in
``info["terminal_observation"]``), so a Gymnasium 1.x vector env needs this small adapter.
It requires ``SAME_STEP`` autoreset, which is SB3's own convention. Attributes and methods
are the native vector env's own, or each slot's under ``SyncVectorEnv`` and ``AsyncVectorEnv``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from mtl_envs.envs.vector_infos import unbatch
from mtl_envs.errors import ConfigError


class SB3VecEnvAdapter(VecEnv):
    """Present a Gymnasium ``VectorEnv`` (SAME_STEP autoreset) as an SB3 ``VecEnv``.

    Args:
        env: the vector env, e.g. ``gym.make_vec(id, num_envs=100,
            vectorization_mode="vector_entry_point")``.

    Seeds and reset options set through :meth:`seed` and :meth:`set_options` apply to the
    next :meth:`reset` (SB3 semantics); all slots share one seed and one options dict.
    """

    def __init__(self, env: VectorEnv):
        mode = env.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ConfigError(
                f"SB3VecEnvAdapter needs a vector env with autoreset_mode SAME_STEP; got {mode!r}."
            )
        self.env = env
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None

    def _unbatch(self, obs: Any, i: int) -> Any:
        if isinstance(obs, dict):
            return {k: v[i] for k, v in obs.items()}
        return obs[i]

    def reset(self):
        seed = self._seeds[0]
        obs, infos = self.env.reset(seed=seed, options=self._options[0] or None)
        self.reset_infos = unbatch(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, infos = self.env.step(self._actions)
        dones = np.logical_or(terminated, truncated)
        info_list = unbatch(infos, self.num_envs)
        # SB3 wants an ended slot's step info (with its last observation); the top level holds
        # its reset's info, which SB3 keeps in reset_infos.
        final_info = unbatch(infos.get("final_info", {}), self.num_envs)
        final_obs = infos.get("final_obs")
        for i in np.flatnonzero(dones):
            # A statistics wrapper's summary of the ended episode (Gymnasium's vector
            # RecordEpisodeStatistics) is where SB3 looks for it: in the step's info.
            episode = info_list[i].pop("episode", None)
            self.reset_infos[i] = info_list[i]
            info_list[i] = final_info[i]
            if episode is not None:
                info_list[i]["episode"] = episode
            info_list[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            if final_obs is not None:
                info_list[i]["terminal_observation"] = final_obs[i]
        return obs, rewards.astype(np.float32), dones, info_list

    def close(self) -> None:
        self.env.close()

    # The slots of a native vector env are not separate objects: attributes are the one
    # vector env's, the same for every slot. A method with an `index` argument answers per
    # slot (LossWeighting's `evaluate(split, index)`, whose slots are independent runs), so
    # it is called once per requested slot; any other method once for all of them. Gymnasium's
    # SyncVectorEnv and AsyncVectorEnv hold one env per slot, and answer per slot.
    def _per_slot_envs(self) -> SyncVectorEnv | AsyncVectorEnv | None:
        base = self.env.unwrapped
        return base if isinstance(base, (SyncVectorEnv, AsyncVectorEnv)) else None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        slots = self._get_indices(indices)
        envs = self._per_slot_envs()
        if envs is not None:
            values = envs.get_attr(attr_name)
            return [values[i] for i in slots]
        value = getattr(self.env.unwrapped, attr_name)
        return [value for _ in slots]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        envs = self._per_slot_envs()
        if envs is None:
            setattr(self.env.unwrapped, attr_name, value)
            return
        values = list(envs.get_attr(attr_name))
        for i in self._get_indices(indices):
            values[i] = value
        envs.set_attr(attr_name, values)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        slots = list(self._get_indices(indices))
        envs = self._per_slot_envs()
        if isinstance(envs, SyncVectorEnv):
            return [
                envs.envs[i].get_wrapper_attr(method_name)(*method_args, **method_kwargs)
                for i in slots
            ]
        if isinstance(envs, AsyncVectorEnv):
            if sorted(slots) != list(range(self.num_envs)):
                raise ConfigError(
                    f"env_method({method_name!r}) on slots {slots}: AsyncVectorEnv calls a "
                    f"method on every slot; use SyncVectorEnv or the native vector form."
                )
            results = envs.call(method_name, *method_args, **method_kwargs)
            return [results[i] for i in slots]
        method = getattr(self.env.unwrapped, method_name)
        try:
            given = inspect.signature(method).bind_partial(*method_args, **method_kwargs)
            per_slot = "index" in inspect.signature(method).parameters
        except (TypeError, ValueError):  # arguments the method does not take: its own error
            given, per_slot = None, False
        if per_slot and given is not None and "index" not in given.arguments:
            return [method(*method_args, index=k, **method_kwargs) for k in slots]
        result = method(*method_args, **method_kwargs)
        return [result for _ in slots]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
