"""Experiment plumbing shared by agents and baselines: run configs, the per-epoch
evaluate-log-record cycle, TensorBoard, JSON results and the comparison table.

No training logic lives here: callers pass a function that trains one epoch through a learner.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mtl_envs.utils import (
    atomic_write_json,
    config_from_dict,
    load_checkpoint,
    read_json,
    suggest,
)


@dataclass
class RunConfig:
    """One experiment: an env id with its kwargs, one or more methods, seeds and epochs."""

    method: str | list[str] = "ppo"
    """Method name(s): ``ppo`` or a baseline (``mtl-envs list`` shows them)."""
    env_id: str = "AuxLabel-Digits-v0"
    """Registered environment id; baselines train the same learner the env would build."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides of the env's constructor arguments (dataset, backbone, lr, ...)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 10
    """Main-network training epochs (for PPO: alternating agent/main cycles, appendix B)."""
    output_dir: str = "results"
    """Results land in ``output_dir/<env_id>/<method>/seed<k>/``."""
    tensorboard: bool = True
    progress: bool = True
    """Show tqdm progress bars."""
    agent: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the SB3 algorithm (learning_rate, n_steps, ...)."""
    policy: dict[str, Any] = field(default_factory=dict)
    """Feature extractor settings for the agent: backbone, image_features, backbone_kwargs."""
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra options of a baseline method."""
    variant: str | None = None
    """A label that keeps this run's rows apart in comparisons (a sweep's override set)."""
    resume: bool = False
    """Continue from the run's checkpoint if there is one; a finished run is not redone."""
    checkpoint_every: int = 1
    """Epochs between checkpoints (0: none). A checkpoint holds the whole training state."""

    def __post_init__(self) -> None:
        if isinstance(self.method, str):
            self.method = [self.method]
        if isinstance(self.seeds, int):
            self.seeds = [self.seeds]
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"`epochs` must be a positive int; got {self.epochs!r}.")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ValueError(
                f"`checkpoint_every` must be an int >= 0; got {self.checkpoint_every!r}."
            )
        if not self.seeds or not all(isinstance(s, int) for s in self.seeds):
            raise ValueError(f"`seeds` must be a non-empty list of ints; got {self.seeds!r}.")

    @property
    def methods(self) -> list[str]:
        return list(self.method)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_file(cls, path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
        """Read a YAML config and apply ``key=value`` overrides (dotted keys reach nested dicts)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, dict):
            raise ValueError(
                f"Config {str(path)!r} must be a YAML mapping; got {type(values).__name__}."
            )
        return cls.from_dict(apply_overrides(values, overrides))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        return config_from_dict(cls, values)


def apply_overrides(values: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict; values are parsed as YAML scalars/lists."""
    values = json.loads(json.dumps(values))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} must look like key=value (e.g. epochs=3).")
        key, raw = item.split("=", 1)
        target = values
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ValueError(f"Override {item!r}: {parent!r} is not a mapping.")
        target[leaf] = yaml.safe_load(raw)
    return values


def run_dir(config: RunConfig, method: str, seed: int, setting: str | None = None) -> Path:
    """``output_dir/<env_id>/<method>[/<setting>]/seed<k>``."""
    base = Path(config.output_dir) / config.env_id / method
    return (base / setting if setting else base) / f"seed{seed}"


