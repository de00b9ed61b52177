"""The three env families, one descriptor each: ids and entry points, the learner an id
trains, its metric names. Nothing else in the package dispatches on the family; the harness
keys its method registry by ``EnvFamily.name``.

Adding a dataset to a family is one entry in its ``datasets`` (and the dataset's reader);
adding a family is one env module, one descriptor here and its methods in the harness's
registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mtl_envs.errors import ConfigError
from mtl_envs.utils import suggest


def higher_is_better(metric: str) -> bool:
    """Accuracy-like scores and gains go up; losses, errors, Δm and times go down."""
    leaf = metric.rsplit("/", 1)[-1]
    return leaf.endswith(("accuracy", "precision", "recall", "f1", "gain", "score"))


@dataclass(frozen=True)
class EnvFamily:
    """One MDP and the ids registered for it."""

    name: str
    """``AuxLabel``, ``LossWeighting`` or ``TaskGrouping``: the key of the method registry."""
    entry_point: str
    vector_entry_point: str | None
    version: str
    datasets: Mapping[str, dict[str, Any]]
    """Id name (``CIFAR100``) -> registered kwargs."""
    variants: Mapping[str, dict[str, Any]]
    """Id prefix -> kwargs every id of that prefix adds (``AuxLabelWeighted``)."""
    metrics: tuple[str, ...]
    """Headline result metrics, in order of preference (``test/accuracy``, ...)."""
    split_kwargs: str | None
    """``module:function`` splitting constructor kwargs into (env arguments, learner config)."""
    check_kwargs: str
    """``module:function`` checking a whole kwargs dict (registered ones and overrides) as
    the constructor would, without loading data or building networks: for runs whose method
    builds no env, whose settings would otherwise go unchecked."""
    probe_policies: tuple[str, ...] = ()
    """The reference policies ``mtl-envs probe`` runs by default (``best_fixed``: the best
    constant weight vector of a grid, by validation metric)."""
    episode_is_run: bool = True
    """Whether one episode is one whole training run (a probe run is then one episode);
    ``False`` where an episode is one epoch of a longer run (a probe run is then
    ``--episodes`` epochs of one network, with ``probe_env_kwargs``)."""
    probe_env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Env kwargs a probe run adds: AuxLabel's ``restore="none"``, so that the epochs train
    one network on the policy's labels rather than restarting it."""
    earlier_versions: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Earlier versions kept registered beside ``version`` so that results recorded on them
    reproduce: version -> the kwargs that give back its dynamics (``gym.make`` warns that
    such an id is out of date)."""

    def ids(self) -> list[str]:
        """Every registered id of the family: the current version's, then earlier ones'."""
        versions = [self.version, *self.earlier_versions]
        return [
            f"{prefix}-{name}-{version}"
            for version in versions
            for name in self.datasets
            for prefix in self.variants
        ]

    def headline(self, metrics: Mapping[str, Any]) -> str:
        """The first of the family's metrics that an ``evaluate()`` output holds, by its name
        without the split (``mean_nmse``)."""
        for name in self.metrics:
            key = name.split("/", 1)[1]
            if key in metrics:
                return key
        raise ConfigError(
            f"No {self.name} headline metric ({list(self.metrics)}) among {sorted(metrics)}."
        )

    def selection_metric(self, metrics: Mapping[str, Any]) -> tuple[str, int]:
        """The validation score that picks a run's best epoch and its direction (+1: higher
        is better): the first of the family's metrics that ``metrics`` holds on the
        validation split. (IGB picks its epoch by validation Δm against STL, eq. 5, which a
        run cannot compute without the STL runs of its seed; ``docs/results.md`` scores the
        LossWeighting runs both at this epoch and at the last.)"""
        for name in self.metrics:
            key = "val/" + name.split("/", 1)[1]
            if key in metrics:
                return key, 1 if higher_is_better(key) else -1
        raise ConfigError(f"No {self.name} validation score among {sorted(metrics)}.")

    def kwargs(self, env_id: str) -> dict[str, Any]:
        """The registered kwargs of one of the family's ids."""
        prefix, name, version = env_id.split("-")
        return {
            **self.datasets[name],
            **self.variants[prefix],
            **self.earlier_versions.get(version, {}),
        }

    def check(self, env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> None:
        """Raise ``ConfigError`` if ``gym.make(env_id, **env_kwargs)`` would refuse its
        arguments (an unknown key, a value outside its choices)."""
        from gymnasium import spec

        module, attr = self.check_kwargs.split(":")
        getattr(importlib.import_module(module), attr)(
            {**spec(env_id).kwargs, **(env_kwargs or {})}
        )

    def learner_config(
        self, env_id: str, env_kwargs: Mapping[str, Any] | None = None, **overrides: Any
    ) -> Any:
        """The config of the learner ``gym.make(env_id, **env_kwargs)`` builds, with
        ``overrides`` (learner fields a method fixes itself) applied last."""
        if self.split_kwargs is None:
            raise ConfigError(f"{self.name} envs train no single learner.")
        from gymnasium import spec

        module, attr = self.split_kwargs.split(":")
        split = getattr(importlib.import_module(module), attr)
        return split({**spec(env_id).kwargs, **(env_kwargs or {}), **overrides})[1]


FAMILIES: dict[str, EnvFamily] = {
    "AuxLabel": EnvFamily(
        name="AuxLabel",
        entry_point="mtl_envs.envs.aux_label:AuxLabelEnv",
        vector_entry_point="mtl_envs.envs.aux_label:AuxLabelVectorEnv",
        version="v1",
        # v0's agent saw the stored image, not the augmented view its batch trained on.
        earlier_versions={"v0": {"observed_image": "raw"}},
        datasets={
            # The paper's settings (appendix B-C): VGG16 main network.
            "CIFAR100": {"dataset": "cifar100", "backbone": "vgg16"},
            "CIFAR10": {"dataset": "cifar10", "backbone": "vgg16"},
            "SVHN": {"dataset": "svhn", "backbone": "vgg16"},
            # CPU-sized: small CNN with momentum so a few epochs on 1,200 images learn
            # something.
            "Digits": {"dataset": "digits", "backbone": "small_cnn", "momentum": 0.9},
            # Where the labels matter on a CPU (docs/headroom.md): 5,000 CIFAR-100 training
            # images, the small CNN trained 14 epochs with MAXL's SGD (momentum 0.9, weight
            # decay 5e-4) at lr 0.05 and one 10x decay after epoch 8; rewards from the
            # validation loss.
            "CIFAR100Small": {
                "dataset": "cifar100",
                "backbone": "small_cnn",
                "train_subset": 5000,
                "lr": 0.05,
                "momentum": 0.9,
                "weight_decay": 5e-4,
                "scheduler_step_epochs": 8,
                "scheduler_gamma": 0.1,
                "reward": "val",
            },
        },
        variants={"AuxLabel": {}, "AuxLabelWeighted": {"sample_weights": True}},
        metrics=("test/accuracy",),
        split_kwargs="mtl_envs.envs.aux_label:split_env_kwargs",
        check_kwargs="mtl_envs.envs.aux_label:check_env_kwargs",
        probe_policies=("random", "constant", "image_hash", "human"),
        episode_is_run=False,
        probe_env_kwargs={"restore": "none"},
    ),
    "LossWeighting": EnvFamily(
        name="LossWeighting",
        entry_point="mtl_envs.envs.loss_weighting:LossWeightingEnv",
        vector_entry_point="mtl_envs.envs.loss_weighting:LossWeightingVectorEnv",
        version="v1",
        datasets={
            # CPU-sized: 12 batches per epoch; warm-up 2 + SAC from epoch 4, acting from
            # epoch 6.
            "Digits10": {"dataset": "digits10", "backbone": "small_cnn", "epochs": 30},
            # 65 schools, 4 students per school per batch, an MLP encoder.
            "Exam": {"dataset": "exam", "backbone": "mlp", "batch_size": 260, "epochs": 40},
            # 20 superclass tasks, 5 images each per batch.
            "CIFAR100MTL": {"dataset": "cifar100_mtl", "backbone": "small_cnn", "epochs": 50},
            # Tabular tasks with metadata (hypernetwork paper): a shared trunk of three ReLU
            # layers of 32 with one output layer per task; model="hypernet" trains the
            # hypernetwork instead.
            "Cubic": {"dataset": "cubic", "model": "hard_sharing", "batch_size": 60, "epochs": 100},
            "RobotArm": {
                "dataset": "robot_arm",
                "model": "hard_sharing",
                "batch_size": 60,
                "epochs": 60,
            },
            "HSB": {"dataset": "hsb", "model": "hard_sharing", "batch_size": 320, "epochs": 30},
            "Radon": {"dataset": "radon", "model": "hard_sharing", "batch_size": 92, "epochs": 60},
            # Where the weights matter on a CPU (docs/headroom.md): 20 cubics of 60 points
            # whose target scales span 2 decades (loss scales 4, as IGB's QM9 targets), scored
            # by the mean normalised MSE; rewards from the validation loss, which rank runs as
            # their test error does.
            "CubicScales": {
                "dataset": "cubic",
                "dataset_kwargs": {"samples_per_task": 60, "scale_decades": 2},
                "model": "hard_sharing",
                "batch_size": 60,
                "epochs": 100,
                "reward": "val",
            },
        },
        variants={"LossWeighting": {}},
        metrics=("test/mean_accuracy", "test/mean_nmse", "test/raw_mse", "test/mean_mse"),
        split_kwargs="mtl_envs.envs.loss_weighting:split_env_kwargs",
        check_kwargs="mtl_envs.envs.loss_weighting:check_env_kwargs",
        probe_policies=("random", "equal", "igbv1", "inverse_base", "drop_one", "best_fixed"),
    ),
    "TaskGrouping": EnvFamily(
        name="TaskGrouping",
        entry_point="mtl_envs.envs.task_grouping:TaskGroupingEnv",
        vector_entry_point=None,
        version="v1",
        datasets={
            # The shipped table of all 1,023 groups (mtl_envs/tables/digits10_gains.json).
            "Digits10": {"dataset": "digits10", "gains": "table", "budget": 3},
            # Where the grouping matters (docs/headroom.md): every task labels 30 training
            # images, so tasks that share an encoder learn from each other's labels (71% of
            # the group-task test gains are positive); 20 epochs per group, 2 seeds.
            "Digits10Scarce": {
                "dataset": "digits10",
                "table": "digits10_scarce",
                "gains": "table",
                "budget": 3,
            },
            # No table: ETAP fitted on 10 trained groups (cached under the data root).
            "CIFAR100MTL": {
                "dataset": "cifar100_mtl",
                "gains": "etap",
                "budget": 3,
                "etap_train_groups": 10,
                "protocol": {"backbone": "small_cnn", "backbone_kwargs": {}, "epochs": 2},
            },
        },
        variants={"TaskGrouping": {}},
        metrics=("test/total_gain",),
        split_kwargs=None,
        check_kwargs="mtl_envs.envs.task_grouping:check_env_kwargs",
        probe_policies=(
            "random",
            "all_in_one",
            "singletons",
            "etap",
            "reward_optimal",
            "optimal",
        ),
    ),
}


def family_of(env_id: str) -> EnvFamily:
    """The family of a registered id (by its entry point)."""
    from gymnasium import error, spec

    try:
        entry_point = spec(env_id).entry_point
    except error.Error:  # not registered (gymnasium's NameNotFound, VersionNotFound, ...)
        raise ConfigError(
            f"`env_id` {env_id!r} is not a registered environment.{suggest(env_id, all_ids())} "
            f"Valid ids: {all_ids()}."
        ) from None
    for family in FAMILIES.values():
        if family.entry_point == entry_point:
            return family
    raise ConfigError(
        f"`env_id` {env_id!r} is not an mtl-envs environment.{suggest(env_id, all_ids())} "
        f"Valid ids: {all_ids()}."
    )


def all_ids() -> list[str]:
    return [env_id for family in FAMILIES.values() for env_id in family.ids()]


def require_family(env_id: str, name: str) -> EnvFamily:
    """``env_id``'s family, which must be ``name`` (a method made for one family)."""
    family = family_of(env_id)
    if family.name != name:
        raise ConfigError(
            f"`env_id` {env_id!r} is a {family.name} environment; this method needs a {name} "
            f"one: {FAMILIES[name].ids()}."
        )
    return family
