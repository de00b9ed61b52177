"""Sweeps: a grid of runs (methods x seeds x env ids x overrides) in worker processes or on Ray.

A sweep file names a base run config and the grid to expand::

    base: lossweighting_digits10_sac.yaml   # beside this file (else from the working
                                            # directory), or an inline mapping
    grid:
      method: [ew, uw, igbv2]
      seeds: [0, 1, 2]
      env_id: [LossWeighting-Digits10-v1, LossWeighting-Exam-v1]
      overrides:                  # optional variants, each a mapping of dotted keys
        - {env_kwargs.lr: 1.0e-3}
        - {env_kwargs.lr: 3.0e-4}
    output_dir: results/sweep     # every run writes below it; `mtl-envs compare` reads it
    backend: local                # local (a process per run, default) | ray
    workers: 2                    # local: parallel processes
    threads_per_run: 1            # torch threads in each run
    ray: {address: auto, num_cpus: 1, num_gpus: 0}

Each run is one method and one seed. A run that finishes leaves a marker under
``output_dir/.sweep/``; restarting the sweep skips marked runs, so an interrupted sweep
finishes with every result exactly once. A marked run whose config has changed since (the
data path and the sweep folder's place aside) loses its marker and result, then runs again.
A run that raises (a diverged network, a bad argument) is recorded in
``.sweep/<run>.failed.json`` with its traceback, and the others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import RunConfig, apply_overrides, load_yaml, set_dotted
from harness.registry import check_run, same_family
from mtl_envs.errors import ConfigError, MissingDependencyError, PathNotFoundError
from mtl_envs.io import atomic_write_json, read_json
from mtl_envs.utils import check_field_types, check_int, check_number, config_from_dict, suggest

BACKENDS = ("local", "ray")
GRID_KEYS = ("method", "seeds", "env_id", "overrides")
# Run-config keys the sweep sets for every run, with where to set them instead.
SWEEP_SET = {
    "method": "list methods in `grid.method`.",
    "seeds": "list seeds in `grid.seeds`.",
    "env_id": "list ids in `grid.env_id`.",
    "output_dir": "set the sweep's own `output_dir`.",
    "variant": "each override set's label is made from its keys and values.",
    "progress": "a sweep's runs show no progress bars (the sweep reports each run).",
}


@dataclass
class SweepConfig:
    """A grid of runs and where and how to run them."""

    base: str | dict[str, Any] = field(default_factory=dict)
    """A run-config YAML path (relative to the sweep file; failing that, to the working
    directory) or an inline run config."""
    grid: dict[str, Any] = field(default_factory=dict)
    """``method``, ``seeds``, ``env_id`` lists and ``overrides`` (list of mappings)."""
    output_dir: str = "results/sweep"
    backend: str = "local"
    workers: int = 2
    threads_per_run: int = 1
    ray: dict[str, Any] = field(default_factory=dict)
    """``address`` (default ``auto``: an existing cluster), ``num_cpus``, ``num_gpus`` per run."""

    def __post_init__(self) -> None:
        # `base:`, `grid:` or `ray:` with nothing under it: the default, no settings.
        for name in ("base", "grid", "ray"):
            if getattr(self, name) is None:
                setattr(self, name, {})
        check_field_types(self)
        if str(self.output_dir) == "":
            raise ConfigError("`output_dir` must name a folder; got ''.")
        if not isinstance(self.base, (str, os.PathLike, dict)) or str(self.base) == "":
            raise ConfigError(
                "`base` must be the path of a run-config YAML file (relative to the sweep "
                f"file) or an inline mapping of run-config keys; got {self.base!r}."
            )
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"`backend` must be one of {list(BACKENDS)}; got {self.backend!r}."
                f"{suggest(str(self.backend), BACKENDS)}"
            )
        for name in ("workers", "threads_per_run"):
            check_int(name, getattr(self, name))
        for key in self.grid:
            if key not in GRID_KEYS:
                raise ConfigError(
                    f"Unknown grid key {key!r}.{suggest(key, GRID_KEYS)} Valid: {list(GRID_KEYS)}."
                )
        unknown = set(self.ray) - {"address", "num_cpus", "num_gpus"}
        if unknown:
            raise ConfigError(
                f"Unknown `ray` keys {sorted(unknown)}; valid: address, num_cpus, num_gpus."
            )
        for name in ("num_cpus", "num_gpus"):  # Ray takes fractions of a device
            if name in self.ray:
                check_number(f"ray.{name}", self.ray[name], strict=name == "num_cpus")

    @classmethod
    def from_file(cls, path: str | os.PathLike, overrides: Iterable[str] = ()) -> SweepConfig:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"Sweep file {str(path)!r} is a directory; give a YAML file.")
        if not path.is_file():
            raise PathNotFoundError(f"Sweep file {str(path)!r} does not exist.")
        values = load_yaml(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"Sweep file {str(path)!r} must be a YAML mapping.")
        values = apply_overrides(values, overrides)
        if isinstance(values.get("base"), str):
            # Relative to the sweep file; failing that, to the working directory.
            base = Path(values["base"])
            beside = path.parent / base
            if not base.is_absolute() and (beside.is_file() or not base.is_file()):
                base = beside
            values["base"] = str(base)
        return config_from_dict(cls, values)

    def base_values(self) -> dict[str, Any]:
        """The base run config as a plain mapping."""
        if isinstance(self.base, dict):
            return json.loads(json.dumps(self.base))
        path = Path(self.base)
        if path.is_dir():
            raise ConfigError(
                f"Sweep `base` config {str(path)!r} is a directory; give a run-config YAML file."
            )
        if not path.is_file():
            raise PathNotFoundError(f"Sweep `base` config {str(path)!r} does not exist.")
        values = load_yaml(path.read_text())
        if values is None:  # an empty file: the grid names the rest
            return {}
        if not isinstance(values, dict):
            raise ConfigError(
                f"Sweep `base` config {str(path)!r} must be a YAML mapping of run-config keys "
                f"(method, env_id, epochs, ...); got {type(values).__name__} data."
            )
        return values


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: a complete run config (one method, one seed) and its key."""

    key: str
    config: dict[str, Any]


