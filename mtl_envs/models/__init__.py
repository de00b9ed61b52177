"""Backbones (one registry), heads and multi-head networks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mtl_envs.models.backbones import MLP, VGG16, Backbone, SmallCNN
from mtl_envs.models.heads import MultiHeadNet, two_layer_head
from mtl_envs.utils import lookup

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "vgg16": VGG16,
    "small_cnn": SmallCNN,
    "mlp": MLP,
}


def build_backbone(
    name: str, in_channels: int, image_size: int, kwargs: dict[str, Any] | None = None
) -> Backbone:
    """Instantiate a registered backbone; ``kwargs`` go to its constructor."""
    cls = lookup(BACKBONES, name, kind="backbone")
    try:
        return cls(in_channels, image_size, **(kwargs or {}))
    except TypeError as err:
        raise TypeError(f"Bad `backbone_kwargs` {kwargs!r} for backbone {name!r}: {err}") from None


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
    "MLP",
    "VGG16",
    "Backbone",
    "MultiHeadNet",
    "SmallCNN",
    "build_backbone",
    "build_multi_head_net",
    "two_layer_head",
]
