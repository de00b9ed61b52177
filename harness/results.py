"""One result schema for every runner, where results live, and reading them back.

A result is a JSON object with at least ``method``, ``env_id``, ``seed``, ``final`` (test
metrics of the last epoch or the selection) and ``best`` (metrics of the epoch with the best
validation score), plus ``setting`` (a search's setting: a budget, with or without
metadata), ``variant`` (a sweep's override set), ``epochs`` (per-epoch metrics), times,
``status``, the config, the platform and ``concurrent_runs`` (how many runs shared the machine
when it ran); runners add their own fields.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from harness.config import RunConfig
from mtl_envs.errors import ConfigError, PathNotFoundError
from mtl_envs.io import atomic_write_json, read_json


def cpu_model() -> str:
    """The processor's model name (Linux's ``/proc/cpuinfo``, else ``platform.processor()``),
    or ``"unknown"``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def platform_record(torch_threads: int | None = None) -> dict[str, Any]:
    """What a run's numbers depend on beyond its config and seed. Per-seed metrics repeat to
    the last digit only where these match: torch picks its CPU kernels by instruction set
    (``cpu_capability``), and may round differently on another processor of the same set
    (``cpu``; ``docs/auxlabel_results.md`` has seeds that ran the same code under the same
    record otherwise and parted in the sixth digit of the first epoch's loss); that rounding
    is enough to move a whole training run on the chaotic ids (``docs/headroom.md``, "Ten
    seeds, two CPU kernel sets")."""
    import torch

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads() if torch_threads is None else torch_threads,
    }


_concurrent_runs: int | None = 1


@contextlib.contextmanager
def concurrent_runs(count: int | None) -> Iterator[None]:
    """Results made in this block record that their run shared the machine with up to
    ``count - 1`` others (a sweep's workers; ``None``: not known, as on a Ray cluster).
    Metrics do not depend on it; times do, so a ratio of two runs' times (IGB's T) means
    what it says only when both ran alone, or alike."""
    global _concurrent_runs
    before, _concurrent_runs = _concurrent_runs, count
    try:
        yield
    finally:
        _concurrent_runs = before


def portable_kwargs(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Env kwargs as a kept result keeps them: without ``data_root``, a machine's data path,
    which says nothing about the runs."""
    return {k: v for k, v in env_kwargs.items() if k != "data_root"}


def run_dir(config: RunConfig, method: str, seed: int, setting: str | None = None) -> Path:
    """``output_dir/<env_id>/<method>[/<setting>][/<variant>]/seed<k>``: runs of two variants
    (a sweep's override sets, or ``variant=`` labels) never share a folder."""
    base = Path(config.output_dir) / config.env_id / method
    parts = [p for p in (setting, config.variant) if p]
    return base.joinpath(*parts) / f"seed{seed}"


def make_result(
    config: RunConfig,
    method: str,
    seed: int,
    *,
    final: dict[str, float],
    best: dict[str, float] | None = None,
    epochs: list[dict[str, float]] | None = None,
    setting: str | None = None,
    wall_time_s: float = 0.0,
    train_time_s: float | None = None,
    status: str = "completed",
    diverged_epoch: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The result of one run (one method, one seed, one setting) in the common schema."""
    return {
        "method": method,
        "env_id": config.env_id,
        "seed": seed,
        "setting": setting,
        "variant": config.variant,
        "epochs": epochs or [],
        "final": final,
        "best": final if best is None else best,
        "wall_time_s": wall_time_s,
        "train_time_s": wall_time_s if train_time_s is None else train_time_s,
        "status": status,
        "diverged_epoch": diverged_epoch,
        "config": config.to_dict(),
        "platform": platform_record(),
        "concurrent_runs": _concurrent_runs,
        **(extra or {}),
    }


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
    result = make_result(
        config, method, seed, final=final, setting=setting, wall_time_s=wall_time_s, extra=extra
    )
    atomic_write_json(run_dir(config, method, seed, setting) / "result.json", result)
    return result


NOT_A_RESULT = "compare reads result folders and the result.json files of runs"


def _read_result(path: Path, given: bool) -> Any:
    """The JSON of a result file. A corrupt ``result.json`` is a run's output, recomputed by
    running it again; another file named on the command line is the user's own, and is not
    for deleting."""
    if not given:
        return read_json(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"{str(path)!r} is not a result file: it is not valid JSON ({err}); {NOT_A_RESULT}."
        ) from None


def load_results(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Read result JSON files; a directory contributes every ``result.json`` below it.

    A file reached twice (a run folder and the sweep folder holding it) is read once; two
    files of the same run (env id, setting, variant, method and seed) are refused, since a
    comparison would count that seed twice."""
    paths = [Path(p) for p in paths]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.rglob("result.json"))
        elif p.is_file():
            if p.name != "result.json" and p.suffix.lower() != ".json":
                raise ConfigError(
                    f"{str(p)!r} is not a result file: {NOT_A_RESULT} (a run writes "
                    "output_dir/<env_id>/<method>/seed<k>/result.json); give those."
                )
            files.append(p)
        else:
            raise PathNotFoundError(f"Result path {str(p)!r} does not exist.")
    given = {p.resolve() for p in paths if p.is_file()}
    files = list(dict((f.resolve(), f) for f in files).values())
    results, seen = [], {}
    for f in files:
        data = _read_result(f, given=f.resolve() in given and f.name != "result.json")
        if not isinstance(data, dict):
            raise ConfigError(
                f"{f} is not a result file: its JSON is {type(data).__name__} data, not a "
                f"mapping; {NOT_A_RESULT}."
            )
        for key in ("method", "env_id", "seed", "final"):
            if key not in data:
                raise ConfigError(f"{f} is not a result file: missing key {key!r}.")
        run = (data["env_id"], data.get("setting"), data.get("variant"), data["method"])
        run += (data["seed"],)
        if run in seen:
            raise ConfigError(
                f"{seen[run]} and {f} are results of the same run ({data['method']}, seed "
                f"{data['seed']} on {data['env_id']}): a comparison would count that seed "
                "twice. Give each run's folder once."
            )
        seen[run] = f
        results.append(data)
    if not results:
        raise ConfigError(f"No result files (result.json) below {[str(p) for p in paths]}.")
    return results


def default_metric(results: list[dict[str, Any]], which: str = "final") -> str:
    """The headline metric of results: the first of their env family's metrics they hold."""
    from gymnasium.error import Error as GymError

    from mtl_envs.families import FAMILIES, family_of

    try:
        candidates = family_of(results[0]["env_id"]).metrics
    except (ConfigError, GymError):  # an id not registered here: any family's metrics
        candidates = tuple(m for f in FAMILIES.values() for m in f.metrics)
    for key in candidates:
        if key in results[0][which]:
            return key
    raise ConfigError(f"No known headline metric in {sorted(results[0][which])}.")