def _as_list(value: Any, name: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"Grid `{name}` must not be empty.")
    return values


def _variant_name(override: dict[str, Any]) -> str:
    text = ",".join(f"{k}={v}" for k, v in sorted(override.items()))
    safe = "".join(c if c.isalnum() or c in "=.,-_" else "_" for c in text)
    if len(safe) > 60:  # keep folder names short but distinct
        safe = safe[:48] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return safe


def expand(sweep: SweepConfig) -> list[RunSpec]:
    """The grid's runs in a fixed order; each config is validated before anything runs.

    Seeds are the outer loop: the methods (and override sets) of one seed run back to back,
    so that a ratio taken on one seed (T, the training time relative to EW) compares
    runs made minutes apart rather than runs at the two ends of a long sweep, whose machine
    may have slowed or sped up in between."""
    base = sweep.base_values()
    grid = sweep.grid
    methods = _as_list(grid.get("method", base.get("method", "ppo")), "method")
    seeds = _as_list(grid.get("seeds", base.get("seeds", [0])), "seeds")
    env_ids = _as_list(grid.get("env_id", base.get("env_id", RunConfig.env_id)), "env_id")
    overrides = _as_list(grid.get("overrides", [{}]), "overrides")
    base_methods = base.get("method") or []
    base_methods = [base_methods] if isinstance(base_methods, str) else list(base_methods)
    base_env = base.get("env_id", RunConfig.env_id)
    if not all(isinstance(o, dict) for o in overrides):
        raise ConfigError("Grid `overrides` must be a list of mappings of dotted keys to values.")
    for override in overrides:
        for key in override:
            top = str(key).split(".")[0]
            if top in SWEEP_SET:
                raise ConfigError(
                    f"Grid `overrides` key {key!r} ({override!r}) is set by the sweep for "
                    f"every run, so the override would be dropped: {SWEEP_SET[top]}"
                )
    runs = []
    for seed, env_id, override, method in itertools.product(seeds, env_ids, overrides, methods):
        variant = _variant_name(override) if override else None
        values = json.loads(json.dumps(base))  # a fresh copy per run
        for key, value in override.items():
            set_dotted(values, key, value)
        values.update(method=method, seeds=[seed], env_id=env_id, progress=False, variant=variant)
        # Absolute, so that workers with another working directory (Ray) write to the same
        # place; on a cluster it must be storage every node shares.
        out = Path(sweep.output_dir).resolve()
        values["output_dir"] = str(out)  # run_dir keeps the variants apart
        # Fail before the sweep starts. The base config's own methods may read keys the
        # grid's methods do not (a grid of baselines over a config written for IGBv2).
        # The base's methods read its sections on the base's family only (`ppo` is another
        # method on another family's ids).
        siblings = [*methods, *(base_methods if same_family(env_id, base_env) else [])]
        check_run(RunConfig.from_dict(values), siblings=siblings)
        key = "__".join(x for x in (env_id, variant, str(method), f"seed{seed}") if x)
        runs.append(RunSpec(key, values))
    keys = [r.key for r in runs]
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise ConfigError(
            f"The grid repeats a run ({repeated[0]!r}): a method, seed or env id listed twice, "
            "or two `overrides` sets with the same keys and values."
        )
    return runs


