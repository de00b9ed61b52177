import pytest
import torch

from mtl_envs.errors import ConfigError
from mtl_envs.models import BACKBONES, build_backbone, build_multi_head_net


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8)])
def test_backbones_and_two_heads(name, shape):
    net = build_multi_head_net(name, shape, [20, 100])
    primary, aux = net(torch.zeros(2, *shape))
    assert primary.shape == (2, 20) and aux.shape == (2, 100)
    # Each head is features -> 512 -> classes (RL-AUX appendix C.1).
    assert [m.out_features for m in net.heads[1] if isinstance(m, torch.nn.Linear)] == [512, 100]


def test_vgg16_has_thirteen_conv_layers_with_batch_norm():
    net = build_backbone("vgg16", 3, 32)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 13 and len(norms) == 13 and net.out_features == 512


def test_unknown_backbone_and_bad_kwargs():
    with pytest.raises(ConfigError, match="Did you mean 'vgg16'"):
        build_backbone("vgg", 3, 32)
    with pytest.raises(ConfigError, match="backbone_kwargs"):
        build_backbone("mlp", 3, 32, {"depth": 3})
