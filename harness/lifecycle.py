"""The run lifecycle every runner goes through: resume or start, checkpoint, finish.

No training logic lives here: callers pass a function that trains one epoch through a
learner, or, for runners that own their loop (SAC's ``learn``, a search), use the pieces
(:func:`resume_point`, :func:`save_run`, :func:`restore_run`, :func:`finished_result`).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.config import RunConfig
from harness.recording import EpochRecorder
from harness.results import portable_kwargs, run_dir
from mtl_envs.errors import ConfigError
from mtl_envs.io import load_checkpoint, read_json, rng_state, save_checkpoint, set_rng_state


def stateless(part: Any) -> Any:
    """Mark a run part (a labeller) as having no state a resume needs: rebuilding it from the
    run's seed gives it back whole. Returns ``part``."""
    part.stateless = True
    return part


class TrainingState:
    """Named parts of a run (learners, labellers, agents) checkpointed together.

    Every part has ``state_dict``/``load_state_dict``, is ``None`` or is marked
    :func:`stateless`; anything else is an error, since a part left out of the checkpoint
    would restart from scratch in a resumed run that still reports itself completed.
    """

    def __init__(self, **parts: Any):
        self.parts = {}
        for name, part in parts.items():
            if part is None or getattr(part, "stateless", False):
                continue
            if not (hasattr(part, "state_dict") and hasattr(part, "load_state_dict")):
                raise TypeError(
                    f"Run part {name!r} ({type(part).__name__}) has no state_dict/"
                    "load_state_dict, so a resumed run would restart it from scratch. Give it "
                    "both, or mark it stateless(...) if rebuilding it from the seed restores it."
                )
            self.parts[name] = part

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self.parts.items():
            part.load_state_dict(state[name])


# What steers how runs are executed and stored, not what a run computes.
RUN_CONTROL_KEYS = frozenset(
    (
        "method",
        "seeds",
        "output_dir",
        "tensorboard",
        "progress",
        "variant",
        "resume",
        "checkpoint_every",
    )
)


def _stored(values: Any) -> Any:
    """``values`` as a JSON file stores them (tuples become lists, paths strings)."""
    return json.loads(json.dumps(values, default=str))


def _comparable(config: RunConfig) -> dict[str, Any]:
    """The config as result files store it (JSON types), without the run-control keys."""
    return {k: v for k, v in _stored(config.to_dict()).items() if k not in RUN_CONTROL_KEYS}