def write_result(
    config: RunConfig,
    method: str,
    seed: int,
    final: dict[str, float],
    *,
    setting: str | None = None,
    wall_time_s: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a result without epochs (a search, a selection) in the common layout."""
    result = {
        "method": method,
        "env_id": config.env_id,
        "seed": seed,
        "setting": setting,
        "variant": config.variant,
        "epochs": [],
        "final": final,
        "best": final,
        "wall_time_s": wall_time_s,
        "train_time_s": wall_time_s,
        "config": config.to_dict(),
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
        **(extra or {}),
    }
    atomic_write_json(run_dir(config, method, seed, setting) / "result.json", result)
    return result


class TensorBoardLog:
    """A SummaryWriter that can be switched off; tags are namespaced ``train/``, ``eval/``..."""

    def __init__(self, log_dir: Path | None, purge_step: int | None = None):
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a resumed run is about to write again.
            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def selection_metric(metrics: dict[str, float]) -> tuple[str, int]:
    """The validation score that picks the best epoch, and its direction (+1 = higher)."""
    for key, sign in (("val/accuracy", 1), ("val/mean_accuracy", 1), ("val/mean_mse", -1)):
        if key in metrics:
            return key, sign
    raise KeyError(f"No validation score among {sorted(metrics)}.")


class EpochRecorder:
    """Evaluate val and test after each epoch, log them, keep the best, write the result.

    For loops that do not train epoch by epoch themselves (an SB3 ``learn`` call spanning a
    whole run calls :meth:`record` from a callback); :func:`run_epochs` wraps the common case.
    Training time is the wall time minus the time spent evaluating.
    """

    def __init__(
        self,
        config: RunConfig,
        method: str,
        seed: int,
        evaluate: Callable[[str], dict[str, float]],
        total_epochs: int | None = None,
        first_epoch: int = 0,
    ):
        from tqdm.auto import tqdm

        self.config, self.method, self.seed, self.evaluate = config, method, seed, evaluate
        self.out = run_dir(config, method, seed)
        purge = first_epoch + 1 if first_epoch else None
        self.tb = TensorBoardLog(self.out / "tb" if config.tensorboard else None, purge)
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {}
        self.diverged_epoch: int | None = None
        self.start = time.perf_counter()
        self.eval_time = 0.0
        self.bar = tqdm(
            total=total_epochs or config.epochs,
            desc=f"{method} seed {seed}",
            disable=not config.progress,
        )

    def record(self, epoch: int, train_metrics: dict[str, float]) -> dict[str, float]:
        """Evaluate after (0-based) ``epoch`` and record it with its training metrics."""
        tick = time.perf_counter()
        metrics = dict(train_metrics)
        for split in ("val", "test"):
            metrics.update({f"{split}/{k}": v for k, v in self.evaluate(split).items()})
        # NumPy scalars become Python numbers: the history goes into checkpoints, which hold
        # only plain data (see save_checkpoint), and into JSON.
        metrics = {k: v.item() if _is_numpy_scalar(v) else v for k, v in metrics.items()}
        metrics["epoch"] = epoch + 1
        self.eval_time += time.perf_counter() - tick
        if self.diverged_epoch is None and not all(
            math.isfinite(v) for v in metrics.values() if isinstance(v, (int, float))
        ):
            self.diverged_epoch = epoch + 1  # NaN/inf losses: the runner stops here
        self.history.append(metrics)
        self.tb.scalars(metrics, epoch + 1)
        key, sign = selection_metric(metrics)
        if not self.best or sign * metrics[key] > sign * self.best[key]:
            self.best = dict(metrics)
        self.bar.update(1)
        self.bar.set_postfix({key: f"{metrics[key]:.4f}"})
        return metrics

    @property
    def diverged(self) -> bool:
        return self.diverged_epoch is not None

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best": self.best,
            "eval_time": self.eval_time,
            "elapsed": time.perf_counter() - self.start,
            "diverged_epoch": self.diverged_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.best = state["history"], state["best"]
        self.eval_time, self.diverged_epoch = state["eval_time"], state["diverged_epoch"]
        self.start = time.perf_counter() - state["elapsed"]
        self.bar.update(len(self.history))

    def mark_diverged(self, epoch: int) -> None:
        """Record that training diverged during (1-based) ``epoch`` (e.g. the env said so)."""
        if self.diverged_epoch is None:
            self.diverged_epoch = epoch

    def close(self) -> None:
        self.tb.close()
        self.bar.close()

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``result.json`` atomically and return the result dict.

        ``final`` holds the test metrics after the last epoch, ``best`` those of the epoch
        with the best validation score (the papers report early-stopped numbers);
        ``train_time_s`` the time spent training (IGB's T compares it across methods);
        ``status`` is ``"completed"`` or ``"diverged"`` (with ``diverged_epoch``: a NaN or
        infinite loss stopped the run, and ``final`` holds that epoch's metrics).
        """
        self.close()
        if not self.history:
            raise RuntimeError(f"{self.method} seed {self.seed}: no epoch was recorded.")
        wall = time.perf_counter() - self.start
        result = {
            "method": self.method,
            "env_id": self.config.env_id,
            "seed": self.seed,
            "variant": self.config.variant,
            "epochs": self.history,
            "final": {k: v for k, v in self.history[-1].items() if k.startswith("test/")},
            "best": {
                k: v
                for k, v in self.best.items()
                if k.startswith(("test/", "val/")) or k == "epoch"
            },
            "wall_time_s": wall,
            "train_time_s": wall - self.eval_time,
            "status": "diverged" if self.diverged else "completed",
            "diverged_epoch": self.diverged_epoch,
            "config": self.config.to_dict(),
            "platform": {"python": platform.python_version(), "machine": platform.machine()},
            **(extra or {}),
        }
        atomic_write_json(self.out / "result.json", result)
        return result


class TrainingState:
    """Named parts with ``state_dict``/``load_state_dict`` (learners, labellers), checkpointed
    together; parts without them (stateless labellers) are left out."""

    def __init__(self, **parts: Any):
        self.parts = {k: v for k, v in parts.items() if hasattr(v, "load_state_dict")}

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


def _comparable(config: RunConfig) -> dict[str, Any]:
    """The config as result files store it (JSON types), without the run-control keys."""
    values = json.loads(json.dumps(config.to_dict(), default=str))
    return {k: v for k, v in values.items() if k not in RUN_CONTROL_KEYS}


def check_same_config(config: RunConfig, stored: dict[str, Any] | None, path: Path) -> None:
    """Refuse to continue or reuse ``path`` when it was made with another config."""
    if stored is None:
        raise ValueError(f"{path} records no config; delete it to start the run over.")
    current = _comparable(config)
    differ = [k for k in current if stored.get(k) != current[k]]
    if differ:
        detail = "; ".join(f"`{k}` {stored.get(k)!r} there, {current[k]!r} now" for k in differ)
        raise ValueError(
            f"resume=true found {path} from another config ({detail}). Use another "
            "`output_dir`, or delete it to start the run over."
        )


def finished_result(
    config: RunConfig, method: str, seed: int, setting: str | None = None
) -> dict[str, Any] | None:
    """With ``config.resume``: the run's result if it is written already (and made with this
    config; another config is an error), else None."""
    path = run_dir(config, method, seed, setting) / "result.json"
    if not (config.resume and path.is_file()):
        return None
    result = read_json(path)
    check_same_config(config, result.get("config"), path)
    return result


def resume_point(
    config: RunConfig, method: str, seed: int
) -> tuple[Path, dict[str, Any] | None, dict[str, Any] | None]:
    """The run's ``checkpoint.pt`` path and what ``config.resume`` finds: its finished result
    (the run is done), or the checkpoint's payload (continue from it); None, None otherwise
    (or without ``resume``): start afresh."""
    checkpoint = run_dir(config, method, seed) / "checkpoint.pt"
    if config.resume and checkpoint.is_file():
        payload = load_checkpoint(checkpoint)
        check_same_config(config, payload.get("config"), checkpoint)
        return checkpoint, None, payload
    return checkpoint, finished_result(config, method, seed), None


def _is_numpy_scalar(value: Any) -> bool:
    numpy = sys.modules.get("numpy")  # nothing can be a NumPy scalar if NumPy is not loaded
    return numpy is not None and isinstance(value, numpy.generic)


# What check_plain accepts besides containers, tensors and torch's dtype and device.
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray)


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` unless ``value`` is tensors and plain data all the way down.

    Plain data is what ``torch.load(..., weights_only=True)`` rebuilds without running code:
    ``None``, bools, ints, floats, complex numbers, strings, bytes, ``torch.Size``/``dtype``/
    ``device``, and dicts (``OrderedDict`` too), lists, tuples and sets of those. Exact types
    are checked: a subclass (a NumPy float, a named tuple, an enum) is pickled as its class.

    Args:
        value: what is about to be saved.
        where: the path of ``value`` inside the checkpoint, for the message.
    """
    import torch

    kind = type(value)
    if kind in (dict, OrderedDict):
        for key, item in value.items():
            check_plain(key, f"{where} key {key!r}")
            check_plain(item, f"{where}[{key!r}]")
    elif kind in (list, tuple, set, torch.Size):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
    elif kind in (torch.Tensor, torch.nn.Parameter):
        pass
    elif kind not in _PLAIN_TYPES and not isinstance(value, (torch.dtype, torch.device)):
        raise TypeError(
            f"{where} is a {kind.__module__}.{kind.__qualname__}; checkpoints hold only tensors "
            "and plain data (numbers, strings, None, lists, tuples, dicts), since loading "
            "anything else could run code. Store it as such in the state_dict that returns it."
        )


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename (atomic).

    Raises:
        TypeError: ``payload`` holds something :func:`~mtl_envs.utils.load_checkpoint` would
            refuse (see :func:`check_plain`); caught here, not when a run tries to resume.
    """
    import torch

    check_plain(payload, f"checkpoint {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def save_run(path: Path, epochs: int, state: Any, recorder: EpochRecorder) -> None:
    """Checkpoint a run after ``epochs`` epochs: the runner's ``state`` (``state_dict``), the
    recorder's history and the global RNG states."""
    from mtl_envs.training.common import rng_state

    save_checkpoint(
        path,
        {
            "epoch": epochs,
            "config": _comparable(recorder.config),
            "state": state.state_dict(),
            "recorder": recorder.state_dict(),
            "rng": rng_state(),
        },
    )


def restore_run(payload: dict[str, Any], state: Any, recorder: EpochRecorder) -> None:
    """Load what :func:`save_run` wrote into a freshly built runner."""
    from mtl_envs.training.common import set_rng_state

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
) -> dict[str, Any]:
    """Train ``config.epochs`` epochs, evaluating val and test after each; write the result.

    A run whose losses or metrics turn NaN or infinite stops after that epoch and is written
    with ``status: "diverged"``; no exception escapes, so a sweep goes on.

    Args:
        train_epoch: trains epoch ``e`` and returns its training metrics (``train/...``).
        evaluate: metrics of the current network on a split (``accuracy`` for one task,
            ``mean_accuracy`` or ``mean_mse`` plus per-task metrics for several).
        extra: more fields for the result JSON.
        state: the runner's training state (``state_dict``/``load_state_dict``, e.g. a
            :class:`TrainingState`). With it the run writes ``checkpoint.pt`` every
            ``config.checkpoint_every`` epochs (with the global RNG states and the history so
            far) and ``config.resume`` continues from it; the finished run deletes it.
    """
    checkpoint, finished, payload = resume_point(config, method, seed)
    if finished is not None:
        return finished
    if payload is not None and state is None:
        raise ValueError(f"{method} cannot resume from {checkpoint}: it keeps no state.")
    if config.resume and payload is None and state is None:
        warnings.warn(f"{method} keeps no checkpoint; resume=true starts it over.", stacklevel=2)
    first = payload["epoch"] if payload else 0
    recorder = EpochRecorder(config, method, seed, evaluate, first_epoch=first)
    if payload is not None:
        restore_run(payload, state, recorder)
    try:
        for epoch in range(first, config.epochs):
            recorder.record(epoch, train_epoch(epoch))
            if recorder.diverged:
                break
            every = config.checkpoint_every
            if state is not None and every and (epoch + 1) % every == 0:
                save_run(checkpoint, epoch + 1, state, recorder)
    finally:
        recorder.close()
    result = recorder.finish(extra)
    checkpoint.unlink(missing_ok=True)
    return result


# ---------------------------------------------------------------------- comparison
def load_results(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Read result JSON files; a directory contributes every ``result.json`` below it."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("result.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"Result path {str(p)!r} does not exist.")
    results = []
    for f in files:
        data = read_json(f)
        for key in ("method", "env_id", "seed", "final"):
            if key not in data:
                raise ValueError(f"{f} is not a result file: missing key {key!r}.")
        results.append(data)
    if not results:
        raise ValueError("No result files found.")
    return results


METRIC_CANDIDATES = (
    "test/accuracy",
    "test/mean_accuracy",
    "test/raw_mse",
    "test/mean_mse",
    "test/total_gain",
)


def default_metric(results: list[dict[str, Any]], which: str = "final") -> str:
    for key in METRIC_CANDIDATES:
        if key in results[0][which]:
            return key
    raise KeyError(f"No known headline metric in {sorted(results[0][which])}.")


def higher_is_better(metric: str) -> bool:
    """Accuracy-like scores and gains go up; losses, errors, Δm and times go down."""
    leaf = metric.rsplit("/", 1)[-1]
    return leaf.endswith(("accuracy", "precision", "recall", "f1", "gain", "score"))


# Bootstrap resamples of the rliable intervals: 2,000 keeps a table under a second.
BOOTSTRAP_REPS = 2000


def interval_estimates(
    scores: dict[str, list[float]], reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Interquartile mean over runs with a 95% percentile-bootstrap interval (rliable,
    Agarwal et al. 2021), per method: ``{method: (iqm, low, high)}``; one task, so the
    stratified bootstrap resamples runs."""
    from rliable import library as rly
    from rliable import metrics as rly_metrics

    arrays = {m: np.asarray(v, dtype=float).reshape(-1, 1) for m, v in scores.items()}
    with warnings.catch_warnings():
        # arch (rliable's bootstrap) warns that RandomState seeding is deprecated.
        warnings.simplefilter("ignore", FutureWarning)
        point, interval = rly.get_interval_estimates(
            arrays,
            lambda x: np.array([rly_metrics.aggregate_iqm(x)]),
            reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return {
        m: (float(point[m][0]), float(interval[m][0, 0]), float(interval[m][1, 0])) for m in arrays
    }


def improvement_probability(
    x: list[float], y: list[float], higher: bool = True, reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> tuple[float, float, float]:
    """P(X > Y) (Mann-Whitney; ties count half) of a run of X beating one of Y, with a 95%
    bootstrap interval (rliable); ``higher=False`` compares ``-x`` with ``-y``."""
    from rliable import library as rly
    from rliable import metrics as rly_metrics

    sign = 1.0 if higher else -1.0
    pair = [sign * np.asarray(x, float).reshape(-1, 1), sign * np.asarray(y, float).reshape(-1, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        point, interval = rly.get_interval_estimates(
            {"pair": pair},
            rly_metrics.probability_of_improvement,
            reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return _scalar(point["pair"]), _scalar(interval["pair"][0]), _scalar(interval["pair"][1])


def _scalar(value: Any) -> float:
    return float(np.ravel(value)[0])


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(
    results: list[dict[str, Any]],
    metric: str | None = None,
    which: str = "final",
    baseline: str | None = None,
) -> list[dict[str, Any]]:
    """Per (env_id, method): mean and std over seeds of ``metric``, wall time, and for
    multi-task results Δm against ``stl`` (IGB eq. 5) and T, the training time relative to
    ``ew`` on the same seed; per-task means when there are at most 10 tasks.

    With 3 or more seeds a row also holds the interquartile mean with its 95% bootstrap
    interval (``iqm``, ``iqm_low``, ``iqm_high``), and, against ``baseline`` (default:
    ``random`` if present, else ``stl``), the probability that a run of the method beats a
    run of the baseline (``p_improve`` with ``p_low``, ``p_high``). ``oracle`` marks methods
    whose results say they read test data.
    """
    from mtl_envs.training.metrics import delta_m

    if which not in ("final", "best"):
        raise ValueError(f"`which` must be one of ['final', 'best']; got {which!r}.")
    metric = metric or default_metric(results, which)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        # A result's "setting" (a grouping budget, with/without metadata) and "variant" (a
        # sweep's overrides) split one env id into several rows.
        env = " ".join(str(x) for x in (r["env_id"], r.get("setting"), r.get("variant")) if x)
        groups[(env, r["method"])].append(r)
    rows = []
    for (env_id, method), runs in sorted(groups.items()):
        available = sorted(runs[0][which])
        if metric not in runs[0][which]:
            raise KeyError(
                f"Unknown metric {metric!r}.{suggest(metric, available)} Valid: {available}."
            )
        mean, std = _mean_std([float(r[which][metric]) for r in runs])
        row: dict[str, Any] = {
            "env_id": env_id,
            "method": method,
            "metric": metric,
            "mean": mean,
            "std": std,
            "sem": std / math.sqrt(len(runs)),
            "n": len(runs),
            "wall_time_s": sum(float(r.get("wall_time_s", 0.0)) for r in runs) / len(runs),
        }
        stl = {r["seed"]: r for r in groups.get((env_id, "stl"), [])}
        ew = {r["seed"]: r for r in groups.get((env_id, "ew"), [])}
        deltas = []
        for r in runs:
            if r["seed"] in stl:
                try:
                    test_only = {
                        k: v for k, v in stl[r["seed"]][which].items() if k.startswith("test/")
                    }
                    deltas.append(delta_m(r[which], test_only))
                except ValueError:
                    break  # single-task results (AuxLabel): no per-task metrics
        if deltas:
            row["delta_m"], row["delta_m_std"] = _mean_std(deltas)
        ratios = [
            r["train_time_s"] / ew[r["seed"]]["train_time_s"]
            for r in runs
            if r["seed"] in ew and r.get("train_time_s") and ew[r["seed"]].get("train_time_s")
        ]
        if ratios and method != "stl":
            row["T"] = sum(ratios) / len(ratios)
        suffix = metric.rsplit("_", 1)[-1] if metric.split("/")[-1].startswith("mean_") else None
        tasks = sorted(
            {
                k.split("/")[1]
                for k in runs[0][which]
                if suffix and k.count("/") == 2 and k.endswith("/" + suffix)
            }
        )
        if 0 < len(tasks) <= 10:
            row["tasks"] = {
                t: _mean_std([float(r[which][f"test/{t}/{suffix}"]) for r in runs])[0]
                for t in tasks
            }
        row["oracle"] = any(bool(r.get("oracle")) for r in runs)
        row["values"] = [float(r[which][metric]) for r in runs]
        rows.append(row)
    _add_intervals(rows, baseline)
    return rows


def _add_normalized(row: dict[str, Any]) -> None:
    """The IQM and its interval on the env id's reference scale (random 0, best 1), where
    the package has reference scores for this id and metric."""
    from mtl_envs.scores import normalized_score, reference_ids, reference_scores

    env_id = row["env_id"].split(" ")[0]
    if env_id not in reference_ids() or reference_scores(env_id)["metric"] != row["metric"]:
        return
    row["normalized"] = [normalized_score(env_id, row[k]) for k in ("iqm", "iqm_low", "iqm_high")]


def _add_intervals(rows: list[dict[str, Any]], baseline: str | None) -> None:
    """IQM intervals per row and P(improvement) over the env's baseline row (3+ seeds)."""
    by_env: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_env[row["env_id"]][row["method"]] = row
    for methods in by_env.values():
        enough = {m: r["values"] for m, r in methods.items() if len(r["values"]) >= 3}
        if not enough:
            continue
        for m, (iqm, low, high) in interval_estimates(enough).items():
            methods[m].update(iqm=iqm, iqm_low=low, iqm_high=high)
            _add_normalized(methods[m])
        reference = baseline or next((b for b in ("random", "stl") if b in enough), None)
        if reference not in enough:
            continue
        higher = higher_is_better(methods[reference]["metric"])
        for m, values in enough.items():
            if m == reference:
                continue
            p, low, high = improvement_probability(values, enough[reference], higher)
            methods[m].update(p_improve=p, p_low=low, p_high=high, baseline=reference)


SPREADS = ("std", "sem")


def method_label(row: dict[str, Any]) -> str:
    """The method's name, marked when it read test data."""
    return f"{row['method']} [oracle]" if row.get("oracle") else row["method"]


def format_table(rows: list[dict[str, Any]], spread: str = "std") -> str:
    """A plain-text table: env, method, mean +- spread (standard deviation over seeds, or
    ``"sem"``, the standard error), per-task means, Δm, T, seeds, wall time."""
    if spread not in SPREADS:
        raise ValueError(f"`spread` must be one of {list(SPREADS)}; got {spread!r}.")
    if not rows:
        return "(no results)"
    metric = rows[0]["metric"]
    percent = metric.endswith(("accuracy", "precision", "recall", "f1"))
    task_names = sorted({t for r in rows for t in r.get("tasks", {})})
    header = ["env_id", "method", f"{metric} (mean +- {spread})"]
    if any("iqm" in r for r in rows):
        header.append("IQM [95% CI]")
    if any("normalized" in r for r in rows):
        header.append("normalized IQM [95% CI]")
    if any("p_improve" in r for r in rows):
        reference = next(r["baseline"] for r in rows if "baseline" in r)
        header.append(f"P(> {reference}) [95% CI]")
    header += task_names
    if any("delta_m" in r for r in rows):
        header.append("Δm % (lower better)")
    if any("T" in r for r in rows):
        header.append("T")
    header += ["seeds", "wall time (s)"]

    def fmt(v: float) -> str:
        return f"{100 * v:.2f}" if percent else f"{v:.4f}"

    body = []
    for r in rows:
        cells = [r["env_id"], method_label(r), f"{fmt(r['mean'])} +- {fmt(r[spread])}"]
        if "IQM [95% CI]" in header:
            has = "iqm" in r
            cells.append(
                f"{fmt(r['iqm'])} [{fmt(r['iqm_low'])}, {fmt(r['iqm_high'])}]" if has else ""
            )
        if "normalized IQM [95% CI]" in header:
            n = r.get("normalized")
            cells.append(f"{n[0]:.2f} [{n[1]:.2f}, {n[2]:.2f}]" if n else "")
        if any(h.startswith("P(> ") for h in header):
            has = "p_improve" in r
            cells.append(
                f"{r['p_improve']:.2f} [{r['p_low']:.2f}, {r['p_high']:.2f}]" if has else ""
            )
        cells += [fmt(r["tasks"][t]) if t in r.get("tasks", {}) else "" for t in task_names]
        if "Δm % (lower better)" in header:
            cells.append(f"{r['delta_m']:+.2f} +- {r['delta_m_std']:.2f}" if "delta_m" in r else "")
        if "T" in header:
            cells.append(f"{r['T']:.2f}" if "T" in r else "")
        cells += [str(r["n"]), f"{r['wall_time_s']:.1f}"]
        body.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def plot_summary(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Bar chart per env id, saved as PNG: Δm (%, lower is better) with its std over seeds
    where multi-task results have it (the STL reference itself is left out), otherwise the
    headline metric per method: its IQM with the 95% bootstrap interval where there are 3 or
    more seeds, else mean +- std. Oracle methods (which read test data) are hatched grey and
    labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env_id"] for r in rows})
    fig, axes = plt.subplots(1, len(envs), figsize=(max(4, 1.3 * len(rows) + 2), 4), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        sub = [r for r in rows if r["env_id"] == env_id]
        with_dm = [r for r in sub if "delta_m" in r and r["method"] != "stl"]
        if with_dm:
            values = [r["delta_m"] for r in with_dm]
            errors = [r["delta_m_std"] for r in with_dm]
            names, label = [method_label(r) for r in with_dm], "Δm % vs STL (lower is better)"
            ax.axhline(0.0, color="black", linewidth=0.8)
        else:
            with_dm = sub
            values = [r.get("iqm", r["mean"]) for r in sub]
            errors = np.array(
                [
                    [r["iqm"] - r["iqm_low"], r["iqm_high"] - r["iqm"]]
                    if "iqm" in r
                    else [r["std"], r["std"]]
                    for r in sub
                ]
            ).T
            names = [method_label(r) for r in sub]
            has_iqm = any("iqm" in r for r in sub)
            label = rows[0]["metric"] + (" (IQM, 95% CI)" if has_iqm else " (mean +- std)")
            # One scale for every panel, so bars of different env ids compare by eye.
            lo = min(min(r.get("iqm_low", r["mean"] - r["std"]), r["mean"]) for r in rows)
            hi = max(max(r.get("iqm_high", r["mean"] + r["std"]), r["mean"]) for r in rows)
            pad = max(0.01, 0.15 * (hi - lo))
            ax.set_ylim(lo - pad if lo < 0 else max(0.0, lo - pad), hi + pad)
        oracle = [bool(r.get("oracle")) for r in with_dm]
        bars = ax.bar(names, values, yerr=errors, capsize=4, color="tab:blue")
        for bar, is_oracle in zip(bars, oracle):
            if is_oracle:
                bar.set_color("lightgrey")
                bar.set_hatch("//")
                bar.set_edgecolor("dimgrey")
        ax.set_title(env_id)
        ax.set_ylabel(label)
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path
