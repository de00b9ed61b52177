"""Datasets as in-memory tensors with their task structure.

``DATASETS`` is the one registry of image datasets; :func:`load_dataset` reads one, carves a
stratified validation split and moves everything to the device.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from mtl_envs.data.base import SPLITS, ImageDataset, Split, carve_val_and_subset
from mtl_envs.data.images import DATASETS, DatasetNotFoundError
from mtl_envs.data.transforms import Normalize, random_crop_flip
from mtl_envs.errors import ConfigError
from mtl_envs.utils import lookup, resolve_data_root, resolve_device


def load_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    device: str | torch.device = "auto",
    val_fraction: float | int | None = None,
    train_subset: int | None = None,
    split_seed: int = 0,
    label_noise: float = 0.0,
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
        label_noise: the fraction of training and validation images whose primary label is
            replaced by a uniformly drawn other class (symmetric noise, drawn from
            ``split_seed``); test labels and fine labels stay clean.
    """
    reader = lookup(DATASETS, name, kind="dataset")
    raw = reader(resolve_data_root(data_root), download=download)
    val_size = raw.default_val_size if val_fraction is None else val_fraction
    train, val = carve_val_and_subset(raw.train, val_size, train_subset, split_seed)
    if label_noise:
        train, val = (
            _noisy(train, label_noise, raw.num_classes, split_seed, 0),
            _noisy(val, label_noise, raw.num_classes, split_seed, 1),
        )
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
        hflip=raw.hflip,
    )
    return dataset.to(resolve_device(device))


def _noisy(split: Split, rate: float, num_classes: int, seed: int, stream: int) -> Split:
    """``split`` with a ``rate`` fraction of its labels moved to another class at random."""
    if not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ConfigError(f"`label_noise` must be a fraction in [0, 1); got {rate!r}.")
    rng = np.random.default_rng([seed, stream])
    labels = split.labels.cpu().numpy().copy()
    flip = rng.permutation(len(labels))[: round(rate * len(labels))]
    # A shift of 1..C-1 classes: uniform over the other classes.
    labels[flip] = (labels[flip] + rng.integers(1, num_classes, len(flip))) % num_classes
    return Split(
        split.images, torch.as_tensor(labels, device=split.labels.device), split.fine_labels
    )


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
