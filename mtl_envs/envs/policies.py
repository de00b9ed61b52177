"""Reference policies: fixed, non-learning behaviours that bracket what an agent can do.

Each is a small class built for one env (``policy = make_policy("human", env, seed=0)``) and
called as ``policy(obs) -> action`` on that env, single or vector form, through ``env.step``
like any agent. As DACBench's static, random and optimal baselines and D4RL's random and
expert scores do, they give a scale on which agents are compared (``mtl_envs.reference_scores``,
``mtl_envs.normalized_score``):

* AuxLabel: ``human`` (CIFAR-100's fine class rank), ``random``, ``constant`` (sub-class 0: no
  auxiliary information), ``image_hash`` (a fixed label per image, unrelated to its content);
  on the weighted ids every policy but ``random`` also sends a fixed weight bin
  (``weight_bin``, default weight 1), and ``random`` is uniform over the whole action space.
* LossWeighting: ``equal``, ``random`` (RLW, as IGB Algorithm 2's warm-up), ``igbv1`` (IGB
  eq. 3), ``inverse_base`` (weights proportional to 1 / L_base), ``drop_one`` (one task at a
  near-zero weight), and ``fixed``, a constant weight vector ``n * softmax(-s log L_base)``
  (``best_fixed`` in the probe picks ``s`` from a small grid on validation).
* TaskGrouping: ``optimal`` (the exact optimum on the test gains: an oracle),
  ``reward_optimal`` (the exact optimum of the env's rewards, i.e. on validation gains: the
  MDP's optimal policy), ``random``, ``etap`` (ETAP fitted on validation gains),
  ``all_in_one``, ``singletons``.

A policy marked ``oracle = True`` reads test data; results of it must say so.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import VectorEnv

from mtl_envs.errors import ConfigError
from mtl_envs.families import FAMILIES
from mtl_envs.utils import lookup


class ReferencePolicy:
    """Base class: ``policy(obs) -> action`` for the env it was built for.

    Args:
        env: the env (single or vector, wrapped or not) the policy acts in.
        seed: seeds the policy's own randomness.
    """

    name = "reference"
    oracle = False

    def __init__(self, env: Any, seed: int | None = None):
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        self.vector = isinstance(self.env, VectorEnv)
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: Any) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        """Called at the start of every episode (policies with a plan start it over)."""


# ---------------------------------------------------------------------------- AuxLabel
class _AuxLabelPolicy(ReferencePolicy):
    """Labels one sample (single env) or one batch (vector env) per call."""

    def __init__(self, env: Any, seed: int | None = None, weight_bin: int | None = None):
        super().__init__(env, seed)
        task = self.env.task
        self.psi = task.num_labels
        self.weighted = task.sample_weights
        self.num_bins = task.weight_bins
        # Bin (bins - 1) / 2 is weight 2^0 = 1 under the paper's 2^(10 w - 5).
        self.weight_bin = (task.weight_bins - 1) // 2 if weight_bin is None else weight_bin
        if self.weighted and not 0 <= self.weight_bin < task.weight_bins:
            raise ConfigError(
                f"`weight_bin` must be in [0, {task.weight_bins}); got {self.weight_bin!r}."
            )

    def labels(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Sub-class labels, one per sample of ``obs`` (shape (B,))."""
        raise NotImplementedError

    def bins(self, n: int) -> np.ndarray:
        """Weight bins for ``n`` samples (weighted ids): the policy's fixed bin."""
        return np.full(n, self.weight_bin, dtype=np.int64)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        batch = obs if self.vector else {k: np.asarray(v)[None] for k, v in obs.items()}
        labels = np.asarray(self.labels(batch), dtype=np.int64)
        action = np.stack([labels, self.bins(len(labels))], axis=1) if self.weighted else labels
        return action if self.vector else action[0]


