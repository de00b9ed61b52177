"""Datasets as in-memory tensors with their task structure.

``DATASETS`` is the one registry of image datasets; :func:`load_dataset` reads one, carves a
stratified validation split and moves everything to the device.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from mtl_envs.data.base import SPLITS, ImageDataset, Split, carve_val_and_subset
from mtl_envs.data.images import (
    DatasetNotFoundError,
    RawImageData,
    read_cifar10,
    read_cifar100,
    read_digits,
    read_svhn,
)
from mtl_envs.data.transforms import Normalize, random_crop_flip
from mtl_envs.utils import lookup, resolve_data_root, resolve_device

DATASETS: dict[str, Callable[..., RawImageData]] = {
    "digits": read_digits,
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "svhn": read_svhn,
}


def load_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    device: str | torch.device = "auto",
    val_fraction: float | int | None = None,
    train_subset: int | None = None,
    split_seed: int = 0,
) -> ImageDataset:
    """Load a registered image dataset onto ``device``.

    Args:
        name: a key of :data:`DATASETS`.
        data_root: folder holding the dataset; default ``$MTL_ENVS_DATA`` or the user cache.
        download: fetch the official files when they are missing.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        val_fraction: stratified validation split taken from the training set (a fraction or
            an image count); ``None`` uses the dataset's default (0.1; 297 images for digits).
        train_subset: keep a stratified subset of this many training images (CPU-sized runs).
        split_seed: seed of the validation split and of the subset (fixed across runs).
    """
    reader = lookup(DATASETS, name, kind="dataset")
    raw = reader(resolve_data_root(data_root), download=download)
    val_size = raw.default_val_size if val_fraction is None else val_fraction
    train, val = carve_val_and_subset(raw.train, val_size, train_subset, split_seed)
    dataset = ImageDataset(
        name=name,
        train=train,
        val=val,
        test=raw.test,
        num_classes=raw.num_classes,
        mean=raw.mean,
        std=raw.std,
        augment=raw.augment,
        num_fine_classes=raw.num_fine_classes,
        class_names=raw.class_names or [],
    )
    return dataset.to(resolve_device(device))


__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetNotFoundError",
    "ImageDataset",
    "Normalize",
    "Split",
    "load_dataset",
    "random_crop_flip",
]
