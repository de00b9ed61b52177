"""Feature extractors for the AuxLabel observation ``Dict(image, primary_label)``.

RL-AUX appendix C.2: the agent's backbone (VGG16 in the paper) maps the image to a
256-dimensional representation; linear action and value layers sit on top
(``net_arch=[]``). The one-hot primary label is appended so the policy knows which block of
auxiliary classes it is choosing in.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from mtl_envs.models import build_backbone


class ImageLabelExtractor(BaseFeaturesExtractor):
    """Backbone (any registered ``mtl_envs`` backbone) -> Linear -> ``image_features``,
    concatenated with the one-hot primary label.

    Args:
        observation_space: the ``Dict`` with ``image`` and ``primary_label``.
        backbone: registered backbone name (``"vgg16"`` as in the paper, ``"small_cnn"``).
        image_features: width of the image representation (256, appendix C.2).
        backbone_kwargs: passed to the backbone constructor.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        backbone: str = "small_cnn",
        image_features: int = 256,
        backbone_kwargs: dict[str, Any] | None = None,
    ):
        image_space = observation_space["image"]
        label_space = observation_space["primary_label"]
        c, h, _ = image_space.shape
        super().__init__(observation_space, features_dim=image_features + int(label_space.n))
        net = build_backbone(backbone, c, h, backbone_kwargs)
        self.image_net = nn.Sequential(net, nn.Linear(net.out_features, image_features), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        # SB3 has already scaled the uint8 image to [0, 1] and one-hot encoded the label.
        image = self.image_net(observations["image"].float())
        # The rollout buffer stores a Discrete as (B, 1), so its one-hot arrives as (B, 1, C).
        label = observations["primary_label"].float().flatten(1)
        return torch.cat([image, label], dim=1)
