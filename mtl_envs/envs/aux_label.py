"""AuxLabel: an agent invents auxiliary labels for a main network's training images (RL-AUX).

Two forms share one MDP core (:class:`AuxLabelTask`) and one learner
(:class:`~mtl_envs.training.AuxLearner`):

* :class:`AuxLabelEnv`, one sample per step, as in the paper;
* :class:`AuxLabelVectorEnv`, one slot per sample of a batch, so one vector step labels a whole
  batch and makes one SGD step (``gym.make_vec(..., vectorization_mode="vector_entry_point")``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from mtl_envs.envs import vector_infos
from mtl_envs.envs.rendering import RENDER_FPS, RENDER_MODES, TextRender, check_render_mode
from mtl_envs.errors import ConfigError
from mtl_envs.training import (
    AuxLearner,
    AuxLearnerConfig,
    auxiliary_targets,
    label_entropy,
    weight_from_bin,
)
from mtl_envs.training.common import all_finite
from mtl_envs.utils import (
    check_choice,
    check_exponent_range,
    check_field_types,
    check_int,
    check_number,
    check_options,
    describe_array,
    holds_bool,
    seed_from,
    split_kwargs,
)

MODES = ("train_agent", "train_main")
RESET_OPTIONS = ("mode",)
LABEL_SPACES = ("hierarchical", "flat")
RESTORE = ("epoch", "batch", "none")
REWARDS = ("paper", "val")
OBSERVED_IMAGES = ("trained", "raw")


def split_env_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], AuxLearnerConfig]:
    """Split AuxLabel constructor kwargs into env arguments and the learner's config."""
    return split_kwargs(kwargs, ENV_ARGUMENTS, AuxLearnerConfig, "AuxLabel")


@dataclass(frozen=True)
class TaskSettings:
    """The env's own arguments (the rest configure the learner); checked on construction."""

    label_space: str = "hierarchical"
    sample_weights: bool = False
    weight_bins: int = 21
    weight_exponent_range: tuple[float, float] | list[float] = (-5.0, 5.0)
    entropy_coef: float = 0.2
    reward: str = "paper"
    max_batches: int | None = None
    restore: str = "epoch"
    observed_image: str = "trained"

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choice("label_space", self.label_space, LABEL_SPACES)
        check_choice("restore", self.restore, RESTORE)
        check_choice("observed_image", self.observed_image, OBSERVED_IMAGES)
        check_choice("reward", self.reward, REWARDS)
        if self.reward == "val" and self.restore == "batch":
            raise ConfigError(
                "`reward='val'` scores the network an episode leaves behind, which "
                "`restore='batch'` resets after every batch; use restore='epoch' or 'none'."
            )
        check_int("weight_bins", self.weight_bins, minimum=2)
        check_exponent_range("weight_exponent_range", self.weight_exponent_range)
        if not self.sample_weights:
            check_unread(
                self,
                ("weight_bins", "weight_exponent_range"),
                "sets the weight bins of RL-AUX eq. 8, and this env's actions are labels alone, "
                "which read no weight; use an AuxLabelWeighted id",
            )
        check_number("entropy_coef", self.entropy_coef)
        check_int("max_batches", self.max_batches, optional=True)


ENV_ARGUMENTS = tuple(item.name for item in fields(TaskSettings))


def check_env_kwargs(kwargs: dict[str, Any]) -> None:
    """Check AuxLabel constructor kwargs (the env's own and the learner's) without building
    anything."""
    own, config = split_env_kwargs(kwargs)
    check_reward_inputs(TaskSettings(**own), config)


def check_reward_inputs(settings: TaskSettings, config: AuxLearnerConfig) -> None:
    """Refuse settings of RL-AUX eq. 4's reward (its entropy weight, B_R) on an env whose
    reward is the validation loss's change, which reads neither: a changed value would
    change nothing. Only a value other than the default can be told apart."""
    if settings.reward != "val":
        return
    reason = (
        "sets RL-AUX eq. 4's per-batch reward, and this env's reward is 'val' (the "
        "validation loss's change), which does not read it; set reward='paper'"
    )
    check_unread(settings, ("entropy_coef",), reason)
    check_unread(config, ("eval_batch_size",), reason)