class HumanLabels(_AuxLabelPolicy):
    """CIFAR-100's human labelling: the rank of the sample's fine class inside its
    superclass (RL-AUX's "human" auxiliary task, fig. 4)."""

    name = "human"

    def __init__(self, env: Any, seed: int | None = None, weight_bin: int | None = None):
        super().__init__(env, seed, weight_bin)
        data = self.env.learner.data
        if data.train.fine_labels is None or data.num_fine_classes != self.env.learner.num_aux:
            raise ConfigError(
                f"The human policy needs fine labels with {self.psi} per primary class "
                f"(cifar100); dataset {data.name!r} has none that fit."
            )
        self.fine = data.train.fine_labels.cpu().numpy()

    def labels(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.fine[self.env.sample_indices()] % self.psi


class RandomLabels(_AuxLabelPolicy):
    """Uniform over the action space, drawn afresh at every step: a random sub-class per
    sample and, on the weighted ids, a random weight bin (weights ``2^-5`` to ``2^5``) unless
    ``weight_bin`` fixes one."""

    name = "random"

    def __init__(self, env: Any, seed: int | None = None, weight_bin: int | None = None):
        super().__init__(env, seed, weight_bin)
        self.uniform_bins = weight_bin is None

    def labels(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.rng.integers(0, self.psi, len(obs["primary_label"]))

    def bins(self, n: int) -> np.ndarray:
        if not self.uniform_bins:
            return super().bins(n)
        return self.rng.integers(0, self.num_bins, n)


class ConstantLabel(_AuxLabelPolicy):
    """Sub-class 0 for every sample: the auxiliary task repeats the primary label."""

    name = "constant"

    def labels(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.zeros(len(obs["primary_label"]), dtype=np.int64)


class ImageHashLabels(_AuxLabelPolicy):
    """A fixed sub-class per image from a checksum of its stored pixels: consistent across
    epochs, unrelated to what the image shows. It hashes the stored image (looked up by the
    sample's index), not the observed one, which on v1 is a fresh augmented view each epoch:
    the same labels on v0 and v1."""

    name = "image_hash"

    def __init__(self, env: Any, seed: int | None = None, weight_bin: int | None = None):
        super().__init__(env, seed, weight_bin)
        stored = self.env.learner.data.train.images.cpu().numpy()
        self.hashes = np.array([zlib.crc32(np.ascontiguousarray(img).tobytes()) for img in stored])

    def labels(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.hashes[self.env.sample_indices()] % self.psi


# ------------------------------------------------------------------------ LossWeighting
class _WeightPolicy(ReferencePolicy):
    """Sends ``env.logits_to_action(logits)``: the weights are ``n * softmax(logits)``."""

    def logits(self, losses: np.ndarray) -> np.ndarray:
        """Pre-softmax task weights for the batch whose task losses are ``losses`` (n,)."""
        raise NotImplementedError

    @property
    def base_losses(self) -> np.ndarray:
        return self.env.base_losses.detach().cpu().numpy().astype(np.float64)

    def raw_losses(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if self.env.observation == "normalized_losses":
            return obs * self.base_losses
        return obs

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.vector:
            raise ConfigError(f"The {self.name!r} policy acts in the single LossWeighting env.")
        return self.env.logits_to_action(self.logits(self.raw_losses(obs)))


class EqualWeights(_WeightPolicy):
    """Weight 1 for every task (EW on the env's objective)."""

    name = "equal"

    def logits(self, losses: np.ndarray) -> np.ndarray:
        return np.zeros_like(losses)


class RandomWeights(_WeightPolicy):
    """RLW (Lin et al., 2022): ``n * softmax(z)``, ``z ~ N(0, I)`` at every step."""

    name = "random"

    def logits(self, losses: np.ndarray) -> np.ndarray:
        return self.rng.standard_normal(len(losses))


class IGBv1Weights(_WeightPolicy):
    """IGBv1 (IGB eq. 3): ``n * softmax(L / L_base)``, from the first step after the env's
    warm-up (random weights by default, as IGBv2's Algorithm 2; Algorithm 1's IGBv1 warms up
    with equal weights: the env's ``warmup_weights="equal"``, or the ``igbv1`` baseline)."""

    name = "igbv1"

    def logits(self, losses: np.ndarray) -> np.ndarray:
        return losses / self.base_losses


class FixedWeights(_WeightPolicy):
    """A constant weight vector ``n * softmax(-s log L_base)``, i.e. weights proportional to
    ``L_base^-s``: ``s = 0`` equal weights, ``s = 1`` inverse to each task's loss scale."""

    name = "fixed"

    def __init__(self, env: Any, seed: int | None = None, scale: float = 1.0):
        super().__init__(env, seed)
        self.scale = float(scale)

    def logits(self, losses: np.ndarray) -> np.ndarray:
        return -self.scale * np.log(self.base_losses)


class InverseBaseWeights(FixedWeights):
    """Weights proportional to ``1 / L_base``: every task's loss counts on its own scale."""

    name = "inverse_base"

    def __init__(self, env: Any, seed: int | None = None):
        super().__init__(env, seed, scale=1.0)


class DropOneWeights(_WeightPolicy):
    """Task ``task`` at a near-zero weight (``e^-7`` of the others'), the rest equal."""

    name = "drop_one"

    def __init__(self, env: Any, seed: int | None = None, task: int = 0):
        super().__init__(env, seed)
        if not 0 <= task < self.env.num_tasks:
            raise ConfigError(f"`task` must be in [0, {self.env.num_tasks}); got {task!r}.")
        self.task = task

    def logits(self, losses: np.ndarray) -> np.ndarray:
        logits = np.zeros_like(losses)
        logits[self.task] = -7.0
        return logits


# Policies that predict or search every group stop where enumerating them is too slow.
MAX_ENUMERATED_GROUPS = 2**14

# The constant weight vectors ``best_fixed`` chooses from on validation: L_base^-s.
BEST_FIXED_SCALES = (0.0, 0.5, 1.0, 2.0)


# ------------------------------------------------------------------------- TaskGrouping
class _GroupPolicy(ReferencePolicy):
    """Emits a planned list of groups, one per step (then the all-zeros stop)."""

    def plan(self) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def reset(self) -> None:
        self._queue = list(self.plan())

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        if self.vector:
            raise ConfigError(f"The {self.name!r} policy acts in the single TaskGrouping env.")
        if not hasattr(self, "_queue"):
            self.reset()
        action = np.zeros(self.env.num_tasks, dtype=np.int8)
        if self._queue:
            action[list(self._queue.pop(0))] = 1
        return action


class OptimalGroups(_GroupPolicy):
    """The exact optimum of the env's objective on the *test* gains: an oracle."""

    name = "optimal"
    oracle = True
    _lookups = "a gain table, gains='table'"

    def __init__(self, env: Any, seed: int | None = None):
        super().__init__(env, seed)
        from mtl_envs.envs.task_grouping import PredictedGains, TableGains

        groups = 2**self.env.num_tasks - 1
        if not isinstance(self._searched(), TableGains | PredictedGains):
            raise ConfigError(
                f"The {self.name!r} policy searches every group's gains, so it needs gains "
                f"it can look up ({self._lookups}); this env measures gains by training, and "
                f"{groups} groups would each be trained."
            )
        if groups > MAX_ENUMERATED_GROUPS:
            raise ConfigError(
                f"The {self.name!r} policy searches every group: {groups:,} for "
                f"{self.env.num_tasks} tasks, more than {MAX_ENUMERATED_GROUPS:,}."
            )

    def _searched(self) -> Any:
        """The gain source whose every group is searched."""
        return self.env.truth

    def gains(self, group: tuple[int, ...]) -> dict[int, float]:
        return self.env.truth.gains(group, "test")

    def plan(self) -> list[tuple[int, ...]]:
        from mtl_envs.training.grouping import best_selection, gain_matrix, selection_candidates

        env = self.env
        candidates = selection_candidates(env.num_tasks, env.objective)
        gains = {g: self.gains(g) for g in candidates}
        matrix = gain_matrix(candidates, gains, env.num_tasks)
        chosen, _ = best_selection(candidates, matrix, env.budget, env.objective)
        return [candidates[c] for c in chosen]


class RewardOptimalGroups(OptimalGroups):
    """The exact optimum of the env's own rewards: the gains its rewards pay (the measured
    gains of its reward split, validation by default, or ETAP's predictions of them with
    ``gains="etap"``). The optimal policy of the MDP, which reads no test data unless the
    env's rewards do."""

    name = "reward_optimal"
    _lookups = "a gain table, gains='table', or ETAP's predictions, gains='etap'"

    def __init__(self, env: Any, seed: int | None = None):
        super().__init__(env, seed)
        self.oracle = self.env.gain_split == "test"  # then its rewards are the test gains

    def _searched(self) -> Any:
        return self.env.source

    def gains(self, group: tuple[int, ...]) -> dict[int, float]:
        return self.env.group_gains(group)


class ETAPGroups(_GroupPolicy):
    """ETAP + exact selection, fitted on the gains of ``train_groups`` groups measured on
    the env's reward split (validation by default; an oracle when that split is the test
    split)."""

    name = "etap"

    def __init__(self, env: Any, seed: int | None = None, train_groups: int = 10):
        super().__init__(env, seed)
        self.oracle = self.env.gain_split == "test"
        groups = 2**self.env.num_tasks - 1
        if groups > MAX_ENUMERATED_GROUPS:
            raise ConfigError(
                f"The 'etap' policy predicts and searches every group: {groups:,} for "
                f"{self.env.num_tasks} tasks, more than {MAX_ENUMERATED_GROUPS:,}."
            )
        self.seed = 0 if seed is None else int(seed)
        self.train_groups = train_groups

    def plan(self) -> list[tuple[int, ...]]:
        from mtl_envs.training.gain_prediction import etap_selection
        from mtl_envs.training.grouping import selection_candidates

        env = self.env
        groups, _, _ = etap_selection(
            np.asarray(env.affinity, dtype=float),
            selection_candidates(env.num_tasks, env.objective),
            lambda g: env.truth.gains(g, env.gain_split),
            env.budget,
            env.objective,
            self.seed,
            self.train_groups,
        )
        return groups


class RandomGroups(ReferencePolicy):
    """A uniformly random group at every step (all zeros, the stop, has probability 2^-n)."""

    name = "random"

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        return self.rng.integers(0, 2, self.env.num_tasks).astype(np.int8)


class AllInOne(_GroupPolicy):
    """One group of every task."""

    name = "all_in_one"

    def plan(self) -> list[tuple[int, ...]]:
        return [tuple(range(self.env.num_tasks))]


class Singletons(_GroupPolicy):
    """Every task alone, one per step (under ETAP's objective the last group takes in the
    tasks left when the budget runs out)."""

    name = "singletons"

    def plan(self) -> list[tuple[int, ...]]:
        return [(t,) for t in range(self.env.num_tasks)]


REFERENCE_POLICIES: dict[str, dict[str, Callable[..., ReferencePolicy]]] = {
    "AuxLabel": {
        "human": HumanLabels,
        "random": RandomLabels,
        "constant": ConstantLabel,
        "image_hash": ImageHashLabels,
    },
    "LossWeighting": {
        "equal": EqualWeights,
        "random": RandomWeights,
        "igbv1": IGBv1Weights,
        "inverse_base": InverseBaseWeights,
        "drop_one": DropOneWeights,
        "fixed": FixedWeights,
    },
    "TaskGrouping": {
        "optimal": OptimalGroups,
        "reward_optimal": RewardOptimalGroups,
        "random": RandomGroups,
        "etap": ETAPGroups,
        "all_in_one": AllInOne,
        "singletons": Singletons,
    },
}


def env_family(env: Any) -> str:
    """The family name (``"AuxLabel"``, ...) of an env instance: the family whose entry point
    or vector entry point built its unwrapped env."""
    env = env.unwrapped if hasattr(env, "unwrapped") else env
    for family in FAMILIES.values():
        for entry_point in (family.entry_point, family.vector_entry_point):
            if entry_point is not None and isinstance(env, load_env_creator(entry_point)):
                return family.name
    raise ConfigError(f"{type(env).__name__} is not an mtl-envs environment.")


def make_policy(name: str, env: Any, seed: int | None = None, **kwargs: Any) -> ReferencePolicy:
    """The reference policy ``name`` of ``env``'s family, built for ``env``."""
    family = env_family(env)
    return lookup(REFERENCE_POLICIES[family], name, kind=f"{family} reference policy")(
        env, seed, **kwargs
    )
