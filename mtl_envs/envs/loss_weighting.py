"""LossWeighting: an agent sets the task weights of a multi-task training run (IGBv2)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from mtl_envs.envs import vector_infos
from mtl_envs.envs.rendering import RENDER_FPS, RENDER_MODES, TextRender, check_render_mode, spread
from mtl_envs.errors import ConfigError
from mtl_envs.training.batched import BatchedMultiTaskLearner
from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig
from mtl_envs.training.weighting import random_weights, softmax_weights
from mtl_envs.utils import (
    check_choice,
    check_int,
    check_number,
    check_options,
    describe_array,
    float_array,
    is_int,
    is_seed,
    seed_from,
    split_kwargs,
)

OBSERVATIONS = ("losses", "normalized_losses")
ACTION_TRANSFORMS = ("atanh", "linear")
WARMUP_WEIGHTS = ("random", "equal")
# atanh of the largest float32 below 1 that SB3's tanh squashing returns is about 8.3; this
# clamp keeps it finite: logits within +-7.25, weight ratios up to e^14.5 (about 2e6).
ATANH_LIMIT = 1.0 - 1e-6


REWARDS = ("min", "mean", "val")


def improvable_gap_reward(
    losses: torch.Tensor,
    next_losses: torch.Tensor,
    base_losses: torch.Tensor,
    alpha: float,
    reduce: str = "min",
) -> torch.Tensor:
    """IGB eq. 4: ``r_t = alpha * min_i (L_t,i - L_t+1,i) / L_base,i``; ``reduce="mean"``
    averages the normalised declines over tasks instead of taking the worst one. Tasks lie
    along the last dim: a batch of runs (K, n) with ``alpha`` (K,) gives K rewards."""
    declines = (losses - next_losses) / base_losses
    reduced = declines.min(dim=-1).values if reduce == "min" else declines.mean(dim=-1)
    return alpha * reduced


@dataclass(frozen=True)
class EpisodeSettings:
    """The env's own arguments (the rest configure the learner); checked on construction."""

    observation: str = "losses"
    action_transform: str = "atanh"
    temperature: float = 1.0
    warmup_weights: str = "random"
    warmup_epochs: int = 2
    epochs: int = 30
    max_steps: int | None = None
    reward: str = "min"

    def __post_init__(self) -> None:
        check_choice("observation", self.observation, OBSERVATIONS)
        check_choice("reward", self.reward, REWARDS)
        check_choice("action_transform", self.action_transform, ACTION_TRANSFORMS)
        check_choice("warmup_weights", self.warmup_weights, WARMUP_WEIGHTS)
        temperature, warmup, epochs, max_steps = (
            self.temperature,
            self.warmup_epochs,
            self.epochs,
            self.max_steps,
        )
        check_number("temperature", temperature, strict=True)
        # The largest logit, temperature x atanh's clamp, must stay a float32 number: past it
        # the weights are NaN, and a run would train on them.
        largest = float(np.finfo(np.float32).max) / float(np.arctanh(ATANH_LIMIT))
        if temperature > largest:
            raise ConfigError(
                f"`temperature` must be at most {largest:.3g} (larger logits overflow float32 "
                f"and the weights turn NaN); got {temperature!r}."
            )
        check_int("warmup_epochs", warmup)
        if not is_int(epochs) or epochs <= warmup:
            raise ConfigError(
                f"`epochs` ({epochs!r}) must be an int greater than `warmup_epochs` ({warmup})."
            )
        check_int("max_steps", max_steps, optional=True)

    def apply_to(self, env: Any) -> None:
        """Set the settings as the env's attributes (``env.epochs``, ...)."""
        for item in fields(self):
            setattr(env, item.name, getattr(self, item.name))
        env.temperature = float(self.temperature)


ENV_ARGUMENTS = tuple(item.name for item in fields(EpisodeSettings))


def actions_to_weights(actions: torch.Tensor, transform: str, temperature: float) -> torch.Tensor:
    """``n * softmax(temperature * atanh(a))`` over the last dim (``"linear"``: without the
    atanh), for one action (n,) or a batch (K, n)."""
    if transform == "atanh":
        actions = torch.atanh(actions.clamp(-ATANH_LIMIT, ATANH_LIMIT))
    return softmax_weights(temperature * actions)


