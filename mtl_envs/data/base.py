"""In-memory datasets (image classification, multi-task) with the task structure the envs
need."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from mtl_envs.errors import ConfigError
from mtl_envs.utils import check_choice

SPLITS = ("train", "val", "test")
TASK_TYPES = ("classification", "regression")


@dataclass
class Split:
    """One split held as tensors: ``images`` (N, C, H, W) uint8, ``labels`` (N,) int64.

    ``fine_labels`` is the finer human labelling where a dataset has one (CIFAR-100's
    100 classes under its 20 superclasses), used by the human-auxiliary baseline.
    """

    images: torch.Tensor
    labels: torch.Tensor
    fine_labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> Split:
        fine = None if self.fine_labels is None else self.fine_labels.to(device)
        return Split(self.images.to(device), self.labels.to(device), fine)

    def subset(self, index: np.ndarray) -> Split:
        index_t = torch.as_tensor(index, dtype=torch.long, device=self.labels.device)
        fine = None if self.fine_labels is None else self.fine_labels[index_t]
        return Split(self.images[index_t], self.labels[index_t], fine)


@dataclass
class ImageDataset:
    """A classification dataset with train/val/test splits living on one device.

    Attributes:
        name: registry name.
        train, val, test: the splits.
        num_classes: number of primary classes.
        mean, std: per-channel normalisation statistics in [0, 1] units.
        augment: whether training batches get random crop (4-pixel padding) + flip.
        hflip: whether that augmentation mirrors images (not for house numbers, SVHN).
        num_fine_classes: size of the ``fine_labels`` space, 0 if there is none.
        class_names: primary class names.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    num_fine_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    hflip: bool = True

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.train.images.device

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ConfigError(f"`split` must be one of {list(SPLITS)}; got {name!r}.")
        split = getattr(self, name)
        if len(split) == 0:
            raise ConfigError(f"The {name!r} split of {self.name!r} is empty (val_fraction=0?).")
        return split

    def to(self, device: torch.device) -> ImageDataset:
        return replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


