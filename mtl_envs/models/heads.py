"""Task heads and multi-head networks (hard parameter sharing)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtl_envs.models.backbones import Backbone


def two_layer_head(in_features: int, out_features: int, hidden: int = 512) -> nn.Sequential:
    """features -> ``hidden`` -> classes, the head of RL-AUX appendix C.1."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features)
    )


class MultiHeadNet(nn.Module):
    """A shared backbone with one two-layer head per task; ``forward`` returns all logits.

    Args:
        backbone: the shared feature extractor.
        head_sizes: output width of each head, in task order.
        head_hidden: hidden width of every head.
    """

    def __init__(self, backbone: Backbone, head_sizes: Sequence[int], head_hidden: int = 512):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(
            two_layer_head(backbone.out_features, size, head_hidden) for size in head_sizes
        )

    def forward(self, x: torch.Tensor, heads: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Logits of the selected ``heads`` (default all), in order."""
        features = self.backbone(x)
        chosen = range(len(self.heads)) if heads is None else heads
        return [self.heads[i](features) for i in chosen]