def _portable(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config without its machine's data path (``env_kwargs.data_root``), which says
    nothing about the run: results moved to another machine still resume and are reused."""
    kwargs = config.get("env_kwargs")
    if not isinstance(kwargs, dict):
        return config
    return {**config, "env_kwargs": portable_kwargs(kwargs)}


def made_with(config: RunConfig, stored: dict[str, Any] | None) -> bool:
    """Whether a result file's stored config is ``config`` (run-control keys and the data
    path aside)."""
    if stored is None:
        return False
    current, stored = _portable(_comparable(config)), _portable(stored)
    return all(stored.get(k) == v for k, v in current.items())


def same_run(a: RunConfig, b: RunConfig) -> bool:
    """Whether two configs make the same run (run-control keys and the data path aside)."""
    return made_with(b, _comparable(a))


def check_same_config(
    config: RunConfig,
    stored: dict[str, Any] | None,
    path: Path,
    settings: dict[str, Any] | None = None,
    stored_settings: dict[str, Any] | None = None,
) -> None:
    """Refuse to continue or reuse ``path`` when it was made with another config, or with
    other ``settings``: what the runner resolved from the config and its own defaults (an
    agent's hyperparameters, its policy network), which the config alone does not show."""
    if stored is None:
        raise ConfigError(f"{path} records no config; delete it to start the run over.")
    current, stored = _portable(_comparable(config)), _portable(stored)
    differ = [(k, stored.get(k), current[k]) for k in current if stored.get(k) != current[k]]
    if settings and stored_settings is not None:  # a checkpoint from before they were kept
        resolved = _stored(settings)
        there = stored_settings
        differ += [(k, there.get(k), resolved[k]) for k in resolved if there.get(k) != resolved[k]]
    if differ:
        detail = "; ".join(f"`{k}` {old!r} there, {new!r} now" for k, old, new in differ)
        raise ConfigError(
            f"resume=true found {path} from another config ({detail}). Use another "
            "`output_dir`, or delete it to start the run over."
        )


def finished_result(
    config: RunConfig,
    method: str,
    seed: int,
    setting: str | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """With ``config.resume``: the run's result if it is written already (and made with this
    config and these resolved ``settings``, fields of the result; another is an error), else
    None."""
    path = run_dir(config, method, seed, setting) / "result.json"
    if not (config.resume and path.is_file()):
        return None
    result = read_json(path)
    check_same_config(config, result.get("config"), path, settings, result)
    return result


def resume_point(
    config: RunConfig, method: str, seed: int, settings: dict[str, Any] | None = None
) -> tuple[Path, dict[str, Any] | None, dict[str, Any] | None]:
    """The run's ``checkpoint.pt`` path and what ``config.resume`` finds: its finished result
    (the run is done), or the checkpoint's payload (continue from it); None, None otherwise
    (or without ``resume``): start afresh. ``settings`` are what the runner resolved beyond
    the config (see :func:`check_same_config`); the checkpoint or result must hold the same,
    as :func:`save_run` and the result's extra fields record them."""
    checkpoint = run_dir(config, method, seed) / "checkpoint.pt"
    if config.resume and checkpoint.is_file():
        payload = load_checkpoint(checkpoint)
        check_same_config(
            config, payload.get("config"), checkpoint, settings, payload.get("settings")
        )
        return checkpoint, None, payload
    return checkpoint, finished_result(config, method, seed, settings=settings), None


def save_run(
    path: Path,
    epochs: int,
    state: Any,
    recorder: EpochRecorder,
    settings: dict[str, Any] | None = None,
) -> None:
    """Checkpoint a run after ``epochs`` epochs: the runner's ``state`` (``state_dict``), the
    recorder's history, the global RNG states and the run's resolved ``settings`` (compared
    on resume). The time it takes is the recorder's ``checkpoint_time``, kept apart from
    training time."""
    tick = time.perf_counter()
    save_checkpoint(
        path,
        {
            "epoch": epochs,
            "config": _comparable(recorder.config),
            "settings": _stored(settings or {}),
            "state": state.state_dict(),
            "recorder": recorder.state_dict(),
            "rng": rng_state(),
        },
    )
    recorder.checkpoint_time += time.perf_counter() - tick


def restore_run(payload: dict[str, Any], state: Any, recorder: EpochRecorder) -> None:
    """Load what :func:`save_run` wrote into a freshly built runner."""
    state.load_state_dict(payload["state"])
    recorder.load_state_dict(payload["recorder"])
    set_rng_state(payload["rng"])


def run_epochs(
    *,
    config: RunConfig,
    method: str,
    seed: int,
    train_epoch: Callable[[int], dict[str, float]],
    evaluate: Callable[[str], dict[str, float]],
    extra: dict[str, Any] | None = None,
    state: Any | None = None,
    models: Sequence[torch.nn.Module] | Callable[[], Sequence[torch.nn.Module]] | None = None,
) -> dict[str, Any]:
    """Train ``config.epochs`` epochs, evaluating validation every ``config.eval_every``
    epochs and the test split on the final and the best-validation network; write the
    result.

    A run whose losses or metrics turn NaN or infinite stops after that epoch and is written
    with ``status: "diverged"``; no exception escapes, so a sweep goes on.

    Args:
        train_epoch: trains epoch ``e`` and returns its training metrics (``train/...``).
        evaluate: metrics of the current network on a split (``accuracy`` for one task,
            ``mean_accuracy`` or ``mean_mse`` plus per-task metrics for several).
        extra: more fields for the result JSON: the settings the runner resolved before
            training (an agent's hyperparameters with their defaults filled in). A resumed
            run must find the same in its checkpoint or finished result.
        state: the runner's training state (``state_dict``/``load_state_dict``, e.g. a
            :class:`TrainingState`). With it the run writes ``checkpoint.pt`` every
            ``config.checkpoint_every`` epochs (with the global RNG states and the history so
            far) and ``config.resume`` continues from it; the finished run deletes it.
        models: the networks whose best-validation weights the recorder keeps for the test
            evaluation at the end (see :class:`~harness.recording.EpochRecorder`), or a
            function returning them, read at each use (for an env whose reset builds new
            networks).
    """
    checkpoint, finished, payload = resume_point(config, method, seed, extra)
    if finished is not None:
        return finished
    if payload is not None and state is None:
        raise ConfigError(f"{method} cannot resume from {checkpoint}: it keeps no state.")
    if config.resume and payload is None and state is None:
        warnings.warn(f"{method} keeps no checkpoint; resume=true starts it over.", stacklevel=2)
    first = payload["epoch"] if payload else 0
    recorder = EpochRecorder(config, method, seed, evaluate, first_epoch=first, models=models)
    try:
        if payload is not None:
            restore_run(payload, state, recorder)
        for epoch in range(first, config.epochs):
            recorder.record(epoch, train_epoch(epoch))
            if recorder.diverged:
                break
            every = config.checkpoint_every
            if state is not None and every and (epoch + 1) % every == 0:
                save_run(checkpoint, epoch + 1, state, recorder, extra)
        # Before the writer closes: the test split's scalars go to the run's one event file.
        result = recorder.finish(extra)
    finally:
        recorder.close()
    checkpoint.unlink(missing_ok=True)
    return result
