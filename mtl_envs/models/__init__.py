"""Backbones (one registry), heads and multi-head networks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mtl_envs.models.backbones import MLP, VGG16, Backbone, SmallCNN
from mtl_envs.models.heads import MultiHeadNet, two_layer_head
from mtl_envs.models.hypernet import MultiTaskHypernet, hypernet_parameter_count
from mtl_envs.models.task_networks import (
    DMTRL,
    MRN,
    CrossStitch,
    HardSharing,
    MaxRoam,
    PerTaskNetworks,
    Sluice,
    STLNaive,
    STLTaskInfo,
    TaskNetwork,
)
from mtl_envs.utils import check_kwargs, lookup

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "vgg16": VGG16,
    "small_cnn": SmallCNN,
    "mlp": MLP,
}


TASK_NETWORKS: dict[str, Callable[..., TaskNetwork]] = {
    "hypernet": MultiTaskHypernet,
    "hard_sharing": HardSharing,
    "stl_naive": STLNaive,
    "stl_task_info": STLTaskInfo,
    "per_task": PerTaskNetworks,
    "cross_stitch": CrossStitch,
    "sluice": Sluice,
    "dmtrl": DMTRL,
    "mrn": MRN,
    "maxroam": MaxRoam,
}
"""Networks for samples that each belong to one task; ``forward(x, task)``."""


def build_task_network(
    name: str,
    num_tasks: int,
    in_features: int,
    out_features: int,
    metadata=None,
    kwargs: dict[str, Any] | None = None,
) -> TaskNetwork:
    """Instantiate a registered task network; ``kwargs`` go to its constructor."""
    cls = lookup(TASK_NETWORKS, name, kind="task network")
    fixed = ("num_tasks", "in_features", "out_features", "metadata")
    check_kwargs("model_kwargs", kwargs or {}, cls, owner=f"task network {name!r}", fixed=fixed)
    return cls(num_tasks, in_features, out_features, metadata=metadata, **(kwargs or {}))


def build_backbone(
    name: str, in_channels: int, image_size: int, kwargs: dict[str, Any] | None = None
) -> Backbone:
    """Instantiate a registered backbone; ``kwargs`` go to its constructor."""
    cls = lookup(BACKBONES, name, kind="backbone")
    fixed = ("in_channels", "image_size")
    check_kwargs("backbone_kwargs", kwargs or {}, cls, owner=f"backbone {name!r}", fixed=fixed)
    return cls(in_channels, image_size, **(kwargs or {}))


def build_multi_head_net(
    backbone: str,
    image_shape: Sequence[int],
    head_sizes: Sequence[int],
    backbone_kwargs: dict[str, Any] | None = None,
    head_hidden: int = 512,
) -> MultiHeadNet:
    c, h, _ = image_shape
    return MultiHeadNet(build_backbone(backbone, c, h, backbone_kwargs), head_sizes, head_hidden)


__all__ = [
    "BACKBONES",
    "TASK_NETWORKS",
    "MLP",
    "MultiTaskHypernet",
    "TaskNetwork",
    "VGG16",
    "Backbone",
    "MultiHeadNet",
    "SmallCNN",
    "build_backbone",
    "build_multi_head_net",
    "build_task_network",
    "hypernet_parameter_count",
    "two_layer_head",
]
