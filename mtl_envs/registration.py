"""Every environment id of the suite, registered in one place with string entry points.

Nothing is imported or built until ``gym.make``; registered kwargs stay small and JSON-able.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

AUX_LABEL_DATASETS: dict[str, dict] = {
    # The paper's settings (appendix B-C): VGG16 main network.
    "CIFAR100": {"dataset": "cifar100", "backbone": "vgg16"},
    "CIFAR10": {"dataset": "cifar10", "backbone": "vgg16"},
    "SVHN": {"dataset": "svhn", "backbone": "vgg16"},
    # CPU-sized: small CNN with momentum so a few epochs on 1,200 images learn something.
    "Digits": {"dataset": "digits", "backbone": "small_cnn", "momentum": 0.9},
}


def register_envs() -> None:
    for name, kwargs in AUX_LABEL_DATASETS.items():
        for prefix, extra in (("AuxLabel", {}), ("AuxLabelWeighted", {"sample_weights": True})):
            env_id = f"{prefix}-{name}-v0"
            if env_id in registry:
                continue
            register(
                id=env_id,
                entry_point="mtl_envs.envs.aux_label:AuxLabelEnv",
                vector_entry_point="mtl_envs.envs.aux_label:AuxLabelVectorEnv",
                kwargs={**kwargs, **extra},
            )


def registered_ids() -> list[str]:
    """The ids this package registers, in registry order."""
    prefixes = ("AuxLabel-", "AuxLabelWeighted-")
    return [env_id for env_id in registry if env_id.startswith(prefixes)]
