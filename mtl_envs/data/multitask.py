"""Multi-task datasets: n tasks that share inputs or share an encoder.

Every split stores ``inputs`` (N, ...), ``targets`` (N, n) and a boolean ``mask`` (N, n) that
says which tasks label which sample:

* ``digits10``: 10 one-vs-rest binary tasks on every digit image (shared inputs, full mask);
* ``cifar100_mtl``: 20 tasks, task t = the 5-way fine classification inside superclass t
  (each image belongs to the one task of its superclass);
* tabular regression with task metadata, one task per school, county, cubic or robot arm
  (``cubic``, ``robot_arm``, ``exam``, ``hsb``, ``radon``; see :mod:`mtl_envs.data.tabular`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from mtl_envs.data.base import MultiTaskDataset, MultiTaskSplit, stratified_split
from mtl_envs.data.tabular import read_cubic, read_exam, read_hsb, read_radon, read_robot_arm
from mtl_envs.errors import ConfigError
from mtl_envs.utils import check_int, check_kwargs, lookup, resolve_data_root, resolve_device


def read_digits10(
    data_root, download: bool = False, split_seed: int = 0, labels_per_task: int | None = None
) -> MultiTaskDataset:
    """Ten one-vs-rest binary tasks ("is it digit t?") on scikit-learn's digits.

    ``labels_per_task``: each task labels only that many training images (half of them its
    digit), drawn per task from ``split_seed``; validation and test stay fully labelled. With
    few labels per task, a group's shared encoder learns from its members' labels together:
    the regime where multi-task training helps (ETAP's benchmarks).
    """
    from mtl_envs.data import load_dataset

    base = load_dataset("digits", device="cpu", split_seed=split_seed)

    def convert(split, scarce: bool = False):
        targets = torch.nn.functional.one_hot(split.labels, 10).float()
        mask = torch.ones_like(targets, dtype=torch.bool)
        if scarce and labels_per_task is not None:
            mask = _scarce_labels(split.labels, labels_per_task, split_seed)
        return MultiTaskSplit(split.images, targets, mask)

    return MultiTaskDataset(
        name="digits10",
        train=convert(base.train, scarce=True),
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


def _scarce_labels(labels: torch.Tensor, per_task: int, seed: int) -> torch.Tensor:
    """(N, 10) mask: task t labels ``per_task // 2`` images of digit t and as many others."""
    check_int("labels_per_task", per_task, minimum=2)
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), 10, dtype=torch.bool)
    for t in range(10):
        for members, k in ((labels == t, per_task // 2), (labels != t, per_task - per_task // 2)):
            pool = torch.nonzero(members).flatten()
            if k > len(pool):
                raise ConfigError(
                    f"`labels_per_task` ({per_task}) asks for {k} images of a class with "
                    f"{len(pool)} in the training split."
                )
            mask[pool[torch.randperm(len(pool), generator=generator)[:k]], t] = True
    return mask


def read_cifar100_mtl(data_root, download: bool = False, split_seed: int = 0) -> MultiTaskDataset:
    """CIFAR-100 as 20 tasks: task t classifies the 5 fine classes of superclass t.

    The splits are CIFAR-100's (:func:`~mtl_envs.data.load_dataset`), whose validation set
    of 5,000 training images is balanced by superclass, that is by task (250 each), but not
    by fine class: at split seed 0 a task's five classes hold 35-63 validation images each
    (the test split holds 100 of each). Balancing by fine class would change the training
    images of the ids built on it, a change of their dynamics."""
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


MULTITASK_DATASETS: dict[str, Callable[..., MultiTaskDataset]] = {
    "digits10": read_digits10,
    "cifar100_mtl": read_cifar100_mtl,
    "exam": read_exam,
    "hsb": read_hsb,
    "radon": read_radon,
    "cubic": read_cubic,
    "robot_arm": read_robot_arm,
}


def load_multitask_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    device: str | torch.device = "auto",
    split_seed: int = 0,
    options: dict[str, Any] | None = None,
) -> MultiTaskDataset:
    """Load a registered multi-task dataset onto ``device``.

    ``options`` go to the dataset's reader (e.g. ``num_tasks`` and ``samples_per_task`` of
    ``cubic``); ``split_seed`` picks the split (and the draw of the synthetic datasets).
    """
    check_int("split_seed", split_seed, minimum=0)
    reader = lookup(MULTITASK_DATASETS, name, kind="multi-task dataset")
    options = dict(options or {})
    fixed = ("data_root", "download", "split_seed")
    check_kwargs("dataset_kwargs", options, reader, owner=f"dataset {name!r}", fixed=fixed)
    data = reader(resolve_data_root(data_root), download=download, split_seed=split_seed, **options)
    return data.to(resolve_device(device))


__all__ = [
    "MULTITASK_DATASETS",
    "MultiTaskDataset",
    "MultiTaskSplit",
    "load_multitask_dataset",
    "stratified_split",
]