def make_split(images: np.ndarray, labels: np.ndarray, fine: np.ndarray | None = None) -> Split:
    """Wrap numpy arrays (images N x C x H x W uint8) as a CPU :class:`Split`."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ConfigError(f"images must be uint8 N x C x H x W; got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise ConfigError(f"{len(images)} images but {len(labels)} labels")
    return Split(
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.as_tensor(np.asarray(labels), dtype=torch.long),
        None if fine is None else torch.as_tensor(np.asarray(fine), dtype=torch.long),
    )


def stratified_split(labels: np.ndarray, fraction_or_size: float | int, seed: int):
    """Indices (kept, taken) of a stratified split; ``taken`` has the given fraction/size."""
    index = np.arange(len(labels))
    kept, taken = train_test_split(
        index, test_size=fraction_or_size, stratify=labels, random_state=seed
    )
    return np.sort(kept), np.sort(taken)


def carve_val_and_subset(
    train: Split, val_size: float | int, train_subset: int | None, seed: int
) -> tuple[Split, Split]:
    """Take a stratified validation split from ``train``, then optionally subsample train.

    ``val_size`` is a fraction in [0, 1) or a number of images.
    """
    labels = train.labels.numpy()
    n, classes = len(labels), len(np.unique(labels))
    # A stratified split keeps at least one image of every class on each side of it (the
    # count of a fraction is rounded up, as scikit-learn does).
    if isinstance(val_size, float) and 0.0 <= val_size < 1.0:
        count = math.ceil(val_size * n)
    elif isinstance(val_size, int) and not isinstance(val_size, bool):
        count = val_size
    else:
        count = -1
    if count != 0 and not classes <= count <= n - classes:
        raise ConfigError(
            f"`val_fraction` must be 0 or leave one image of each of the {classes} classes on "
            f"both sides of the split: a fraction in [0, 1) or an image count in [{classes}, "
            f"{n - classes}] ({n} training images); got {val_size!r}."
        )
    if count > 0:
        kept, taken = stratified_split(labels, val_size, seed)
        train, val = train.subset(kept), train.subset(taken)
    else:
        val = train.subset(np.arange(0))
    if train_subset is not None:
        n = len(train)
        valid = isinstance(train_subset, int) and not isinstance(train_subset, bool)
        if not valid or not (train_subset == n or classes <= train_subset <= n - classes):
            raise ConfigError(
                f"`train_subset` must be an image count in [{classes}, {n - classes}] (one image "
                f"of each class kept and left out) or {n} (the whole training split); "
                f"got {train_subset!r}."
            )
        if train_subset < n:
            _, taken = stratified_split(train.labels.numpy(), train_subset, seed)
            train = train.subset(taken)
    return train, val


@dataclass
class MultiTaskSplit:
    """``inputs`` (N, ...), ``targets`` (N, n) or (N, n, d), ``mask`` (N, n): which tasks
    label which sample."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("inputs", "targets", "mask"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise ConfigError(f"`{name}` must be a torch.Tensor; got {type(value).__name__}.")
        if self.mask.dim() != 2 or self.mask.dtype != torch.bool:
            raise ConfigError(
                f"`mask` must be a bool tensor (N, n_tasks); got {self.mask.dtype} "
                f"{tuple(self.mask.shape)}."
            )
        n = self.mask.shape[1]
        if self.targets.dim() not in (2, 3) or self.targets.shape[1] != n:
            raise ConfigError(
                f"`targets` must be (N, {n}) or (N, {n}, d) to match `mask` (N, {n}); got "
                f"{tuple(self.targets.shape)}."
            )
        sizes = {k: int(getattr(self, k).shape[0]) for k in ("inputs", "targets", "mask")}
        if len(set(sizes.values())) != 1 or self.inputs.dim() < 2:
            raise ConfigError(
                f"`inputs` (N, ...), `targets` and `mask` must have one row per sample and the "
                f"same N; got {sizes} with inputs {tuple(self.inputs.shape)}."
            )

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def to(self, device: torch.device) -> MultiTaskSplit:
        return MultiTaskSplit(self.inputs.to(device), self.targets.to(device), self.mask.to(device))

    def subset(self, index: np.ndarray | torch.Tensor) -> MultiTaskSplit:
        index = torch.as_tensor(index, dtype=torch.long, device=self.inputs.device)
        return MultiTaskSplit(self.inputs[index], self.targets[index], self.mask[index])

    def task_ids(self) -> torch.Tensor:
        """(N,) the task of each sample, for data where every sample has exactly one."""
        return self.mask.to(torch.uint8).argmax(dim=1)


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
        target_mean, target_std: per-output statistics of z-scored regression targets
            (``target * std + mean`` is the value in the data's units); ``None`` if unscaled.
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
    target_mean: tuple[float, ...] | None = None
    target_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_choice("task_type", self.task_type, TASK_TYPES)
        n = len(self.task_names)
        splits = {name: self.split(name) for name in SPLITS}
        for name, split in splits.items():
            if not isinstance(split, MultiTaskSplit):
                raise ConfigError(f"`{name}` must be a MultiTaskSplit; got {type(split).__name__}.")
            shape = (split.inputs.shape[1:], split.targets.shape[2:], split.mask.shape[1])
            if shape != (self.train.inputs.shape[1:], self.train.targets.shape[2:], n):
                raise ConfigError(
                    f"The {name!r} split has inputs {tuple(split.inputs.shape)} and targets "
                    f"{tuple(split.targets.shape)}; expected (N, "
                    f"{', '.join(map(str, self.train.inputs.shape[1:]))}) inputs as in 'train' "
                    f"and targets for the {n} tasks of `task_names`."
                )
            if split.inputs.dtype != torch.uint8 and not split.inputs.is_floating_point():
                raise ConfigError(
                    f"The {name!r} split's inputs must be uint8 images or float features; "
                    f"got {split.inputs.dtype}."
                )
            if split.inputs.is_floating_point() and not bool(split.inputs.isfinite().all()):
                raise ConfigError(f"The {name!r} split's inputs hold NaN or infinite values.")
            labelled = split.targets[split.mask]
            if not bool(labelled.isfinite().all()):
                raise ConfigError(f"The {name!r} split's labelled targets hold NaN or inf values.")
            if self.task_type == "classification" and not bool(
                (
                    (labelled >= 0) & (labelled < self.num_classes) & (labelled == labelled.round())
                ).all()
            ):
                raise ConfigError(
                    f"The {name!r} split's classification targets must be class ids in "
                    f"[0, {self.num_classes}) (`num_classes`)."
                )
        if self.is_image and (len(self.input_shape) != 3 or self.mean is None or self.std is None):
            raise ConfigError(
                f"uint8 image inputs must be (N, C, H, W) with per-channel `mean` and `std`; got "
                f"inputs {tuple(self.train.inputs.shape)}, mean {self.mean}, std {self.std}."
            )
        meta = self.task_metadata
        if meta is not None and (meta.dim() != 2 or meta.shape[0] != n):
            raise ConfigError(f"`task_metadata` must be (n_tasks={n}, m); got {tuple(meta.shape)}.")
        if meta is not None and self.metadata_names and len(self.metadata_names) != meta.shape[1]:
            raise ConfigError(
                f"`metadata_names` has {len(self.metadata_names)} names for "
                f"{meta.shape[1]} metadata columns."
            )

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.inputs.shape[1:])

    @property
    def output_dim(self) -> int:
        """Regression outputs per task: targets are (N, n) for 1 and (N, n, d) for d > 1."""
        return 1 if self.train.targets.dim() == 2 else int(self.train.targets.shape[2])

    @property
    def one_task_per_sample(self) -> bool:
        """Whether every sample belongs to exactly one task (tabular and superclass data)."""
        return all(bool((s.mask.sum(1) == 1).all()) for s in (self.train, self.val, self.test))

    @property
    def is_image(self) -> bool:
        return self.train.inputs.dtype == torch.uint8

    def split(self, name: str) -> MultiTaskSplit:
        if name not in SPLITS:
            raise ConfigError(f"`split` must be one of {list(SPLITS)}; got {name!r}.")
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