def split_env_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], MultiTaskLearnerConfig]:
    """Split constructor kwargs into env arguments and the learner's config; ``loss``
    defaults to the scale-invariant ``"log"`` here, as in IGB."""
    return split_kwargs(
        kwargs,
        ENV_ARGUMENTS,
        MultiTaskLearnerConfig,
        "LossWeighting",
        config_defaults={"loss": "log"},
    )


def check_env_kwargs(kwargs: dict[str, Any]) -> None:
    """Check LossWeighting constructor kwargs (the env's own and the learner's) without
    building anything."""
    own, _ = split_env_kwargs(kwargs)
    EpisodeSettings(**own)


class LossWeightingEnv(TextRender, gym.Env):
    """Choose the task weights of every batch of a multi-task training run (IGB, sec. 3.2.2).

    ## Description
    A hard-sharing network (shared encoder, one head per task) trains on n tasks. Each step
    is one batch: the agent sees the batch's task losses and returns the task weights; the
    network takes one optimiser step on ``sum w_i log L_i`` (IGB eq. 2; ``loss="sum"`` for
    ``sum w_i L_i``), optionally with a torchjd aggregator on the shared parameters
    (``aggregator="upgrad"``, ..., IGB Algorithm 3). On tabular data (one task per sample,
    task metadata) ``model=`` trains a task network instead, e.g. the Multi-Task
    Hypernetwork (``model="hypernet"``).

    ## Action Space
    ``Box(-1, 1, (n,))``, mapped to weights ``n * softmax(temperature * atanh(a))``: positive
    and summing to n, as the paper requires for a fair comparison with equal weighting. SB3's
    SAC (like most continuous-control agents) squashes a Gaussian sample u with tanh into the
    box, so ``atanh(a)`` gives back u: the weights are ``n * softmax(u)`` of an unbounded
    Gaussian action, as in IGB's own actor, and the weight ratio is not bounded by the box
    (``atanh`` is clamped at +-7.25, a ratio of about 2e6). ``action_transform="linear"``
    maps ``n * softmax(temperature * a)`` directly (ratio at most ``e^(2 temperature)``,
    0.148 to 4.50 of the mean weight for 10 tasks at temperature 1: the v0 map).

    ## Observation Space
    | observation           | space                 | meaning                                |
    |-----------------------|-----------------------|----------------------------------------|
    | `"losses"` (paper)    | `Box(0, inf, (n,))`   | the current batch's task losses L_t    |
    | `"normalized_losses"` | `Box(0, inf, (n,))`   | L_t / L_base                           |

    ## Rewards
    IGB eq. 4: ``r_t = alpha * min_i (L_t,i - L_t+1,i) / L_base,i`` with
    ``alpha = lr_0 / lr_t``; L_t+1 are the next batch's losses after the update (on the final
    step, those of a fresh batch that is not trained on). ``reward="mean"`` averages the
    normalised declines over tasks instead of taking the minimum. ``reward="val"`` is 0 but
    on the step that ends an epoch, where it is the change of ``-mean_i L_val,i / L_base,i``
    (minus the mean normalised validation loss, counted from 0 at the run's start): the
    return of a run is minus its final normalised validation loss, which ranks runs as their
    test errors do where the paper's reward may not (measured in ``docs/headroom.md``).

    ## Starting State
    ``reset()`` starts a new training run (seeded from the env's generator) and trains
    ``warmup_epochs`` (2) epochs with random weights ``n * softmax(z)``, ``z ~ N(0, I)`` per
    batch (Algorithm 2, line 11: IGBv2 weights randomly until ``use_e``; ``warmup_weights=
    "equal"`` uses Algorithm 1's equal weights instead); L_base is the mean of the second
    epoch's batch losses (or of the last warm-up epoch when there is only one).

    ## Episode End
    Terminated when the run reaches ``epochs``; truncated after ``max_steps`` steps or when a
    loss becomes NaN or infinite (``info["diverged"] = True``, reward 0). Divergence is a
    truncation as in AuxLabel: a termination would give the diverged state the value 0,
    which an agent would prefer to the negative rewards late in a run.

    ## Info
    ``reset``: ``epoch`` (the learner's epoch after the warm-up), ``base_losses`` (L_base)
    and ``diverged``. ``step``: ``losses`` (L_t, the batch just trained) and ``weights`` (the
    task weights it trained with), ``epoch`` and ``batch`` (that batch's epoch and index in
    the epoch), ``alpha`` (lr_0 / lr_t) and ``diverged``; every key on every step.

    ## Arguments
    | argument        | default    | meaning                                              |
    |-----------------|------------|------------------------------------------------------|
    | `dataset`       | per id     | `digits10`, `cifar100_mtl`, `exam`, `hsb`, `radon`,  |
    |                 |            | `cubic`, `robot_arm`                                 |
    | `backbone`      | per id     | shared encoder (`small_cnn`, `mlp`, `vgg16`)         |
    | `model`         | per id     | None (backbone + heads) or a task network for        |
    |                 |            | tabular data: `hypernet`, `hard_sharing`, ...        |
    | `use_metadata`  | True       | give the task network the tasks' metadata            |
    | `epochs`        | per id     | total training epochs, warm-up included              |
    | `warmup_epochs` | 2          | epochs before the agent acts (`warmup_weights`)      |
    | `observation`   | `"losses"` | or `"normalized_losses"`                             |
    | `action_transform` | `"atanh"` | `"atanh"`: n softmax(atanh(a)); `"linear"`: n softmax(a) |
    | `temperature`   | 1.0        | scale of the logits before the softmax               |
    | `warmup_weights` | `"random"` | warm-up weights: `"random"` (Alg. 2) or `"equal"`   |
    | `loss`          | `"log"`    | `"log"` (eq. 2) or `"sum"`                           |
    | `aggregator`    | None       | torchjd aggregator on the shared parameters          |
    | `optimizer`, `lr`, ... | adam, 1e-3 | see `MultiTaskLearnerConfig`                  |
    | `max_steps`     | None       | truncate after this many steps                       |
    | `reward`        | per id     | `"min"` (IGB eq. 4), `"mean"` over tasks, or `"val"`  |
    |                 |            | (`"val"` on CubicScales, `"min"` elsewhere)          |
    | `render_mode`   | None       | `"ansi"`: ``render()`` returns a text frame: epoch,  |
    |                 |            | L_t / L_base and the last weights (spread by task)   |

    ## Version History
    * v1: actions map through ``atanh`` before the softmax (unbounded weight ratios, as IGB's
      actor); random warm-up weights as in Algorithm 2; ``reward`` options; ``stl_results``
      removed (``mtl-envs compare`` computes Δm). Since, with the dynamics unchanged: a step
      before the first reset or after the episode ended raises ``ConfigError`` (it trained on
      past the run); ``copy.deepcopy`` of an env mid-run works (the copy redoes the pending
      forward). With an ``aggregator`` on the task-network ids (``model=...``), the
      task-stacked parameters (heads, embeddings) take their own tasks' gradients and only
      the shared ones are aggregated, as Algorithm 3 (the aggregator rescaled the heads too).
      Refused since, where they were ignored or misread: ``momentum`` under Adam,
      ``head_hidden`` under a task network, ``scheduler_gamma`` above 1 (a growing rate), a
      ``batch_size`` above the training split's size; a reset refused for its seed no longer
      drops a pending ``continue_run()``. The task networks ``sluice``, ``dmtrl``, ``mrn`` and
      ``maxroam`` are new.
    * v0: initial release (``n * softmax(a)`` on the box, equal warm-up weights).

    ## Example
    >>> import gymnasium as gym, mtl_envs
    >>> env = gym.make("LossWeighting-Digits10-v1")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": RENDER_FPS}

    def __init__(
        self,
        observation: str = "losses",
        action_transform: str = "atanh",
        temperature: float = 1.0,
        warmup_weights: str = "random",
        warmup_epochs: int = 2,
        epochs: int = 30,
        max_steps: int | None = None,
        reward: str = "min",
        render_mode: str | None = None,
        **kwargs: Any,
    ):
        self.render_mode = check_render_mode(render_mode)
        _, config = split_env_kwargs(kwargs)
        EpisodeSettings(
            observation,
            action_transform,
            temperature,
            warmup_weights,
            warmup_epochs,
            epochs,
            max_steps,
            reward,
        ).apply_to(self)
        self.learner = MultiTaskLearner(config)
        n = self.learner.num_tasks
        self.action_space = spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)
        self.observation_space = spaces.Box(0.0, np.inf, (n,), dtype=np.float32)
        self._current = torch.zeros(n)
        self.base_losses = torch.ones(n)
        self.steps = 0
        self._potential = 0.0
        self._continue = False
        self._weights: list[float] | None = None

    @property
    def num_tasks(self) -> int:
        return self.learner.num_tasks

    def action_to_weights(self, action: np.ndarray) -> torch.Tensor:
        """``n * softmax(temperature * atanh(a))`` (``"linear"``: without the atanh)."""
        a = torch.as_tensor(np.asarray(action, dtype=np.float32), device=self.learner.device)
        return actions_to_weights(a, self.action_transform, self.temperature)

    def logits_to_action(self, logits: np.ndarray) -> np.ndarray:
        """The action whose weights are ``n * softmax(logits)``: the inverse of
        :meth:`action_to_weights` (``tanh(logits / temperature)``; with the linear map,
        clipped to the box, exact only inside it)."""
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        a = np.tanh(z) if self.action_transform == "atanh" else np.clip(z, -1.0, 1.0)
        return a.astype(np.float32)

    def random_weight_action(self, rng: np.random.Generator) -> np.ndarray:
        """An action whose weights are RLW's ``n * softmax(z)``, ``z ~ N(0, I)`` (IGB
        Algorithm 2, line 11): ``tanh(z / temperature)``; with the linear map, ``z /
        temperature`` clipped to the box (exact only while it stays inside)."""
        return self.logits_to_action(rng.standard_normal(self.num_tasks))

    def _random_weights(self, losses: torch.Tensor) -> torch.Tensor:
        return random_weights(len(losses), self.learner.generator, losses.device)

    def _obs(self) -> np.ndarray:
        losses = self._current
        if self.observation == "normalized_losses":
            losses = losses / self.base_losses
        # A diverged run reports itself through info["diverged"]; observations stay finite.
        return np.nan_to_num(losses.cpu().numpy().astype(np.float32), nan=0.0, posinf=1e30)

    def state_dict(self) -> dict[str, Any]:
        """The run between two steps: the learner (network, optimiser, data order and cursor,
        the pending batch's augmentation draw, the epoch's running sums), L_base, the reward's
        potential and the env's generator."""
        return {
            "learner": self.learner.state_dict(),
            "steps": self.steps,
            "base_losses": self.base_losses.cpu(),
            "potential": self._potential,
            "np_random": self.np_random.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a run saved by :meth:`state_dict`; call :meth:`continue_run` before the
        next reset so that it continues this run."""
        self.learner.load_state_dict(state["learner"])
        self.steps = state["steps"]
        self.base_losses = state["base_losses"].to(self.learner.device)
        self._potential = state["potential"]
        self.np_random.bit_generator.state = state["np_random"]

    def continue_run(self) -> None:
        """Make the next seedless :meth:`reset` continue the loaded run (at its saved batch,
        without a new network or warm-up) instead of starting a fresh one."""
        self._continue = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        # Checked before any state changes: a refused reset leaves a continue_run() pending.
        check_options(options, ())
        check_int("seed", seed, minimum=0, optional=True)  # bools and negative seeds too
        resume, self._continue = self._continue and seed is None, False
        super().reset(seed=None if seed is None else int(seed))
        learner = self.learner
        if resume:
            self._current = learner.replay_pending()
        else:
            learner.reset_run(seed_from(self.np_random))
            warmup = self._random_weights if self.warmup_weights == "random" else None
            for _ in range(self.warmup_epochs):
                learner.train_epoch(warmup)
            base = (
                learner.base_losses if learner.base_losses is not None else learner.loss_history[-1]
            )
            self.base_losses = base.clamp_min(1e-12)
            learner.begin_epoch()
            self.steps = 0
            self._potential = 0.0
            self._current = learner.forward_pending()
        diverged = not bool(torch.isfinite(self._current).all())
        self._weights = None
        self._note_reset()
        info = {
            "epoch": learner.epoch,
            "base_losses": self.base_losses.tolist(),
            "diverged": diverged,
        }
        return self._obs(), info

    def step(self, action):
        self._check_episode_running()
        if not self.action_space.contains(float_array("action", action)):
            raise ConfigError(f"Action {action!r} is outside the action space {self.action_space}.")
        learner = self.learner
        weights = self.action_to_weights(action)
        alpha = learner.initial_lr / learner.lr
        epoch, batch = learner.epoch, learner.position
        losses, epoch_end = learner.apply_pending(weights)
        self.steps += 1
        terminated = epoch_end and learner.epoch >= self.epochs
        potential = self._val_potential() if self.reward == "val" and epoch_end else None
        # L_t+1: the next batch, whose forward the next step trains on.
        next_losses = self._current = learner.forward_pending()
        diverged = not bool(torch.isfinite(next_losses).all() and torch.isfinite(losses).all())
        if diverged:
            reward = 0.0
        elif self.reward == "val":
            reward = 0.0 if potential is None else potential - self._potential
            self._potential = self._potential if potential is None else potential
        else:
            reward = float(
                improvable_gap_reward(losses, next_losses, self.base_losses, alpha, self.reward)
            )
        truncated = diverged or (self.max_steps is not None and self.steps >= self.max_steps)
        info = {
            "losses": losses.tolist(),
            "weights": weights.tolist(),
            "epoch": epoch,
            "batch": batch,
            "alpha": alpha,
            "diverged": diverged,
        }
        self._weights = info["weights"]
        truncated = truncated and not terminated
        self._note_step(reward, terminated, truncated, info)
        return self._obs(), reward, bool(terminated), bool(truncated), info

    def render_lines(self) -> list[str]:
        learner = self.learner
        return [
            f"epochs done {learner.epoch} of {self.epochs}, batches done {learner.position} of "
            f"{learner.num_batches} in this epoch, agent steps {self.steps}",
            spread("L_t / L_base", (self._current / self.base_losses).tolist()),
            spread("weights", self._weights),
        ]

    def _val_potential(self) -> float:
        """``-mean_i L_val,i / L_base,i``: minus the mean normalised validation loss."""
        val = torch.tensor(self.learner.split_losses("val"), device=self.base_losses.device)
        return -float((val / self.base_losses).mean())

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Per-task metrics of the current network on ``split`` (Δm against single-task
        results is the comparison's business: ``mtl-envs compare``)."""
        return self.learner.evaluate(split)


class LossWeightingVectorEnv(VectorEnv):
    """K LossWeighting runs trained as one stacked network: the fast vector form.

    ``gym.make_vec(id, num_envs=K, vectorization_mode="vector_entry_point")``. Slot k is the
    run :class:`LossWeightingEnv` would train with the seed ``seed + k`` (as
    ``SyncVectorEnv`` seeds its copies): its own initialisation, data order, augmentation,
    warm-up weights and task weights, with the same observations, rewards and episode ends
    up to float rounding. Rounding grows over a run where convolutions and BatchNorm sum in
    another order when batched: on Digits10 (K = 2, random weights) the observations differ
    by 0.3% after one step and 3% after one epoch, the final test accuracies by 0.1 points.
    The K networks are one stacked model
    (:class:`~mtl_envs.training.batched.BatchedMultiTaskLearner`): each step is one batched
    forward, one backward and one elementwise optimiser update for all K runs, instead of K
    of each. Arguments are those of :class:`LossWeightingEnv` plus ``num_envs``; torchjd
    aggregators and ``batching="uniform"`` need the sync form.

    Actions ``Box(-1, 1, (K, n))`` and observations ``Box(0, inf, (K, n))`` are the single
    env's spaces batched; rewards, ``terminated`` and ``truncated`` are per slot, and so is
    every info entry (``info["diverged"]`` among them), in Gymnasium's layout (each key
    ``k`` with its mask ``_k``); the per-task entries (``losses``, ``weights``) stack into
    (K, n) float arrays, where ``SyncVectorEnv`` gives object arrays of K lists. Autoreset
    is ``SAME_STEP`` (SB3's convention, see ``agents/sb3_vec_env.py``), laid out as
    ``SyncVectorEnv`` lays it out in that mode: a slot whose run ends is reset in the same
    step and reports the new run's reset info at the top level, its last observation in
    ``info["final_obs"]`` and its step's info in ``info["final_info"]``
    (:mod:`mtl_envs.envs.vector_infos`). Runs reset alone when they end alone (a diverged
    run): its warm-up leaves the other slots exactly where they were.
    ``autoreset_mode="NextStep"`` (Gymnasium's default) returns an ended slot's last
    observation and resets it on the next step, which does not train it on that step's
    action and reports the new run's first observation, reward 0 and its reset info, as
    ``SyncVectorEnv`` does in that mode. ``autoreset_mode="Disabled"`` leaves an ended slot
    ended until ``reset(options={"reset_mask": ...})`` restarts it (a step before that is an
    error). Gymnasium's vector observation wrappers take these two modes.

    >>> import gymnasium as gym, mtl_envs
    >>> envs = gym.make_vec("LossWeighting-Cubic-v1", num_envs=4, epochs=3)
    >>> obs, info = envs.reset(seed=0)
    >>> obs, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
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
        env_kwargs, config = split_env_kwargs(kwargs)
        EpisodeSettings(**env_kwargs).apply_to(self)
        self.learner = BatchedMultiTaskLearner(config, num_envs)
        self.num_envs = num_envs
        n = self.learner.num_tasks
        self.single_action_space = spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)
        self.single_observation_space = spaces.Box(0.0, np.inf, (n,), dtype=np.float32)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        device = self.learner.device
        self._rngs = [seeding.np_random()[0] for _ in range(num_envs)]
        self._current = torch.zeros(num_envs, n, device=device)
        self.base_losses = torch.ones(num_envs, n, device=device)
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self._potential = np.zeros(num_envs)
        # Ended slots: reset by the next step (NEXT_STEP) or waiting for reset() (DISABLED).
        self._ended = np.zeros(num_envs, dtype=bool)
        self._started = np.zeros(num_envs, dtype=bool)  # slots reset at least once

    @property
    def num_tasks(self) -> int:
        return self.learner.num_tasks

    def _obs(self) -> np.ndarray:
        losses = self._current
        if self.observation == "normalized_losses":
            losses = losses / self.base_losses
        return np.nan_to_num(losses.cpu().numpy().astype(np.float32), nan=0.0, posinf=1e30)

    def _start(self, runs: list[int]) -> None:
        """Fresh runs in the slots ``runs``: seeds from their generators, warm-up, L_base."""
        seeds = [seed_from(self._rngs[k]) for k in runs]
        warmup = None
        if self.warmup_weights == "random":

            def warmup(learner: MultiTaskLearner) -> torch.Tensor:
                return random_weights(self.num_tasks, learner.generator, learner.device)

        self._current = self.learner.reset_runs(runs, seeds, self.warmup_epochs, warmup)
        for k in runs:
            learner = self.learner.learners[k]
            base = (
                learner.base_losses if learner.base_losses is not None else learner.loss_history[-1]
            )
            self.base_losses[k] = base.clamp_min(1e-12)
            self.steps[k] = 0
            self._potential[k] = 0.0

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Start fresh runs in every slot, or in the slots of ``options["reset_mask"]`` (K,)
        bool (Gymnasium's partial reset), leaving the others where they are. ``seed``: an int
        (slot k gets ``seed + k``) or one seed (or None) per slot."""
        if seed is None:
            seeds = None
        elif is_seed(seed):
            seeds = [int(seed) + k for k in range(self.num_envs)]
        elif (
            isinstance(seed, (list, tuple, np.ndarray))
            and np.ndim(seed) == 1
            and len(seed) == self.num_envs
            and all(s is None or is_seed(s) for s in seed)
        ):
            seeds = list(seed)
        else:
            raise ConfigError(
                f"`seed` must be an int >= 0 or a list of {self.num_envs} such ints (or None); "
                f"got {seed!r}."
            )
        # Gymnasium's own generator takes one int; per-slot seeds seed only the slots.
        super().reset(seed=int(seed) if is_seed(seed) else None)
        mask = vector_infos.reset_mask(check_options(options, ("reset_mask",)), self.num_envs)
        runless = ~(mask | self._started)
        if runless.any():
            raise ConfigError(
                "`options['reset_mask']` must hold every slot that was never reset (slots "
                f"{np.flatnonzero(runless).tolist()} are not): they have no run to leave where "
                f"it is; got {options['reset_mask']!r}."
            )
        if seeds is not None:
            for k in np.flatnonzero(mask):
                if seeds[k] is not None:
                    self._rngs[k] = seeding.np_random(int(seeds[k]))[0]
        if mask.any():
            self._start([int(k) for k in np.flatnonzero(mask)])
        self._ended &= ~mask
        self._started |= mask
        return self._obs(), vector_infos.masked(self._reset_info(), mask)

    def _reset_info(self) -> dict[str, np.ndarray]:
        """The single env's reset info, for every slot (read on the slots just reset)."""
        return {
            "epoch": np.array([run.epoch for run in self.learner.learners]),
            # A copy: on the CPU, .numpy() is a view of the tensor the next reset writes into.
            "base_losses": self.base_losses.cpu().numpy().copy(),
            "diverged": ~torch.isfinite(self._current).all(-1).cpu().numpy(),
        }

    def step(self, actions):
        if not self._started.all():
            raise ConfigError("step() before reset(): call reset() to start an episode.")
        mode = self.metadata["autoreset_mode"]
        # NEXT_STEP: the slots that ended last step are reset by this one. Their actions are
        # not read, as SyncVectorEnv passes none to a slot it resets.
        restart = self._ended & (mode == AutoresetMode.NEXT_STEP)
        actions = float_array("actions", actions)
        if actions.shape == self.action_space.shape:
            actions = np.where(restart[:, None], np.float32(0.0), actions)
        if actions.shape != self.action_space.shape or not self.action_space.contains(actions):
            raise ConfigError(
                f"Actions must be a float array of shape {self.action_space.shape} inside "
                f"[-1, 1]; got {describe_array(actions)}."
            )
        vector_infos.check_not_ended(self._ended & ~restart)
        learner = self.learner
        device = learner.device
        weights = actions_to_weights(
            torch.as_tensor(actions, device=device), self.action_transform, self.temperature
        )
        alpha = torch.tensor(
            [learner.config.lr / run.lr for run in learner.learners], device=device
        )
        epochs = np.array([run.epoch for run in learner.learners])
        batches = np.array([run.position for run in learner.learners])
        losses, epoch_end = learner.apply_pending(weights, ~restart if restart.any() else None)
        epoch_end = epoch_end.cpu().numpy()
        self.steps += 1
        after = np.array([run.epoch for run in learner.learners])
        terminated = epoch_end & (after >= self.epochs)
        potentials = {}
        if self.reward == "val":
            for k in np.flatnonzero(epoch_end):
                val = torch.tensor(learner.split_losses(int(k), "val"), device=device)
                potentials[int(k)] = -float((val / self.base_losses[k]).mean())
        next_losses = self._current = learner.forward_pending()
        finite = torch.isfinite(next_losses).all(-1) & torch.isfinite(losses).all(-1)
        diverged = ~finite.cpu().numpy()
        if self.reward == "val":
            rewards = np.zeros(self.num_envs)
            for k, potential in potentials.items():
                rewards[k] = potential - self._potential[k]
                self._potential[k] = potential
        else:
            rewards = (
                improvable_gap_reward(losses, next_losses, self.base_losses, alpha, self.reward)
                .cpu()
                .numpy()
                .astype(np.float64)
            )
        diverged &= ~restart
        rewards[diverged | restart] = 0.0
        truncated = diverged.copy()
        if self.max_steps is not None:
            truncated |= self.steps >= self.max_steps
        truncated &= ~terminated & ~restart
        step_info = {
            "losses": losses.cpu().numpy(),
            "weights": weights.cpu().numpy(),
            "epoch": epochs,
            "batch": batches,
            "alpha": alpha.cpu().numpy().astype(np.float64),  # as SyncVectorEnv stacks floats
            "diverged": diverged,
        }
        obs = final_obs = self._obs()
        done = terminated | truncated
        if mode != AutoresetMode.SAME_STEP:
            self._ended = done
            if not restart.any():
                infos = vector_infos.masked(step_info, np.ones_like(done))
                return obs, rewards, terminated, truncated, infos
            self._start([int(k) for k in np.flatnonzero(restart)])
            infos = vector_infos.next_step(step_info, restart, self._reset_info())
            return self._obs(), rewards, terminated, truncated, infos
        if done.any():
            self._start([int(k) for k in np.flatnonzero(done)])
            obs = self._obs()
        # The reset info (a device-to-host copy) only on the steps that reset a run.
        reset_info = self._reset_info() if done.any() else {}
        infos = vector_infos.same_step(step_info, done, final_obs, reset_info)
        return obs, rewards, terminated, truncated, infos

    def evaluate(self, split: str = "test", index: int = 0) -> dict[str, float]:
        """Per-task metrics of slot ``index``'s current network on ``split``. Under
        ``SAME_STEP`` autoreset a slot that ended has already started its next run; read a
        finished run with ``autoreset_mode="Disabled"`` or ``"NextStep"``, before its reset."""
        if not is_int(index) or not 0 <= index < self.num_envs:  # -1 is no slot here
            raise ConfigError(
                f"`index` must be a slot, an int in [0, {self.num_envs}); got {index!r}."
            )
        return self.learner.evaluate(index, split)