def _marker_dir(sweep: SweepConfig) -> Path:
    return Path(sweep.output_dir) / ".sweep"


def execute(
    spec_key: str,
    config_values: dict[str, Any],
    marker_dir: str,
    threads: int,
    sharing: int | None = 1,
) -> str:
    """Run one spec in the current process; returns ``"done"`` or ``"failed"``. ``sharing``:
    how many runs share the machine at a time (the local workers; ``None`` on Ray, where the
    cluster decides), which the run's result records.

    Module-level so that worker processes and Ray can ship it.
    """
    import torch

    from harness.registry import resolve
    from harness.results import concurrent_runs

    torch.set_num_threads(threads)
    markers = Path(marker_dir)
    start = time.perf_counter()
    try:
        config = RunConfig.from_dict(config_values)
        runner = resolve(config.env_id, config.methods[0])
        with concurrent_runs(sharing):
            runner(config, config.seeds[0])
    except Exception as err:  # one failing run must not stop the sweep
        atomic_write_json(
            markers / f"{spec_key}.failed.json",
            {
                "run": spec_key,
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - start,
            },
        )
        return "failed"
    (markers / f"{spec_key}.failed.json").unlink(missing_ok=True)
    atomic_write_json(
        markers / f"{spec_key}.done.json",
        {"run": spec_key, "seconds": time.perf_counter() - start, "config": config_values},
    )
    return "done"


def _record_crash(marker_dir: str, spec_key: str, err: BaseException) -> str:
    """A worker that died (killed for memory, a crash in native code) fails its run only."""
    atomic_write_json(
        Path(marker_dir) / f"{spec_key}.failed.json",
        {"run": spec_key, "error": f"{type(err).__name__}: {err}", "traceback": None},
    )
    return "failed"


def _run_local(sweep: SweepConfig, todo: list[RunSpec], report: Callable[[str, str], None]):
    from harness.workers import isolated_calls

    marker_dir = str(_marker_dir(sweep))
    if sweep.workers == 1:
        for spec in todo:
            report(spec.key, execute(spec.key, spec.config, marker_dir, sweep.threads_per_run))
        return
    # Each run in a process of its own: a worker killed for memory fails its run alone.
    # SIGTERM or Ctrl-C stops the workers too: the runs they leave have no done marker,
    # and the next sweep runs them again.
    sharing = min(sweep.workers, len(todo))
    calls = {s.key: (s.key, s.config, marker_dir, sweep.threads_per_run, sharing) for s in todo}
    with contextlib.closing(isolated_calls(execute, calls, sweep.workers)) as finished:
        for key, status in finished:
            if isinstance(status, BaseException):  # the worker process died
                status = _record_crash(marker_dir, key, status)
            report(key, status)


