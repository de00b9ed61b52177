import pytest
import torch
from torch import nn

from mtl_envs.errors import ConfigError
from mtl_envs.models import (
    BACKBONES,
    TASK_NETWORKS,
    build_backbone,
    build_multi_head_net,
    build_task_network,
)
from mtl_envs.models.backbones import MLP, VGG16, SmallCNN
from mtl_envs.models.heads import two_layer_head
from mtl_envs.models.task_networks import (
    HardSharing,
    STLTaskInfo,
    mlp,
    stacked_layers,
    with_metadata,
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


def test_vgg16_width_multiplier_scales_every_conv_layer():
    net = VGG16(3, 32, width_multiplier=0.25)
    widths = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]
    assert net.out_features == 128 and net(torch.zeros(2, 3, 32, 32)).shape == (2, 128)


@pytest.mark.parametrize("size, pools", [(32, 3), (16, 2), (8, 1)])
def test_small_cnn_pools_only_down_to_a_4x4_map(size, pools):
    net = SmallCNN(1, size)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == pools
    before_global_pool = net.features[:-2](torch.zeros(2, 1, size, size))
    assert before_global_pool.shape == (2, 128, 4, 4)


def test_mlp_backbone_is_relu_layers_of_the_given_widths():
    net = MLP(1, 4, hidden=(16, 8))
    assert net.out_features == 8
    assert [type(m) for m in net.net] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert net(torch.randn(5, 1, 4, 4)).shape == (5, 8)
    heads = build_multi_head_net("mlp", (1, 4, 4), [3], {"hidden": [16, 8]}, head_hidden=6)
    assert heads(torch.randn(5, 1, 4, 4))[0].shape == (5, 3)


def test_two_layer_head_has_a_relu_between_its_layers():
    head = two_layer_head(4, 3, hidden=5)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]


def test_build_multi_head_net_passes_head_hidden():
    net = build_multi_head_net("mlp", (1, 8, 8), [3, 4], head_hidden=7)
    assert [[m.out_features for m in h if isinstance(m, nn.Linear)] for h in net.heads] == [
        [7, 3],
        [7, 4],
    ]


# ---------------------------------------------------------------------- task_networks.py
def test_stacked_layers_and_hard_sharing_heads_start_like_nn_linear():
    # nn.Linear's default: U(-1/sqrt(d_in), 1/sqrt(d_in)) for weights and bias.
    torch.manual_seed(0)
    (w,) = stacked_layers(3, [100, 4])
    assert w.shape == (3, 101, 4)
    assert 0.09 < float(w.abs().max()) <= 0.1
    net = HardSharing(3, 2, 1, hidden=(64,))
    assert 0.1 < float(net.heads.abs().max()) <= 1 / 8


def test_mlp_has_no_activation_after_its_output_layer_unless_asked():
    assert [type(m) for m in mlp([3, 4, 2])] == [nn.Linear, nn.ReLU, nn.Linear]
    assert [type(m) for m in mlp([3, 4, 2], final_activation=True)][-1] is nn.ReLU
    # A regression network must be able to predict negative values.
    torch.manual_seed(0)
    net = build_task_network("stl_naive", 2, 3, 1)
    assert bool((net(torch.randn(200, 3), torch.zeros(200, dtype=torch.long)) < 0).any())


def test_with_metadata_appends_each_samples_own_tasks_metadata():
    meta = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    x, task = torch.zeros(3, 1), torch.tensor([2, 0, 1])
    assert with_metadata(x, meta, task).tolist() == [[0, 5, 6], [0, 1, 2], [0, 3, 4]]
    # So a network given metadata tells tasks apart on the same input.
    torch.manual_seed(0)
    for name in ("stl_task_info", "hard_sharing"):
        net = build_task_network(name, 3, 1, 1, metadata=meta)
        out = net(torch.ones(3, 1), torch.tensor([0, 1, 2]))
        assert len(set(out.flatten().tolist())) == 3, name


def test_stl_task_info_without_metadata_gets_a_one_hot_task_code():
    torch.manual_seed(0)
    net = STLTaskInfo(4, 2, 1)
    assert torch.equal(net.metadata, torch.eye(4))
    out = net(torch.ones(4, 2), torch.arange(4))
    assert len(set(out.flatten().tolist())) == 4
