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


LOSS_WEIGHTING_DATASETS: dict[str, dict] = {
    # CPU-sized: 12 batches per epoch; warm-up 2 + SAC from epoch 4, acting from epoch 6.
    "Digits10": {"dataset": "digits10", "backbone": "small_cnn", "epochs": 30},
    # 65 schools, 4 students per school per batch, an MLP encoder.
    "Exam": {"dataset": "exam", "backbone": "mlp", "batch_size": 260, "epochs": 40},
    # 20 superclass tasks, 5 images each per batch.
    "CIFAR100MTL": {"dataset": "cifar100_mtl", "backbone": "small_cnn", "epochs": 50},
    # Tabular tasks with metadata (hypernetwork paper): a shared trunk of three ReLU layers
    # of 32 with one output layer per task; model="hypernet" trains the hypernetwork instead.
    "Cubic": {"dataset": "cubic", "model": "hard_sharing", "batch_size": 60, "epochs": 100},
    "RobotArm": {"dataset": "robot_arm", "model": "hard_sharing", "batch_size": 60, "epochs": 60},
    "HSB": {"dataset": "hsb", "model": "hard_sharing", "batch_size": 320, "epochs": 30},
    # Where the weights matter on a CPU (docs/headroom.md): 20 cubics of 60 points whose
    # target scales span 2 decades (loss scales 4, as IGB's QM9 targets), scored by the mean
    # normalised MSE; rewards from the validation loss, which rank runs as their test error.
    "CubicScales": {
        "dataset": "cubic",
        "dataset_kwargs": {"samples_per_task": 60, "scale_decades": 2},
        "model": "hard_sharing",
        "batch_size": 60,
        "epochs": 100,
        "reward": "val",
    },
    "Radon": {"dataset": "radon", "model": "hard_sharing", "batch_size": 92, "epochs": 60},
}


TASK_GROUPING_DATASETS: dict[str, dict] = {
    # The shipped table of all 1,023 groups (mtl_envs/tables/digits10_gains.json).
    "Digits10": {"dataset": "digits10", "gains": "table", "budget": 3},
    # No table: ETAP fitted on 10 trained groups (cached under the data root).
    "CIFAR100MTL": {
        "dataset": "cifar100_mtl",
        "gains": "etap",
        "budget": 3,
        "etap_train_groups": 10,
        "protocol": {"backbone": "small_cnn", "backbone_kwargs": {}, "epochs": 2},
    },
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
    for name, kwargs in TASK_GROUPING_DATASETS.items():
        env_id = f"TaskGrouping-{name}-v1"
        if env_id not in registry:
            register(
                id=env_id, entry_point="mtl_envs.envs.task_grouping:TaskGroupingEnv", kwargs=kwargs
            )
    for name, kwargs in LOSS_WEIGHTING_DATASETS.items():
        env_id = f"LossWeighting-{name}-v1"
        if env_id not in registry:
            register(
                id=env_id,
                entry_point="mtl_envs.envs.loss_weighting:LossWeightingEnv",
                kwargs=kwargs,
            )


def registered_ids() -> list[str]:
    """The ids this package registers, in registry order."""
    prefixes = ("AuxLabel-", "AuxLabelWeighted-", "LossWeighting-", "TaskGrouping-")
    return [env_id for env_id in registry if env_id.startswith(prefixes)]
