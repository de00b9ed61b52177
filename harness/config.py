"""Run configs: an env id with its kwargs, methods, seeds and epochs, read from YAML with
``key=value`` overrides; unknown keys are errors that suggest the closest valid one."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtl_envs.errors import ConfigError, PathNotFoundError
from mtl_envs.utils import check_field_types, check_int, check_seeds, config_from_dict


class ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, reading ``1e-5`` as a float (YAML 1.1 wants ``1.0e-5`` and would
    keep the text ``"1e-5"``, which then fails a number check far from where it was
    written), dates as text (a ``variant: 2024-01-01`` label, not a date object results
    cannot store), and refusing a key written twice in one mapping (YAML keeps the last,
    so one of the two settings would be ignored without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)  # merge keys (<<: *anchor) first, as the base class does
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(
                    f"Key {key!r} appears twice in one mapping (line {mark.line + 1}, column "
                    f"{mark.column + 1}); keep one."
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
ConfigLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in ConfigLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: Any) -> Any:
    """Parse YAML text (or a file object) with :class:`ConfigLoader`; malformed YAML is a
    ``ConfigError`` with the line and column the parser stopped at."""
    try:
        return yaml.load(text, Loader=ConfigLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as err:
        name = getattr(text, "name", None)
        where = f" in {name!r}" if isinstance(name, str) else ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where += f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError(f"Malformed YAML{where}: {problem}.") from None


def is_folder_label(label: Any) -> bool:
    """Whether ``label`` can name a run's own folder level (``run_dir``): one path part,
    not ``.`` or ``..`` (which would land in another run's folder) and not ``seed<k>`` (a
    run's seed folder, which result searches take for a finished run)."""
    return (
        isinstance(label, str)
        and label not in ("", ".", "..")
        and not any(c in label for c in "/\\\0")
        and re.fullmatch(r"seed\d+", label) is None
    )


@dataclass
class RunConfig:
    """One experiment: an env id with its kwargs, one or more methods, seeds and epochs."""

    method: str | list[str] = "ppo"
    """Method name(s): ``ppo`` or a baseline (``mtl-envs list`` shows them)."""
    env_id: str = "AuxLabel-Digits-v1"
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
    eval_every: int = 1
    """Epochs between validation evaluations (the last epoch is always evaluated); the test
    split is evaluated once on the final and once on the best-validation network."""

    def __post_init__(self) -> None:
        if isinstance(self.method, str):
            self.method = [self.method]
        if isinstance(self.variant, (int, float)) and not isinstance(self.variant, bool):
            self.variant = str(self.variant)  # `variant=3` from the command line: the label "3"
        if self.variant is not None and not is_folder_label(self.variant):
            raise ConfigError(
                f"`variant` must be a non-empty label without '/' or '\\', other than '.', "
                f"'..' and seed<k> (it names a folder beside the plain run's seed<k>); got "
                f"{self.variant!r}."
            )
        if isinstance(self.seeds, int):
            self.seeds = [self.seeds]
        check_int("epochs", self.epochs)
        check_int("eval_every", self.eval_every)
        check_int("checkpoint_every", self.checkpoint_every, minimum=0)
        if not self.method or not all(isinstance(m, str) and m for m in self.method):
            raise ConfigError(
                f"`method` must be a method name or a non-empty list of them; got {self.method!r}."
            )
        self.seeds = check_seeds("seeds", self.seeds)
        if not isinstance(self.output_dir, (str, os.PathLike)) or not str(self.output_dir):
            raise ConfigError(f"`output_dir` must be a folder path; got {self.output_dir!r}.")
        blocker = file_in_the_way(self.output_dir)
        if blocker == Path(self.output_dir):
            raise ConfigError(f"`output_dir` {str(self.output_dir)!r} is a file, not a folder.")
        if blocker is not None:  # results would be written below a file: refused before training
            raise ConfigError(
                f"`output_dir` {str(self.output_dir)!r} lies under {str(blocker)!r}, which is a "
                "file, not a folder."
            )
        for name in ("env_kwargs", "method_kwargs", "agent", "policy"):
            value = getattr(self, name)
            if value is None:  # a YAML key with nothing (or only comments) under it
                setattr(self, name, {})
            elif not isinstance(value, Mapping):
                raise ConfigError(f"`{name}` must be a mapping of keys to values; got {value!r}.")
        check_field_types(self)

    @property
    def methods(self) -> list[str]:
        return list(self.method)

    def env_settings(self) -> dict[str, Any]:
        """The env's constructor arguments for this run: the registered id's kwargs, then
        ``env_kwargs`` over them."""
        import gymnasium as gym

        import mtl_envs  # noqa: F401  (registers the ids)

        return {**gym.spec(self.env_id).kwargs, **self.env_kwargs}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_file(cls, path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
        """Read a YAML config and apply ``key=value`` overrides (dotted keys reach nested dicts)."""
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"Config file {str(path)!r} is a directory; give a YAML file.")
        if not path.is_file():
            raise PathNotFoundError(f"Config file {str(path)!r} does not exist.")
        with open(path) as f:
            values = load_yaml(f)
        empty = values is None or values == {}  # no text, or only comments
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise ConfigError(
                f"Config {str(path)!r} must be a YAML mapping; got {type(values).__name__}."
            )
        values = apply_overrides(values, overrides)
        if "env_id" not in values and "method" not in values:
            # The defaults alone (ppo on AuxLabel-Digits-v1) are never what a file meant.
            what = "is empty" if empty else "names neither `env_id` nor `method`"
            raise ConfigError(
                f"Config {str(path)!r} {what}: a config must name at least `env_id` or "
                f"`method` (`mtl-envs list` shows both); it would otherwise train "
                f"{cls.method} on {cls.env_id} without a word."
            )
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        return config_from_dict(cls, values)


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The nearest existing part of ``path`` (itself, else its closest existing ancestor) if
    it is not a folder: nothing can be written at or below ``path`` then. ``None`` where that
    part is a folder (or nothing of the path exists)."""
    path = Path(path)
    for part in (path, *path.parents):
        try:
            if part.exists():
                return None if part.is_dir() else part
        except OSError:  # unreadable: the write will say so itself
            return None
    return None


def set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    """Set ``values["a"]["b"] = value`` for the key ``"a.b"``, making (or filling an empty
    YAML entry of) the mappings on the way."""
    target = values
    *parents, leaf = key.strip().split(".")
    for parent in parents:
        if target.get(parent) is None:  # absent, or `env_kwargs:` left empty in the YAML
            target[parent] = {}
        target = target[parent]
        if not isinstance(target, dict):
            raise ConfigError(f"Key {key!r}: {parent!r} is not a mapping.")
    target[leaf] = value


def apply_overrides(values: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict; values are parsed as YAML scalars/lists."""
    values = json.loads(json.dumps(values))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override {item!r} must look like key=value (e.g. epochs=3).")
        key, raw = item.split("=", 1)
        try:
            set_dotted(values, key, load_yaml(raw))
        except ConfigError as err:
            raise ConfigError(f"Override {item!r}: {err}") from None
    return values


def _at_least(minimum: float, convert: type, kind: str, strict: bool = False):
    """An argparse ``type``: ``convert(text)``, refused unless it is finite and >=
    ``minimum`` (> with ``strict``; argparse names the type in its message)."""
    relation = ">" if strict else ">="

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if (
            value is None
            or not math.isfinite(value)
            or value < minimum
            or (strict and value == minimum)
        ):
            raise argparse.ArgumentTypeError(f"expected {kind} {relation} {minimum}; got {text!r}")
        return value

    parse.__name__ = f"{kind} {relation} {minimum}"
    return parse


def int_at_least(minimum: int):
    """An argparse ``type`` for ints >= ``minimum``: ``--rounds 0`` is refused by the parser
    instead of giving a NaN row or a vacuous ratio."""
    return _at_least(minimum, int, "an int")


positive_int = int_at_least(1)


def float_above(minimum: float):
    """An argparse ``type`` for finite floats > ``minimum`` (a learning rate or a time
    budget of 0 would run and measure nothing)."""
    return _at_least(minimum, float, "a finite number", strict=True)


def float_at_least(minimum: float):
    """An argparse ``type`` for finite floats >= ``minimum`` (``nan`` and ``inf`` are
    refused, which ``float`` alone accepts)."""
    return _at_least(minimum, float, "a finite number")
