"""IGBv2: SB3 SAC sets the task weights of a LossWeighting run (IGB section 3.2.2).

    python -m harness.train configs/lossweighting_digits10_sac.yaml [key=value ...]

The schedule of Algorithm 2 and section 4.1: two warm-up epochs with random weights fix L_base
(inside the env's ``reset``); random weights ``n * softmax(z)``, ``z ~ N(0, I)`` (RLW, line 11)
until epoch ``use_epoch`` (6); SAC updates from epoch ``update_epoch`` (4), one round every 50
batches; replay buffer 1e4, learning rate 3e-4, discount 0.99. One episode is the whole
training run. The env maps an action a to ``n * softmax(atanh(a))``, so SAC's tanh-squashed
Gaussian acts as the paper's unbounded pre-softmax action.

Where SB3's SAC differs from the paper's:

* SB3 begins updating at ``learning_starts`` and acts randomly until then; the paper decouples
  the two epochs, so :class:`ScheduledSAC` keeps acting randomly until ``use_epoch``, drawing
  ``tanh(z)``, ``z ~ N(0, I)``: the env's atanh turns that back into RLW's ``n * softmax(z)``
  (SB3 would draw uniformly in the box, whose atanh is logistic, not normal);
* SB3 counts ``train_freq`` from the run's first step; here the rounds start at the first
  step of ``update_epoch``, so that SAC is trained before it acts wherever an epoch has
  fewer than 50 batches (the CPU ids have 3-15);
* SB3's critics read the squashed action ``tanh(u)``; the authors' code feeds them the
  weights ``n * softmax(u)``. Both are functions of the same pre-softmax ``u`` (and both
  actors use the tanh-corrected entropy).

Where the paper is silent, the defaults follow the authors' released implementation
(IGB4MTL, ``methods/SAC_Agent.py`` and ``ImprovableGapBalancing_v2``):

* actor and critics are MLPs with two hidden layers of 128 (``net_arch=[128, 128]``; SB3's
  default is 256), two Q-networks, target smoothing tau = 0.005, and an entropy coefficient
  tuned towards entropy -dim(A) from an initial 0.2 (``ent_coef="auto_0.2"``);
* "updated once every 50 batches" is a round of updates whose size grows with the replay
  buffer: with k = 1 + filled / capacity, a round is ``int(gradient_steps * k / 2)`` steps of
  ``int(batch_size * k / 2)`` transitions (25 steps of 128 while the buffer is nearly empty,
  50 of 256 once it is full; :func:`round_scale`). ``round_scaling="none"`` keeps every round
  at ``gradient_steps`` of ``batch_size``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.save_util import recursive_getattr
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

import mtl_envs  # noqa: F401
from agents.settings import check_agent_values
from harness.config import RunConfig
from harness.lifecycle import TrainingState, restore_run, resume_point, save_run
from harness.recording import EpochRecorder
from harness.registry import method_options
from harness.results import run_dir
from mtl_envs.envs.loss_weighting import EpisodeSettings, LossWeightingEnv
from mtl_envs.errors import ConfigError
from mtl_envs.utils import check_int, check_kwargs, is_int, resolve_device

# IGB section 4.1: SAC lr 3e-4 (alone or with CAGrad/IMTL-G), buffer 1e4, gamma 0.99,
# one round of updates every 50 batches.
SAC_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "buffer_size": 10_000,
    "gamma": 0.99,
    "train_freq": (50, "step"),
    "gradient_steps": 50,
    "batch_size": 256,
    "policy_kwargs": {"net_arch": [128, 128]},
    "ent_coef": "auto_0.2",
    "round_scaling": "buffer",
}
# IGB section 4.1: "1e-4 when combining IGBv2 with MGDA, PCGrad or Nash".
SLOW_AGGREGATORS = ("mgda", "pcgrad", "nash_mtl")
SLOW_LEARNING_RATE = 1e-4
ROUND_SCALINGS = ("buffer", "none")
# SB3 counters an interrupted learn() call needs back (progress drives lr schedules).
RESUMED_COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_current_progress_remaining")
# The arrays of an SB3 ReplayBuffer (``next_observations`` only without
# ``optimize_memory_usage``); the rest of the buffer (spaces, sizes, device) the model builds.
REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
# Algorithm 2: update_e = 4, use_e = 6 (1-indexed epochs).
SCHEDULE_DEFAULTS: dict[str, int] = {"update_epoch": 4, "use_epoch": 6}


def round_scale(filled: int, capacity: int, scaling: str = "buffer") -> float:
    """The factor ``k / 2``, ``k = 1 + filled / capacity``, on a round's gradient steps and
    batch size (``"buffer"``); 1 with ``"none"``."""
    if scaling not in ROUND_SCALINGS:
        raise ConfigError(
            f"`round_scaling` must be one of {list(ROUND_SCALINGS)}; got {scaling!r}."
        )
    if scaling == "none":
        return 1.0
    return (1.0 + min(filled, capacity) / capacity) / 2.0


def scaled_round(
    gradient_steps: int, batch_size: int, filled: int, capacity: int, scaling: str = "buffer"
) -> tuple[int, int]:
    """Gradient steps and batch size of one update round with ``filled`` stored transitions
    (at least one of each)."""
    k2 = round_scale(filled, capacity, scaling)
    return max(1, int(gradient_steps * k2)), max(1, int(batch_size * k2))


def update_rounds(steps: int, first_round: int, train_freq: int) -> range:
    """The env steps after which SAC runs an update round in a run of ``steps`` env steps:
    ``first_round`` (the first step of ``update_epoch``; ``train_freq`` when that is 0) and
    every ``train_freq`` steps after it, none after the last step (the run ends there)."""
    return range(first_round or train_freq, steps, train_freq)


def run_gradient_steps(
    steps: int,
    first_round: int,
    train_freq: int,
    gradient_steps: int,
    capacity: int,
    scaling: str = "buffer",
) -> int:
    """SAC gradient steps in a run of ``steps`` env steps: the rounds of
    :func:`update_rounds`, each of :func:`scaled_round`'s size."""
    return sum(
        scaled_round(gradient_steps, 1, t, capacity, scaling)[0]
        for t in update_rounds(steps, first_round, train_freq)
    )


