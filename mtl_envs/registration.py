"""Every environment id of the suite, registered in one place with string entry points.

Nothing is imported or built until ``gym.make``; registered kwargs stay small and JSON-able.
The ids come from the family descriptors in :mod:`mtl_envs.families`.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from mtl_envs.families import FAMILIES


def register_envs() -> None:
    for family in FAMILIES.values():
        for env_id in family.ids():
            if env_id in registry:
                continue
            register(
                id=env_id,
                entry_point=family.entry_point,
                vector_entry_point=family.vector_entry_point,
                kwargs=family.kwargs(env_id),
            )


def registered_ids() -> list[str]:
    """The ids this package registers, in registry order."""
    ours = {env_id for family in FAMILIES.values() for env_id in family.ids()}
    return [env_id for env_id in registry if env_id in ours]
