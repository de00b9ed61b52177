"""Ground-truth MTL gains of task groups (ETAP eq. 1), with an on-disk cache.

``GroupTrainer`` trains one hard-sharing network on a task group under a fixed protocol and
reports each member's validation and test loss; the gain of task t in group G is
``(L_t(STL) - L_t(G)) / L_t(STL)``, where STL is the group {t} under the same protocol. Gains
on the validation split are what a method may learn from; test gains score it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtl_envs.data.multitask import MultiTaskDataset, load_multitask_dataset
from mtl_envs.errors import ConfigError, PathNotFoundError
from mtl_envs.io import atomic_write_json, read_json
from mtl_envs.training.grouping import Group
from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig
from mtl_envs.utils import (
    check_choice,
    check_field_types,
    check_int,
    check_number,
    check_seeds,
    resolve_device,
)

GAIN_SPLITS = ("val", "test")


@dataclass(frozen=True)
class GroupProtocol:
    """How every group is trained; its hash keys the cache, so results never mix protocols."""

    dataset: str = "digits10"
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    """Options of the dataset reader (``labels_per_task`` of ``digits10``)."""
    backbone: str = "mlp"
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: {"hidden": [64]})
    head_hidden: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 100
    epochs: int = 5

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("head_hidden", "batch_size", "epochs"):
            check_int(name, getattr(self, name))
        check_number("lr", self.lr, strict=True)

    def key(self) -> str:
        values = asdict(self)
        if not values["dataset_kwargs"]:  # keys of protocols from before the field stay valid
            del values["dataset_kwargs"]
        text = json.dumps(values, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def learner_config(self, data_root: str | None, device: str) -> MultiTaskLearnerConfig:
        return MultiTaskLearnerConfig(
            dataset=self.dataset,
            dataset_kwargs=dict(self.dataset_kwargs),
            data_root=data_root,
            backbone=self.backbone,
            backbone_kwargs=dict(self.backbone_kwargs),
            head_hidden=self.head_hidden,
            optimizer=self.optimizer,
            lr=self.lr,
            batch_size=self.batch_size,
            device=device,
        )


def mtl_gain(stl_loss: float, group_loss: float) -> float:
    """ETAP eq. 1: relative loss reduction of a task trained in a group versus alone."""
    return (stl_loss - group_loss) / stl_loss


def group_name(group: Iterable[int]) -> str:
    return "-".join(str(t) for t in sorted(group))


def all_groups(num_tasks: int) -> list[Group]:
    """Every non-empty subset of ``range(num_tasks)`` (2^n - 1 groups), smallest first."""
    return [
        g
        for size in range(1, num_tasks + 1)
        for g in itertools.combinations(range(num_tasks), size)
    ]


class GroupTrainer:
    """Train task groups under one protocol and cache their per-task test losses.

    Args:
        protocol: the training protocol.
        cache_dir: where results are kept (``<cache_dir>/<dataset>/<protocol key>/seed<k>/``);
            ``None`` disables the cache.
        data_root, device: passed to the dataset and learner.
    """

    def __init__(
        self,
        protocol: GroupProtocol,
        cache_dir: str | os.PathLike | None = None,
        data_root: str | None = None,
        device: str = "auto",
        dataset: MultiTaskDataset | None = None,
    ):
        self.protocol = protocol
        self.device = str(resolve_device(device))
        self.data_root = data_root
        self.data = dataset or load_multitask_dataset(
            protocol.dataset, data_root, device=self.device, options=protocol.dataset_kwargs
        )
        self.cache = (
            None if cache_dir is None else Path(cache_dir) / protocol.dataset / protocol.key()
        )

    @property
    def num_tasks(self) -> int:
        return self.data.num_tasks

    def _path(self, group: Group, seed: int) -> Path | None:
        return (
            None if self.cache is None else self.cache / f"seed{seed}" / f"{group_name(group)}.json"
        )

    def task_losses(self, group: Sequence[int], seed: int, split: str = "test") -> dict[int, float]:
        """``split`` loss (``"val"`` or ``"test"``) of every task of ``group`` trained
        together (cached; one training run gives both splits)."""
        check_choice("split", split, GAIN_SPLITS)
        group = tuple(sorted(set(group)))
        if not group or min(group) < 0 or max(group) >= self.num_tasks:
            raise ConfigError(
                f"`group` must be a non-empty set of task ids in [0, {self.num_tasks}); "
                f"got {group!r}."
            )
        key = "losses" if split == "test" else "val_losses"
        path = self._path(group, seed)
        if path is not None and path.is_file():
            stored = read_json(path)
            if key in stored:  # caches from before validation losses were kept are redone
                return {int(k): v for k, v in stored[key].items()}
        config = self.protocol.learner_config(self.data_root, self.device)
        learner = MultiTaskLearner(config, seed=seed, dataset=self.data, tasks=list(group))
        for _ in range(self.protocol.epochs):
            learner.train_epoch()
        measured = {
            "losses": dict(zip(group, learner.split_losses("test"))),
            "val_losses": dict(zip(group, learner.split_losses("val"))),
        }
        if path is not None:
            atomic_write_json(
                path,
                {"group": list(group), "seed": seed, **measured, "protocol": asdict(self.protocol)},
            )
        return measured[key]

    def gains(
        self, group: Sequence[int], seeds: Sequence[int] = (0,), split: str = "test"
    ) -> dict[int, float]:
        """ETAP eq. 1 for every task of ``group`` on ``split``, averaged over ``seeds``."""
        seeds = check_seeds("seeds", seeds)
        totals: dict[int, float] = {}
        for seed in seeds:
            losses = self.task_losses(group, seed, split)
            for t, loss in losses.items():
                stl = self.task_losses((t,), seed, split)[t]
                totals[t] = totals.get(t, 0.0) + mtl_gain(stl, loss)
        return {t: v / len(seeds) for t, v in totals.items()}


def shipped_tables() -> list[str]:
    """Names of the gain tables shipped with the package (``load_gain_table(name)``)."""
    from importlib import resources

    folder = resources.files("mtl_envs") / "tables"
    suffix = "_gains.json"
    return sorted(p.name.removesuffix(suffix) for p in folder.iterdir() if p.name.endswith(suffix))


def load_gain_table(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """A gain table written by ``scripts/build_gain_table.py``: a file path, or the name of a
    table shipped with the package (``"digits10"``)."""
    path = Path(name_or_path)
    if not path.is_file():
        from importlib import resources

        shipped = resources.files("mtl_envs") / "tables" / f"{name_or_path}_gains.json"
        if not shipped.is_file():
            raise PathNotFoundError(
                f"No gain table {str(name_or_path)!r}: not a file, and the package ships "
                f"tables for {shipped_tables()}. Build one with scripts/build_gain_table.py."
            )
        path = Path(str(shipped))
    table = read_json(path)
    for key in ("gains", "protocol", "affinity", "task_names"):
        if key not in table:
            raise ConfigError(f"{path} is not a gain table: missing key {key!r}.")
    table.setdefault("path", str(path))
    # What memoised searches over the table key on: its content, wherever it lies.
    table.setdefault("digest", hashlib.sha256(path.read_bytes()).hexdigest())
    return table


def table_affinity(table: dict[str, Any], kind: str) -> np.ndarray:
    """The gain table's (n, n) pairwise affinity scores of ``kind`` ("etap" or "tag")."""
    scores = table["affinity"]
    if not isinstance(scores, dict) or kind not in scores:
        held = sorted(scores) if isinstance(scores, dict) else []
        raise ConfigError(
            f"`affinity` {kind!r}: gain table {table.get('path', table.get('dataset'))!r} "
            f"holds the affinities {held}; rebuild it with scripts/build_gain_table.py."
        )
    return np.asarray(scores[kind], dtype=np.float64)


def _table_part(table: dict[str, Any], split: str, what: str) -> dict[str, Any]:
    check_choice("split", split, GAIN_SPLITS)
    key = what if split == "test" else f"val_{what}"
    if key not in table:
        raise ConfigError(
            f"Gain table {table.get('path', table.get('dataset'))!r} holds no {split} {what}; "
            "rebuild it with scripts/build_gain_table.py."
        )
    return table[key]


def table_gains(table: dict[str, Any], split: str = "test") -> dict[str, dict[str, float]]:
    """A gain table's per-group, per-task gains on ``split`` (``"val"`` or ``"test"``)."""
    return _table_part(table, split, "gains")


def table_losses(table: dict[str, Any], split: str = "test") -> dict[str, dict[str, list]]:
    """A gain table's per-group, per-task losses on ``split``, one per seed."""
    return _table_part(table, split, "losses")