def check_unread(settings: Any, names: tuple[str, ...], reason: str) -> None:
    """Refuse a field of the dataclass ``settings`` that the env's other settings leave unread
    (a changed value would change nothing); only a value other than the default can be told
    apart from one left alone. ``reason`` says what the field sets and why it goes unread."""
    defaults = {item.name: item.default for item in fields(settings)}
    for name in names:
        value, default = getattr(settings, name), defaults[name]
        same = list(value) == list(default) if isinstance(default, tuple) else value == default
        if not same:
            raise ConfigError(f"`{name}` ({value!r}) {reason}, or leave it at {default!r}.")


def reset_mode(options: dict[str, Any]) -> str | None:
    """``options["mode"]`` where the reset gives one (checked: ``None`` is no mode), else
    ``None``, which keeps the current mode or, on a seeded reset, starts in train_agent."""
    if "mode" not in options:
        return None
    check_choice("options['mode']", options["mode"], MODES)
    return options["mode"]


class AuxLabelTask:
    """The MDP of RL-AUX on top of an :class:`AuxLearner`, shared by both env forms.

    It turns a batch of actions into auxiliary targets and sample weights, calls the learner
    for one SGD step and computes the reward of RL-AUX eq. 4:
    ``-mean CE(primary) on B_R random training images + entropy_coef * H(mean aux target)``.
    """

    def __init__(self, config: AuxLearnerConfig, **env_kwargs: Any):
        settings = TaskSettings(**env_kwargs)  # the env's own arguments (see the table)
        check_reward_inputs(settings, config)
        for item in fields(settings):
            setattr(self, item.name, getattr(settings, item.name))
        lo, hi = settings.weight_exponent_range
        self.weight_exponent_range = (float(lo), float(hi))
        self.entropy_coef = float(settings.entropy_coef)
        self._potential = 0.0
        self._potentials: dict[str, float] = {}
        self.restore_every_batch = self.restore == "batch"
        self.learner = AuxLearner(config)
        if self.reward == "paper":  # eq. 4 reads B_R training images ('val' reads none)
            self.learner.check_eval_batch_size()
        self.psi = config.hierarchy_factor
        self.mode = "train_agent"
        self.canonical = self.learner.snapshot()
        self.last_indices = self.learner.current_indices
        self.ended = False
        # The current batch's images as the agent sees them, drawn on first sight, and the
        # last trained batch's (what the observation shows once an episode has ended).
        self._view: torch.Tensor | None = None
        self._view_state: torch.Tensor | None = None  # the generator's state after the view
        self._last_view: torch.Tensor | None = None

    # ------------------------------------------------------------------ spaces
    @property
    def num_labels(self) -> int:
        return self.psi if self.label_space == "hierarchical" else self.learner.num_aux

    def single_action_space(self) -> spaces.Space:
        if self.sample_weights:
            return spaces.MultiDiscrete([self.num_labels, self.weight_bins])
        return spaces.Discrete(self.num_labels)

    def single_observation_space(self) -> spaces.Dict:
        return spaces.Dict(
            {
                "image": spaces.Box(0, 255, self.learner.data.image_shape, dtype=np.uint8),
                "primary_label": spaces.Discrete(self.learner.num_primary),
            }
        )

    # ------------------------------------------------------------------ episode
    def start_episode(self, seed: int | None, mode: str | None) -> None:
        """Begin an epoch. A ``seed`` rebuilds the run (network, optimiser, canonical model)
        in ``mode`` or else ``"train_agent"``; without one the epoch starts from the
        canonical model in either mode (unless ``restore="none"``), so a train_main epoch
        never continues from a network the agent's epoch trained."""
        if mode is not None:
            check_choice("mode", mode, MODES)
            self.mode = mode
        elif seed is not None:
            self.mode = MODES[0]  # a fresh run is the same whatever the calls before it
        if seed is not None:
            self.learner.reset_run(seed)
            self.canonical = self.learner.snapshot()
        elif self.restore != "none":
            self.learner.restore(self.canonical)
        self.learner.begin_epoch()
        self._view = None
        self.ended = False
        if self.reward == "val" and self.mode == "train_agent":
            self._potential = self.val_potential()

    def val_potential(self) -> float:
        """Minus the primary cross-entropy on the validation split, evaluated once per network
        state (``AuxLearner.version``): an episode that starts where the last one ended
        (``restore="none"``) or from an unchanged canonical model reuses the value."""
        version = self.learner.version
        if version not in self._potentials:
            # Only the canonical model's value and the current one can recur.
            keep = self.canonical.get("version")
            self._potentials = {k: v for k, v in self._potentials.items() if k == keep}
            self._potentials[version] = -float(self.learner.evaluate("val")["loss"])
        return self._potentials[version]

    def current_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The current batch's images (B, C, H, W) as :meth:`batch_view` shows them and its
        primary labels (B,), on the host; once the episode has ended, the batch it ended on."""
        labels = self.learner.data.train.labels[self.batch_indices()].cpu().numpy()
        return self.batch_view().cpu().numpy(), labels

    def batch_view(self) -> torch.Tensor:
        """The current batch's uint8 images as the agent sees them, on the learner's device.

        ``observed_image="trained"``: the view the batch's SGD step trains on (RL-AUX section
        4 hands the agent an image of the batch the training loader drew), i.e. augmented
        where the dataset augments. The draw is made here, on first sight, from a copy of
        the learner's generator, and :meth:`apply` moves the learner's generator past it
        when the batch trains: the draw takes the place in the stream of the learner's own,
        and a view that is never trained on (an episode reset before its batch) draws
        nothing. A policy that ignores the images therefore trains exactly the network it
        trains under ``"raw"``, which shows the stored, un-augmented images. Once the
        episode has ended: the batch it ended on.
        """
        if self.ended:
            return self._last_view
        if self._view is None:
            learner = self.learner
            images = learner.data.train.images[learner.current_indices]
            if self.observed_image == "trained":
                fork = torch.Generator(device=learner.device)
                fork.set_state(learner.generator.get_state())
                self._view = learner.train_view(images, fork)
                self._view_state = fork.get_state()
            else:
                self._view = images
        return self._view

    def batch_indices(self) -> torch.Tensor:
        """Training-set indices of :meth:`current_batch`."""
        return self.learner.current_indices if not self.ended else self.last_indices

    def apply(self, actions: np.ndarray) -> tuple[float, bool, bool, dict[str, Any]]:
        """Label the current batch with ``actions``, train one step, compute the reward.

        Args:
            actions: (B,) labels, or (B, 2) label and weight bin with ``sample_weights``.

        Returns:
            reward, terminated, truncated, info.
        """
        learner = self.learner
        device = learner.device
        actions_t = torch.as_tensor(np.asarray(actions), dtype=torch.long, device=device)
        labels, bins = (
            (actions_t[:, 0], actions_t[:, 1]) if self.sample_weights else (actions_t, None)
        )
        indices = self.last_indices = learner.current_indices
        primary = learner.data.train.labels[indices]
        targets = auxiliary_targets(
            labels, primary, self.psi, learner.num_primary, self.label_space
        )
        weights = None
        if bins is not None:
            weights = weight_from_bin(bins, self.weight_bins, self.weight_exponent_range)
        view = self.batch_view()
        trained = self.observed_image == "trained"
        if trained:  # the view's draw, made on a copy, now taken from the learner's stream
            learner.generator.set_state(self._view_state)
        inputs = learner.prepare_inputs(view, train=False) if trained else None
        losses = learner.train_batch(indices, targets, weights, inputs=inputs)
        self._last_view, self._view = view, None
        info: dict[str, Any] = {
            "epoch": learner.epoch,
            "batch": learner.position,
            "mode": self.mode,
            "diverged": False,
        }
        reward = 0.0
        if self.mode == "train_agent" and self.reward == "val":
            info["train_loss"] = float(losses["loss"])
        elif self.mode == "train_agent":
            eval_loss = learner.primary_loss(learner.sample_eval_indices())
            entropy = label_entropy(targets)
            reward_t = -eval_loss + self.entropy_coef * entropy
            values = torch.stack([reward_t, eval_loss, entropy, *losses.values()]).tolist()
            reward = values[0]
            info.update(
                primary_eval_loss=values[1],
                label_entropy=values[2],
                **{f"train_{k}": v for k, v in zip(losses, values[3:])},
            )
            if self.restore_every_batch:
                learner.restore(self.canonical)
        terminated = learner.advance()
        truncated = (
            not terminated and self.max_batches is not None and learner.position >= self.max_batches
        )
        finite = all(math.isfinite(v) for v in info.values() if isinstance(v, float))
        if not (finite and bool(torch.isfinite(losses["loss"]))):
            # A NaN/inf loss ends the episode; the reward stays finite for the agent.
            reward, terminated, truncated = 0.0, False, True
            info["diverged"] = True
        episode_end = (terminated or truncated) and not info.get("diverged")
        if episode_end and self.mode == "train_main" and not all_finite(learner.net):
            # The epoch's last update made the network non-finite, which no loss computed
            # before it could show: it must not become canonical.
            reward, terminated, truncated, episode_end = 0.0, False, True, False
            info["diverged"] = True
        if self.reward == "val" and self.mode == "train_agent" and episode_end:
            end = self.val_potential()
            if math.isfinite(end):
                reward, self._potential = end - self._potential, end
            else:  # parameters can stay finite while the loss is not: diverged all the same
                reward, terminated, truncated, episode_end = 0.0, False, True, False
                info["diverged"] = True
        # An episode cut by `max_batches` still ends its (shortened) epoch where its network
        # goes on (train_main, or any mode under restore="none"), so the schedule steps; a
        # diverged one never becomes canonical.
        if terminated or (episode_end and (self.mode == "train_main" or self.restore == "none")):
            learner.end_epoch()
        if episode_end and self.mode == "train_main":
            self.canonical = learner.snapshot()
        self.ended = terminated or truncated
        return reward, terminated, truncated, info


class AuxLabelEnv(TextRender, gym.Env):
    """Label one training image per step with an auxiliary class (RL-AUX, sections 3-4).

    ## Description
    A main network with a primary and an auxiliary head trains on the agent's labels. Every
    ``train_batch_size`` (B_T) steps it takes one SGD step on
    ``CE(primary) + lambda * mean(w_i * focal(aux, target_i))`` (eq. 2, 7). The paper writes
    the primary term as cross-entropy; its public code (and MAXL's) uses the focal loss there
    too: ``primary_loss="focal"``.

    ## Action Space
    ``Discrete(psi)``: the sub-class within the sample's primary class, i.e. auxiliary class
    ``psi * y + a`` (the masked-softmax hierarchy of eq. 5-6 moved into the action space).
    ``label_space="flat"``: ``Discrete(psi * C)``; a label outside the sample's block trains
    towards the uniform distribution over the block. With ``sample_weights=True``:
    ``MultiDiscrete([labels, 21])``, bin w/20 mapped to weight ``2^(10 w - 5)`` (eq. 8).

    ## Observation Space
    | key             | space                        | meaning                          |
    |-----------------|------------------------------|----------------------------------|
    | `image`         | `Box(0, 255, (C, H, W), uint8)` | the training image, as its    |
    |                 |                              | SGD step will see it (below)     |
    | `primary_label` | `Discrete(C)`                | its primary class                |

    On the augmented datasets (CIFAR: random crop and flip; SVHN: crop) the image is the
    augmented view the batch's SGD step trains on, as RL-AUX's agent labels the images the
    training loader hands out (section 4); ``observed_image="raw"`` shows the stored image
    instead (v0). Either way the network trains on the same view.

    Images are 8x8 (Digits) or 32x32 (CIFAR, SVHN), below the 36x36 that SB3's default
    Nature-CNN needs: give SB3 ``agents.extractors.ImageLabelExtractor`` as its features
    extractor.

    ## Rewards
    0, except on the step that completes a batch in ``train_agent`` mode:
    ``-mean CE(primary)`` on B_R random training images after the SGD step (un-augmented,
    the network in eval mode: the paper does not say; the public code scores augmented
    images in train mode, whose batch-norm statistics the reward's own batch would move)
    ``+ entropy_coef * H(batch-mean auxiliary target)`` (eq. 3-4; see
    :func:`~mtl_envs.training.label_entropy` for the sign). ``train_main`` mode computes no
    reward (0). Eq. 3-4 as printed weight H by 1 and average the policy's probabilities over
    the B_R evaluation images; like the public RL-AUX code, H here is the entropy of the mean
    one-hot target of the B_T images just labelled, weighted by ``entropy_coef=0.2`` (the
    code's value): the policy's probabilities are the agent's, which an env does not see.

    ``reward="val"`` replaces that reward by one at the episode's last step: the change of
    minus the primary cross-entropy on the validation split over the episode, so a whole
    training run (``restore="none"``) returns minus its final validation loss up to a
    constant; the paper's reward stays the default (``docs/headroom.md`` compares the two).

    ## Starting State
    ``reset(seed=s)`` builds a fresh main network from ``s``, makes it canonical and starts
    in ``"train_agent"`` mode unless ``options["mode"]`` says otherwise. A reset without a
    seed restores the canonical model (network, optimiser, scheduler) and reshuffles, in
    either mode: ``options={"mode": "train_agent"}`` trains a copy of it for the agent,
    ``"train_main"`` trains it on the agent's labels and makes the result canonical when the
    epoch ends. The mode persists across seedless resets. ``restore="none"`` never restores:
    every epoch continues from the network the last one left. The default follows section 4
    (the main model reverts at the end of the agent's epoch); appendix B's protocol says the
    env was reset "between batches", which is appendix A.2's ablation, ``restore="batch"``,
    reported there to make no difference.

    ## Episode End
    Terminated after one epoch (``floor(N / B_T)`` batches; the shuffled remainder is left
    out). Truncated after ``max_batches`` batches when set (in ``train_main`` mode the
    shortened epoch still ends: the schedule steps and the network becomes canonical), and
    at once when a loss turns NaN or infinite (``info["diverged"] = True``, reward 0; a
    diverged network never becomes canonical). A diverged episode is truncated, not
    terminated: the rewards are minus a loss, so a termination, whose value is 0, would pay
    an agent for ending an epoch by divergence; truncation leaves the agent to bootstrap
    from where the run was cut, as for a budget.

    ## Info
    ``reset``: ``epoch`` and ``mode``. ``step``: ``epoch`` and ``batch`` (the epoch and the
    index within it of the batch the sample belongs to), ``mode`` and ``diverged`` on every
    step; on a step that completes a batch in ``train_agent`` mode also the batch's
    training losses (``train_...``) and, with the paper's reward, ``primary_eval_loss`` and
    ``label_entropy`` (the reward's two terms).

    ## Arguments
    | argument                | default          | meaning                                     |
    |-------------------------|------------------|---------------------------------------------|
    | `dataset`               | per id           | registered image dataset                    |
    | `data_root`             | None             | folder of the dataset files; None:          |
    |                         |                  | `$MTL_ENVS_DATA`, else `~/.cache/mtl_envs`  |
    | `backbone`              | per id           | `vgg16` (paper), `small_cnn`, `mlp`         |
    | `hierarchy_factor`      | 5                | psi, sub-classes per primary class          |
    | `aux_weight`            | 1.0              | lambda of eq. 2                             |
    | `primary_loss`          | `"cross_entropy"`| or `"focal"`, as the public RL-AUX and MAXL |
    |                         |                  | code train the primary head (gamma 2)       |
    | `val_fraction`          | per dataset      | share (or count) of the official training   |
    |                         | (0.1; Digits 297)| set held out for validation: CIFAR's main   |
    |                         |                  | networks train on 45,000 images, not 50,000 |
    | `train_batch_size`      | 100              | B_T, samples per SGD step                   |
    | `eval_batch_size`       | 256              | B_R, images in the reward's eval batch      |
    |                         |                  | (at most the training split's size)         |
    | `lr`, `momentum`, ...   | per id           | SGD + StepLR: `AuxLearnerConfig` (paper:    |
    |                         |                  | lr 0.01, StepLR(50, 0.5); momentum 0 here)  |
    | `label_space`           | `"hierarchical"` | `Discrete(psi)`, or `"flat"` `Discrete(K)`  |
    | `sample_weights`        | per id           | add a weight bin per sample (eq. 7-8):      |
    |                         |                  | True on the `AuxLabelWeighted-*` ids        |
    | `weight_bins`           | 21               | weight bins {0, .05, ..., 1} (weighted ids) |
    | `weight_exponent_range` | (-5, 5)          | w -> 2^(lo + (hi - lo) w) (weighted ids)    |
    | `entropy_coef`          | 0.2              | weight of the label-entropy reward bonus    |
    |                         |                  | (public RL-AUX code; eq. 4 as printed: 1)   |
    | `max_batches`           | None             | truncate episodes after this many batches   |
    | `reward`                | per id           | `"paper"`: eq. 3-4, or `"val"`: validation- |
    |                         |                  | loss change (the `CIFAR100Small` ids)       |
    | `restore`               | `"epoch"`        | `"batch"`: restore canonical every batch;   |
    |                         |                  | `"none"`: never (one rewarded training run) |
    | `observed_image`        | `"trained"`      | the augmented view the step trains on, or   |
    |                         |                  | `"raw"`: the stored image (v0)              |
    | `device`                | `"auto"`         | CUDA when present                           |
    | `amp`                   | False            | bfloat16 autocast of the main network       |
    | `channels_last`         | False            | channels_last network and image batches     |
    | `render_mode`           | None             | `"ansi"`: ``render()`` returns a text frame |
    |                         |                  | (mode, epoch, labels so far, batch losses)  |

    ## Version History
    * v1: the observed image is the augmented view the batch's SGD step trains on
      (``observed_image="trained"``); v0's agent saw the stored image while the network
      trained on a crop of it, mirrored half the time, so its labels went to views it never
      saw. The view is drawn where the learner drew it, so a policy that ignores the image
      trains the same network on v0 and v1, to the last digit. SVHN's augmentation no
      longer mirrors the digits, on both versions (nothing was recorded on SVHN). Refused
      since, on both versions, where they were silently changed or ignored: an
      ``eval_batch_size`` above the training split's size (B_R shrank to the split), weight
      settings on an unweighted id, ``options={"mode": None}`` (kept the mode) and a bool
      inside an action (read as 1); a reset refused for its mode no longer spends the fresh
      run that a first reset owes. With ``reward="val"``, an episode whose last update
      leaves a non-finite validation loss ends as diverged with reward 0 (it returned NaN).
    * v0: kept registered (``observed_image="raw"``) so that results recorded on it reproduce;
      ``gym.make`` warns that it is out of date. Initial release. Fixes since, with the default
      arguments' dynamics unchanged: a diverged ``train_main`` episode no longer becomes
      canonical; a ``train_main`` episode cut by ``max_batches`` ends its epoch; a seedless
      reset into ``train_main`` starts from the canonical model, as the vector form's always did
      (it continued from the network the last ``train_agent`` epoch left); a seeded reset
      without a mode starts in ``train_agent`` mode (it kept the mode of earlier calls); a step
      before the first reset or after the episode ended raises ``ConfigError`` (it indexed past
      the batch).

    ## Example
    >>> import gymnasium as gym, mtl_envs
    >>> env = gym.make("AuxLabel-Digits-v1")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": RENDER_FPS}

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        self.render_mode = check_render_mode(render_mode)
        env_kwargs, config = split_env_kwargs(kwargs)
        self.task = AuxLabelTask(config, **env_kwargs)
        self.action_space = self.task.single_action_space()
        self.observation_space = self.task.single_observation_space()
        self._batch_size = config.train_batch_size
        self._position = 0
        self._actions = np.zeros(self.action_space.shape or (), dtype=np.int64)
        self._needs_run = True
        self._batch_info: dict[str, Any] = {}

    @property
    def learner(self) -> AuxLearner:
        return self.task.learner

    def _load_batch(self) -> None:
        self._images, self._labels = self.task.current_batch()
        self._actions = np.zeros((len(self._labels), *(self.action_space.shape or ())), np.int64)
        self._position = 0

    def _obs(self) -> dict[str, Any]:
        j = min(self._position, len(self._labels) - 1)
        return {"image": self._images[j], "primary_label": np.int64(self._labels[j])}

    def continue_run(self) -> None:
        """Make the next seedless :meth:`reset` continue the learner's current run (after its
        state was loaded from a checkpoint) instead of starting a fresh one."""
        self._needs_run = False

    def sample_indices(self) -> np.ndarray:
        """Training-set index of the sample the next step labels, shape (1,) (reference
        policies read what the observation does not show, e.g. CIFAR-100's fine label)."""
        j = min(self._position, len(self._labels) - 1)
        return self.task.batch_indices()[j : j + 1].cpu().numpy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        # Checked before any state changes: a refused reset leaves the run as it was.
        check_int("seed", seed, minimum=0, optional=True)  # bools and negative seeds too
        mode = reset_mode(check_options(options, RESET_OPTIONS))
        super().reset(seed=None if seed is None else int(seed))
        run_seed = seed_from(self.np_random) if (seed is not None or self._needs_run) else None
        self._needs_run = False
        self.task.start_episode(run_seed, mode)
        self._load_batch()
        self._batch_info = {}
        self._note_reset()
        return self._obs(), {"epoch": self.learner.epoch, "mode": self.task.mode}

    def step(self, action):
        self._check_episode_running()
        not_int = holds_bool(action) or (
            isinstance(action, np.ndarray) and action.dtype.kind not in "iu"
        )
        if not_int or not self.action_space.contains(action):
            raise ConfigError(f"Action {action!r} is outside the action space {self.action_space}.")
        self._actions[self._position] = action
        self._position += 1
        info: dict[str, Any] = {
            "epoch": self.learner.epoch,
            "batch": self.learner.position,
            "mode": self.task.mode,
            "diverged": False,
        }
        if self._position < len(self._labels):
            self._note_step(0.0, False, False, info)
            return self._obs(), 0.0, False, False, info
        reward, terminated, truncated, info = self.task.apply(self._actions)
        self._batch_info = info
        if not (terminated or truncated):
            self._load_batch()
        self._note_step(float(reward), terminated, truncated, info)
        return self._obs(), float(reward), bool(terminated), bool(truncated), info

    def render_lines(self) -> list[str]:
        learner, task = self.learner, self.task
        labels = self._actions[: self._position]
        labels = labels[:, 0] if labels.ndim == 2 else labels
        counts = np.bincount(labels, minlength=task.num_labels).tolist()
        losses = {k: v for k, v in self._batch_info.items() if k.endswith(("loss", "entropy"))}
        last = "  ".join(f"{k} {v:.4g}" for k, v in losses.items()) or "-"
        return [
            f"mode {task.mode}, epochs done {learner.epoch}, batches done {learner.position} of "
            f"{learner.num_batches} in this epoch",
            f"this batch    {self._position} of {len(self._labels)} samples labelled, "
            f"auxiliary labels so far {counts}",
            f"last batch    {last}",
        ]

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Primary-task metrics of the current main network on ``split``."""
        return self.learner.evaluate(split)


class AuxLabelVectorEnv(VectorEnv):
    """The natively vectorised AuxLabel env: slot i labels sample i of the current batch.

    ## Description
    One vector step labels one batch of ``train_batch_size`` samples and makes one SGD step, so
    the agent's forward pass is batched. Given the same labels it trains exactly the same
    network as :class:`AuxLabelEnv`, whose sections (rewards, starting state, arguments,
    version history) hold here too. ``gym.make_vec`` picks this form whenever
    ``vectorization_mode`` is left out; ``vectorization_mode="sync"`` gives independent
    copies of the single env instead.

    ## Action and Observation Spaces
    The single env's spaces batched over ``num_envs`` slots: actions ``(num_envs,)`` (or
    ``(num_envs, 2)`` with ``sample_weights``), images ``(num_envs, C, H, W)`` uint8 and
    primary labels ``(num_envs,)``. ``num_envs`` must equal ``train_batch_size``.

    ## Rewards and Episode End
    Every slot receives the batch reward (the per-sample env gives it to the batch's last
    step only) and the same ``terminated``/``truncated``. Autoreset is ``SAME_STEP``: when
    the epoch ends, the returned observation already belongs to the next epoch (same mode),
    the top-level info is the new epoch's reset info, and ``info["final_obs"]`` and
    ``info["final_info"]`` hold the last observation and the step's info, in Gymnasium's
    layout (:mod:`mtl_envs.envs.vector_infos`). ``autoreset_mode="NextStep"`` (Gymnasium's
    default) ends the epoch with its last observation; the next step ignores its actions,
    starts the next epoch and returns its first batch with reward 0 and its reset info.
    ``autoreset_mode="Disabled"`` leaves the ended epoch's last batch in place until
    ``reset()`` (a step before that is an error). Gymnasium's vector observation wrappers
    take these two modes.

    ## Example
    >>> import gymnasium as gym, mtl_envs
    >>> envs = gym.make_vec("AuxLabel-Digits-v1", num_envs=100)
    >>> obs, info = envs.reset(seed=0)
    >>> obs, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int | None = None,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        **kwargs: Any,
    ):
        if render_mode is not None:
            raise ConfigError(
                f"`render_mode` must be None for the native vector form; got {render_mode!r} "
                "(vectorization_mode='sync' renders each env's text frame)."
            )
        mode = vector_infos.check_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self._ended = False  # the epoch ended: reset by the next step (NEXT_STEP) or reset()
        env_kwargs, config = split_env_kwargs(kwargs)
        check_int("num_envs", num_envs, optional=True)
        if num_envs is not None and num_envs != config.train_batch_size:
            raise ConfigError(
                f"`num_envs` ({num_envs!r}) must equal `train_batch_size` "
                f"({config.train_batch_size}): the vector form has one slot per sample of a "
                f"batch. Pass num_envs={config.train_batch_size} or train_batch_size={num_envs}, "
                f'or vectorization_mode="sync" for {num_envs} independent copies of the env.'
            )
        self.task = AuxLabelTask(config, **env_kwargs)
        self.num_envs = config.train_batch_size
        self.single_action_space = self.task.single_action_space()
        self.single_observation_space = self.task.single_observation_space()
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._needs_run = True

    @property
    def learner(self) -> AuxLearner:
        return self.task.learner

    def _obs(self) -> dict[str, np.ndarray]:
        images, labels = self.task.current_batch()
        return {"image": images, "primary_label": labels.astype(np.int64)}

    def sample_indices(self) -> np.ndarray:
        """Training-set indices of the batch the observation shows, one per slot (the batch
        the next step labels, or the ended epoch's last batch until the next one starts)."""
        return self.task.batch_indices().cpu().numpy()

    def continue_run(self) -> None:
        """Make the next seedless :meth:`reset` continue the learner's current run (after its
        state was loaded from a checkpoint) instead of starting a fresh one."""
        self._needs_run = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an epoch (``options["mode"]``, a ``seed`` for a fresh run). The slots share
        one epoch, so ``options["reset_mask"]`` (Gymnasium's partial reset), where given, must
        hold every slot."""
        options = check_options(options, (*RESET_OPTIONS, "reset_mask"))
        mask = vector_infos.reset_mask(options, self.num_envs)
        if not mask.all():
            raise ConfigError(
                f"`options['reset_mask']` must hold every slot ({self.num_envs} slots of one "
                f"batch share an epoch); got {options['reset_mask']!r}."
            )
        if isinstance(seed, (list, tuple, np.ndarray)):
            raise ConfigError(
                f"`seed` must be an int >= 0 or None: the {self.num_envs} slots label one batch "
                f"of one run, which one seed starts; got a sequence of {len(seed)} seeds."
            )
        check_int("seed", seed, minimum=0, optional=True)
        mode = reset_mode(options)  # checked before any state changes, as the seed is
        super().reset(seed=None if seed is None else int(seed))
        run_seed = seed_from(self.np_random) if (seed is not None or self._needs_run) else None
        self._needs_run = False
        self.task.start_episode(run_seed, mode)
        self._ended = False
        return self._obs(), vector_infos.masked(self._reset_info(), np.ones(self.num_envs, bool))

    def _reset_info(self) -> dict[str, np.ndarray]:
        """The single env's reset info, for every slot."""
        n = self.num_envs
        return {"epoch": np.full(n, self.learner.epoch), "mode": np.full(n, self.task.mode)}

    def step(self, actions):
        n = self.num_envs
        if self._needs_run:  # the run the constructor built is rebuilt by the first reset()
            raise ConfigError("step() before reset(): call reset() to start an episode.")
        if self._ended and self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP:
            # The epoch ended last step: this step starts the next one. Its actions are not
            # read, as SyncVectorEnv passes none to a slot it resets.
            self.task.start_episode(None, None)
            self._ended = False
            infos = vector_infos.masked(self._reset_info(), np.ones(n, dtype=bool))
            zeros = np.zeros(n, dtype=bool)
            return self._obs(), np.zeros(n), zeros, zeros.copy(), infos
        vector_infos.check_not_ended(np.full(n, self._ended))
        reward, terminated, truncated, info = self.task.apply(self._check_actions(actions))
        step_info = {k: np.full(n, v) for k, v in info.items()}
        rewards = np.full(n, reward, dtype=np.float64)
        terminations = np.full(n, terminated)
        truncations = np.full(n, truncated)
        done = terminations | truncations
        if self.metadata["autoreset_mode"] != AutoresetMode.SAME_STEP:
            self._ended = bool(terminated or truncated)
            infos = vector_infos.masked(step_info, np.ones_like(done))
            return self._obs(), rewards, terminations, truncations, infos
        final_obs = None
        if terminated or truncated:
            final_obs = self._obs()
            self.task.start_episode(None, None)
        reset_info = self._reset_info() if terminated or truncated else {}
        infos = vector_infos.same_step(step_info, done, final_obs, reset_info)
        return self._obs(), rewards, terminations, truncations, infos

    def _check_actions(self, actions: Any) -> np.ndarray:
        # np.asarray would read True in a list of labels as label 1 (an array's dtype shows it)
        if not isinstance(actions, np.ndarray) and holds_bool(actions):
            raise ConfigError(
                f"Actions must be ints, one action of {self.single_action_space} per slot; "
                f"got bools in {actions!r}."
            )
        actions = np.asarray(actions)
        if actions.dtype.kind == "f" and np.array_equal(actions, np.round(actions)):
            actions = actions.astype(np.int64)  # whole numbers sent as floats; 2.7 stays out
        expected = (self.num_envs, *(self.single_action_space.shape or ()))
        integral = actions.dtype.kind in "iu"  # older Gymnasium's contains() skips the dtype
        if actions.shape != expected or not integral or not self.action_space.contains(actions):
            raise ConfigError(
                f"Actions must be an int array of shape {expected}, one action of "
                f"{self.single_action_space} per slot; got {describe_array(actions)}."
            )
        return actions

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Primary-task metrics of the current main network on ``split``."""
        return self.learner.evaluate(split)