class ScheduledSAC(SAC):
    """SAC whose first update round comes at ``first_round`` (the start of IGB's update_e)
    and every ``train_freq`` steps after it, whose random-action phase may outlast it (IGB:
    use_e > update_e), whose update rounds may grow with the replay buffer
    (``round_scaling="buffer"``), and whose whole training state can be saved between two
    env steps and resumed.

    SB3 runs a round after every ``train_freq`` steps counted from the run's first step, so
    on an id with fewer than ``train_freq`` batches an epoch the first round could come
    after SAC starts acting (Digits10, 12 batches: at step 50, in epoch 7, where it acts from
    epoch 6). Here the rounds are counted from ``first_round``.

    SB3's own ``save`` keeps the networks but not what an interrupted ``learn`` call needs
    to go on as if never stopped: the replay buffer, the position inside the current rollout
    and the action space's generator. :meth:`state_dict` holds all of it;
    :meth:`request_checkpoint` defers a save to the next point where that state is whole.
    """

    def __init__(
        self,
        *args: Any,
        first_round: int = 0,
        random_steps: int = 0,
        random_action: Callable[[np.random.Generator], np.ndarray] | None = None,
        round_scaling: str = "none",
        **kwargs: Any,
    ):
        round_scale(0, 1, round_scaling)  # fail on a bad name before building anything
        self.round_scaling = round_scaling
        self.random_steps = random_steps
        self.random_action = random_action
        self._pending_save: Callable[[], None] | None = None
        # SB3 updates once more than `learning_starts` steps are stored.
        super().__init__(*args, learning_starts=max(first_round - 1, 0), **kwargs)
        # Rollouts end at first_round + k * train_freq: the first one is cut to its phase.
        self.round_phase = first_round % self.train_freq.frequency
        self._rollout_done = (self.train_freq.frequency - self.round_phase) % (
            self.train_freq.frequency
        )  # steps of the current rollout already collected (a short first one, or a resume)

    def _sample_action(self, learning_starts: int, action_noise=None, n_envs: int = 1):
        start = max(learning_starts, self.random_steps)
        if self.random_action is not None and self.num_timesteps < start:
            # The random phase draws from `random_action` (with the action space's generator,
            # which checkpoints keep) instead of SB3's uniform draw.
            rng = self.action_space.np_random
            scaled = self.policy.scale_action(
                np.array([self.random_action(rng) for _ in range(n_envs)])
            )
            return self.policy.unscale_action(scaled), scaled
        return super()._sample_action(start, action_noise, n_envs)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpointable(self) -> bool:
        """Rollouts of a fixed number of steps: a resumed run knows where it stands."""
        return self.train_freq.unit == TrainFrequencyUnit.STEP

    def request_checkpoint(self, save: Callable[[], None]) -> None:
        """Call ``save`` once the step just taken is stored in the replay buffer, or, when
        that step ends a rollout followed by an update round, after the round."""
        if not self.checkpointable:
            raise ConfigError(
                f"Checkpoints need `train_freq` in steps; got {self.train_freq.unit.value!r}."
            )
        self._pending_save = save

    def _update_due(self) -> bool:
        """Whether ``learn`` runs an update round before the next step."""
        return (
            (self.num_timesteps - self.round_phase) % self.train_freq.frequency == 0
            and self.num_timesteps > self.learning_starts
            and self.gradient_steps != 0
        )

    def _save_pending(self) -> None:
        save, self._pending_save = self._pending_save, None
        if save is not None:
            save()

    def _store_transition(self, *args: Any, **kwargs: Any) -> None:
        super()._store_transition(*args, **kwargs)
        if not self._update_due():
            self._save_pending()

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """One round of updates, sized by :func:`scaled_round` from the buffer's fill."""
        buffer = self.replay_buffer
        filled = buffer.buffer_size if buffer.full else buffer.pos
        gradient_steps, batch_size = scaled_round(
            gradient_steps, batch_size, filled, buffer.buffer_size, self.round_scaling
        )
        super().train(gradient_steps, batch_size)
        self._save_pending()

    def collect_rollouts(self, env, callback, train_freq, replay_buffer, *args, **kwargs):
        if self._rollout_done:  # a resumed run first completes the rollout it was saved in
            left = self.train_freq.frequency - self._rollout_done
            train_freq, self._rollout_done = TrainFreq(left, TrainFrequencyUnit.STEP), 0
        return super().collect_rollouts(env, callback, train_freq, replay_buffer, *args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Networks and optimisers (as SB3 saves them), the entropy coefficient, the replay
        buffer, the step/update counters and the action space's generator."""
        _, variables = self._get_torch_save_params()
        buffer = self.replay_buffer
        return {
            "parameters": self.get_parameters(),
            "variables": {n: recursive_getattr(self, n).detach().cpu() for n in variables},
            # The buffer's contents as tensors, not the buffer object: a checkpoint holds only
            # tensors and plain data, so that loading one cannot run code.
            "replay_buffer": {
                **{
                    name: torch.from_numpy(getattr(buffer, name).copy())
                    for name in REPLAY_ARRAYS
                    if hasattr(buffer, name)
                },
                "pos": int(buffer.pos),
                "full": bool(buffer.full),
            },
            "counters": {k: getattr(self, k) for k in RESUMED_COUNTERS},
            "action_space_rng": self.action_space.np_random.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load :meth:`state_dict`; the next ``learn(..., reset_num_timesteps=False)`` goes on
        from the saved step."""
        self.set_parameters(state["parameters"], exact_match=True, device=self.device)
        for name, value in state["variables"].items():
            recursive_getattr(self, name).data.copy_(value)
        self._load_replay_buffer(state["replay_buffer"])
        for key, value in state["counters"].items():
            setattr(self, key, value)
        self.action_space.np_random.bit_generator.state = state["action_space_rng"]
        self._rollout_done = (self.num_timesteps - self.round_phase) % self.train_freq.frequency

    def _load_replay_buffer(self, saved: dict[str, Any]) -> None:
        """Copy the arrays :meth:`state_dict` saved into this model's (same-sized) buffer."""
        buffer = self.replay_buffer
        for name in REPLAY_ARRAYS:
            if not hasattr(buffer, name):
                continue
            target, value = getattr(buffer, name), saved[name].numpy()
            if value.shape != target.shape:
                raise ConfigError(
                    f"The checkpoint's replay buffer holds {name} of shape {value.shape}; this "
                    f"run's buffer holds {target.shape}. Resume with the `agent.buffer_size` "
                    "the run was started with, or delete the checkpoint to start over."
                )
            np.copyto(target, value)
        buffer.pos, buffer.full = saved["pos"], saved["full"]


class KeepDivergedRun(gym.Wrapper):
    """SB3's DummyVecEnv resets an env in the step that truncates it, before the callbacks
    run: after a diverged step, that reset continues the run (no fresh network and warm-up),
    so that :class:`EpochCallback` records, and the result evaluates, the diverged network."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if info.get("diverged"):
            self.env.unwrapped.continue_run()
        return obs, reward, terminated, truncated, info


class EpochCallback(BaseCallback):
    """Records each finished epoch of the run (evaluation, logging) from inside ``learn``.

    SB3's off-policy ``learn`` collects ``train_freq`` steps per round whatever the
    requested total, so the whole run is one ``learn`` call; this callback cuts the epochs
    and stops ``learn`` (by returning False) once ``epochs`` epochs are recorded.
    """

    def __init__(
        self,
        recorder: EpochRecorder,
        env: LossWeightingEnv,
        epochs: int,
        save: Callable[[], None] | None = None,
        every: int = 1,
    ) -> None:
        super().__init__()
        self.recorder, self.env, self.epochs = recorder, env, epochs
        self.save, self.every = save, every
        self.rewards: list[float] = []
        self.weight_std: list[float] = []
        # The rate of the step just taken: the step that closes an epoch also steps the
        # schedule, so the learner's own rate is the next epoch's by then.
        self.lr = math.nan

    def _on_training_start(self) -> None:
        self.lr = self.env.learner.lr

    def _epoch_metrics(self) -> dict[str, float]:
        return {
            "agent/reward": float(np.mean(self.rewards)) if self.rewards else math.nan,
            "agent/weight_std": float(np.mean(self.weight_std)) if self.weight_std else math.nan,
            "train/lr": self.lr,
        }

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]
        if info.get("diverged"):
            # The env truncated a NaN/inf run: record the epoch of the diverged step as the
            # last one (as run_epochs does), so `final` holds the diverged network's metrics
            # (KeepDivergedRun kept it through SB3's reset) and the last good epoch keeps its
            # own, then stop.
            epoch = int(info["epoch"])
            self.rewards.append(float(self.locals["rewards"][0]))
            self.recorder.record(epoch, {**self._epoch_metrics(), "train/loss": math.nan})
            self.recorder.mark_diverged(epoch + 1)
            return False
        self.rewards.append(float(self.locals["rewards"][0]))
        self.weight_std.append(float(np.std(info["weights"])))
        if self.env.learner.position == 0:  # the step closed an epoch
            self.recorder.record(self.env.learner.epoch - 1, self._epoch_metrics())
            # SB3 writes its training scalars (actor and critic losses, entropy coefficient)
            # every few episodes; the run is one episode, so they are written once an epoch.
            self.model.logger.dump(self.num_timesteps)
            self.rewards, self.weight_std = [], []
            done = len(self.recorder.history)
            if self.save is not None and done < self.epochs and done % self.every == 0:
                self.model.request_checkpoint(self.save)
        self.lr = self.env.learner.lr
        return len(self.recorder.history) < self.epochs and not self.recorder.diverged


def sac_defaults(aggregator: str | None) -> dict[str, Any]:
    """SAC settings of IGB section 4.1 for a run with ``aggregator`` on the shared parameters.

    The paper lowers SAC's learning rate from 3e-4 to 1e-4 when IGBv2 is combined with MGDA,
    PCGrad or Nash-MTL; ``agent.learning_rate`` in a config overrides either.
    """
    defaults = copy.deepcopy(SAC_DEFAULTS)  # SB3 writes into policy_kwargs
    if aggregator in SLOW_AGGREGATORS:
        defaults["learning_rate"] = SLOW_LEARNING_RATE
    return defaults


def schedule_steps(
    update_epoch: int, use_epoch: int, warmup_epochs: int, batches: int
) -> tuple[int, int]:
    """Env steps before SAC's first update round and before it acts.

    Env steps begin in (1-indexed) epoch ``warmup_epochs + 1``, so epoch e starts after
    ``(e - warmup_epochs - 1) * batches`` steps.
    """
    first_round = max(0, (update_epoch - warmup_epochs - 1) * batches)
    random_steps = max(0, (use_epoch - warmup_epochs - 1) * batches)
    return first_round, random_steps


def check_config(config: RunConfig) -> None:
    """Fail before anything trains on ``agent`` keys SB3's SAC does not take, and on an
    episode budget: IGBv2's episode is the whole run, which a truncation would restart."""
    own = {k: v for k, v in config.agent.items() if k != "round_scaling"}
    check_kwargs(
        "agent",
        own,
        SAC,
        owner="SB3 SAC",
        fixed=("policy", "env", "seed", "verbose", "learning_starts"),
    )
    freq = config.agent.get("train_freq", SAC_DEFAULTS["train_freq"])
    if not (isinstance(freq, (list, tuple)) and len(freq) == 2):
        raise ConfigError(
            f"`agent.train_freq` must be [n, 'step'] or [n, 'episode']; got {freq!r}."
        )
    check_agent_values(own, learned_entropy=True)
    if freq[1] == "episode":
        raise ConfigError(
            f"`agent.train_freq` {list(freq)!r} counts episodes, and IGBv2's episode is the "
            "whole training run: SAC would never update before the run ends. Give it in "
            "steps (batches), e.g. [50, 'step']."
        )
    settings = config.env_settings()
    if settings.get("max_steps") is not None:
        raise ConfigError(
            f"`env_kwargs.max_steps` ({settings['max_steps']}) would truncate IGBv2's one "
            "training run and start another inside it; set `epochs` for a shorter run."
        )
    schedule = {**SCHEDULE_DEFAULTS, **method_options(config, "igbv2")}
    for name, value in schedule.items():
        check_int(f"method_kwargs.{name}", value)
    if schedule["use_epoch"] < schedule["update_epoch"]:
        raise ConfigError(
            f"`method_kwargs.use_epoch` ({schedule['use_epoch']}) comes before "
            f"`method_kwargs.update_epoch` ({schedule['update_epoch']}): SAC would set the "
            "weights before its first update (Algorithm 2 trains it from update_epoch and "
            "uses it from use_epoch). Give use_epoch >= update_epoch."
        )
    warmup = settings.get("warmup_epochs", EpisodeSettings.warmup_epochs)
    if is_int(warmup) and config.epochs <= warmup:
        raise ConfigError(
            f"`epochs` must exceed the env's {warmup} warm-up epoch(s) (the agent acts after "
            f"them); got epochs={config.epochs}."
        )
    if config.epochs < schedule["use_epoch"]:
        raise ConfigError(
            f"`method_kwargs.use_epoch` ({schedule['use_epoch']}) is past the run's last "
            f"epoch ({config.epochs}): SAC would never act and the run would be random "
            "weighting. Lower it or raise `epochs`."
        )


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    """Train one LossWeighting run with IGBv2; returns (and writes) the result dict.

    With ``config.checkpoint_every`` the whole state (env and learner, SAC networks,
    optimisers, replay buffer, counters, RNGs) is saved after every that many epochs;
    ``config.resume`` continues a killed run from it.
    """
    check_config(config)
    schedule = {**SCHEDULE_DEFAULTS, **method_options(config, "igbv2")}
    settings = config.env_settings()
    agent_kwargs = {**sac_defaults(settings.get("aggregator")), **config.agent}
    device = agent_kwargs.pop("device", str(resolve_device("auto")))
    agent_kwargs["train_freq"] = tuple(agent_kwargs["train_freq"])
    # What the run resolves beyond its config (JSON types); a resumed run must find the same.
    agent = {k: list(v) if isinstance(v, tuple) else v for k, v in agent_kwargs.items()}
    resolved = {"agent": agent, "schedule": schedule}
    checkpoint, finished, payload = resume_point(config, "igbv2", seed, resolved)
    if finished is not None:
        return finished
    # One epoch more than trained: SB3 auto-resets an env that terminates, which here would
    # start a new run (with its warm-up) before the final evaluation. The extra epoch is
    # never reached: EpochCallback stops learn() when config.epochs epochs are done.
    env = KeepDivergedRun(
        gym.make(config.env_id, **{**config.env_kwargs, "epochs": config.epochs + 1})
    )
    lw = env.unwrapped
    if not isinstance(lw, LossWeightingEnv):
        raise ConfigError(f"`env_id` {config.env_id!r} is not a LossWeighting environment.")
    batches = lw.learner.num_batches
    first_round, random_steps = schedule_steps(
        schedule["update_epoch"], schedule["use_epoch"], lw.warmup_epochs, batches
    )
    model = ScheduledSAC(
        "MlpPolicy",
        env,
        seed=seed,
        device=device,
        verbose=0,
        first_round=first_round,
        random_steps=random_steps,
        random_action=lw.random_weight_action,
        # A copy: SB3 adds keys to policy_kwargs, which would change the resolved settings
        # (and the config's own) after they were compared for a resume.
        **copy.deepcopy(agent_kwargs),
    )
    if config.checkpoint_every and not model.checkpointable:
        raise ConfigError(
            f"`checkpoint_every` needs `agent.train_freq` in steps; got "
            f"{agent_kwargs['train_freq']!r}. Set checkpoint_every=0 to run without checkpoints."
        )
    out = run_dir(config, "igbv2", seed)
    if config.tensorboard:
        from stable_baselines3.common.logger import configure

        model.set_logger(configure(str(out / "tb_agent"), ["tensorboard"]))
    epochs = config.epochs - lw.warmup_epochs
    first = payload["epoch"] if payload else 0
    recorder = EpochRecorder(
        config,
        "igbv2",
        seed,
        lw.evaluate,
        total_epochs=epochs,
        # TensorBoard steps count the warm-up epochs too (the learner's epoch): a resumed
        # run purges the events after the epoch it continues from, not warm-up epochs earlier.
        first_epoch=first + lw.warmup_epochs if first else 0,
        models=lambda: [lw.learner.net],  # SB3's seeded reset builds a new network
    )
    state = TrainingState(env=lw, agent=model)

    def save() -> None:
        save_run(checkpoint, len(recorder.history), state, recorder, resolved)

    callback = EpochCallback(
        recorder, lw, epochs, save if config.checkpoint_every else None, config.checkpoint_every
    )
    try:
        if payload is not None:
            restore_run(payload, state, recorder)
            # SB3's first reset continues the loaded run: no seed from construction, no
            # warm-up.
            lw.continue_run()
            model.get_env()._reset_seeds()
        # The total is an upper bound; the callback ends learn() after `epochs` epochs.
        model.learn(
            (epochs + 1) * batches - model.num_timesteps,
            callback=callback,
            reset_num_timesteps=payload is None,
        )
        result = recorder.finish(resolved)  # while the TensorBoard writer is open
    finally:
        recorder.close()
        env.close()
    checkpoint.unlink(missing_ok=True)
    return result