def _run_ray(sweep: SweepConfig, todo: list[RunSpec], report: Callable[[str, str], None]):
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            "`backend: ray` needs Ray, which is not installed: pip install 'mtl-envs[ray]' (or "
            "pip install ray), or use `backend: local`."
        ) from None
    options = dict(sweep.ray)
    address = options.pop("address", "auto")
    if not ray.is_initialized():
        ray.init(address=address)
    remote = ray.remote(
        num_cpus=options.get("num_cpus", sweep.threads_per_run),
        num_gpus=options.get("num_gpus", 0),
    )(execute)
    marker_dir = str(Path(_marker_dir(sweep)).resolve())
    pending = {
        remote.remote(s.key, s.config, marker_dir, sweep.threads_per_run, None): s.key for s in todo
    }
    while pending:
        finished, _ = ray.wait(list(pending), num_returns=1)
        for ref in finished:
            key = pending.pop(ref)
            try:
                status = ray.get(ref)
            except Exception as err:  # the Ray worker died
                status = _record_crash(marker_dir, key, err)
            report(key, status)


def _done_config(marker: Path) -> dict[str, Any] | None:
    """The config a done marker records, or None where there is no finished run's marker
    (none, a cut-short file, or JSON no run wrote): run it (again)."""
    if not marker.is_file():
        return None
    try:
        done = read_json(marker)
    except ConfigError:
        return None
    config = done.get("config") if isinstance(done, dict) else None
    return config if isinstance(config, dict) else None


def _same_run(stored: dict[str, Any], config: dict[str, Any]) -> bool:
    """Whether a done marker's config makes the same run as ``config``: run-control keys
    aside, ``output_dir`` among them, and the data path (``env_kwargs.data_root``), as a
    resumed run compares them; a sweep folder moved or run against another copy of the data
    keeps its finished runs."""
    from harness.lifecycle import same_run

    try:
        return same_run(RunConfig.from_dict(stored), RunConfig.from_dict(config))
    except ConfigError:  # a marker of an older schema: run it again
        return False


def _forget(spec: RunSpec, marker: Path) -> None:
    """Delete the done marker and the result files of a run whose config changed, before
    it runs again: a re-run that fails then leaves no result of the old config for
    ``compare`` to read as the sweep's."""
    values = spec.config
    seed, variant = values["seeds"][0], values.get("variant")
    base = Path(values["output_dir"]) / values["env_id"] / str(values["method"])
    stale = []
    for path in base.glob(f"**/seed{seed}/result.json"):  # every setting (budget) of the run
        try:
            result = read_json(path)
        except ConfigError:
            continue  # unreadable: compare names it, and no run's resume trusts it
        if isinstance(result, dict) and (result.get("seed"), result.get("variant")) == (
            seed,
            variant,
        ):
            stale.append(path)
    marker.unlink(missing_ok=True)
    for path in stale:
        path.unlink()


def run_sweep(sweep: SweepConfig, progress: bool = True) -> dict[str, list[str]]:
    """Run every unfinished run of the grid; returns the keys ``done``, ``skipped``, ``failed``.

    A run is skipped when its done marker holds the same config (see :func:`_same_run`); one
    whose config changed loses its marker and result files, then runs again."""
    from tqdm.auto import tqdm

    runs = expand(sweep)
    markers = _marker_dir(sweep)
    markers.mkdir(parents=True, exist_ok=True)
    skipped, todo = [], []
    for run in runs:
        marker = markers / f"{run.key}.done.json"
        stored = _done_config(marker)
        if stored is not None and _same_run(stored, run.config):
            skipped.append(run.key)
            continue
        if stored is not None:
            _forget(run, marker)
        todo.append(run)
    atomic_write_json(
        markers / "sweep.json",
        {"config": dataclasses.asdict(sweep), "runs": [r.key for r in runs]},
    )
    outcome: dict[str, list[str]] = {"done": [], "skipped": skipped, "failed": []}
    bar = tqdm(total=len(todo), desc="sweep", disable=not progress)

    def report(key: str, status: str) -> None:
        outcome[status].append(key)
        bar.update(1)
        bar.set_postfix(failed=len(outcome["failed"]))

    try:
        if todo:
            (_run_ray if sweep.backend == "ray" else _run_local)(sweep, todo, report)
    finally:
        bar.close()
    return outcome


__all__ = ["RunSpec", "SweepConfig", "execute", "expand", "run_sweep"]
