import pytest
import torch

from mtl_envs.errors import ConfigError
from mtl_envs.models import (
    BACKBONES,
    TASK_NETWORKS,
    build_backbone,
    build_multi_head_net,
    build_task_network,
)


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


@pytest.mark.parametrize("name", sorted(TASK_NETWORKS))
@pytest.mark.parametrize("metadata", [False, True])
def test_task_networks_pass_gradients_through_functional_call(name, metadata):
    """The batched vector form runs each network through torch.func.functional_call, which
    swaps plain tensors in for the parameters: every parameter must still get the gradient
    a plain call gives it (a sliced ParameterList used to cut the cross-stitch layers')."""
    torch.manual_seed(0)
    meta = torch.randn(3, 2) if metadata else None
    net = build_task_network(name, 3, 2, 1, metadata=meta, kwargs={"hidden": [4, 4]})
    x, task = torch.randn(7, 2), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    net(x, task).square().sum().backward()
    plain = {n: p.grad for n, p in net.named_parameters()}
    params = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    out = torch.func.functional_call(net, params, (x, task))
    grads = torch.autograd.grad(out.square().sum(), list(params.values()), allow_unused=True)
    for (n, expected), got in zip(plain.items(), grads):
        assert got is not None, n
        torch.testing.assert_close(got, expected, msg=n)
