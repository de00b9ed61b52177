"""MAXL: the meta-gradient through the virtual step, the label mask, a smoke run."""

import pytest
import torch

from baselines.maxl import LabelGenerator, generator_loss
from mtl_envs.data import load_dataset
from mtl_envs.experiment import RunConfig
from mtl_envs.training import AuxLearner, AuxLearnerConfig


@pytest.fixture(scope="module")
def tiny():
    data = load_dataset("digits", device="cpu")
    cfg = AuxLearnerConfig(
        dataset="digits",
        backbone="mlp",
        backbone_kwargs={"hidden": [6]},
        head_hidden=4,
        hierarchy_factor=2,
        lr=0.5,
        device="cpu",
    )
    learner = AuxLearner(cfg, seed=0, dataset=data)
    learner.net.double()
    x = learner.prepare_inputs(data.train.images[:8], train=False).double()
    y = data.train.labels[:8]
    return learner, x, y


def test_generated_labels_stay_in_their_primary_block(tiny):
    learner, x, y = tiny
    gen = LabelGenerator(learner, weight_aware=True).double()
    targets, w = gen(x, y)
    block = torch.arange(targets.shape[1]) // 2
    outside = targets.detach()[block[None, :] != y[:, None]]
    assert float(outside.abs().max()) == 0.0
    torch.testing.assert_close(targets.sum(1), torch.ones(8, dtype=torch.float64))
    assert bool(((w >= 0) & (w <= 1)).all())


@pytest.mark.parametrize("weight_aware", [False, True])
def test_meta_gradient_matches_finite_differences(tiny, weight_aware):
    learner, x, y = tiny
    gen = LabelGenerator(learner, weight_aware=weight_aware).double()
    params = [p for p in gen.parameters()]

    def value() -> torch.Tensor:
        return generator_loss(learner, gen, x, y, entropy_coef=0.2, exponent_range=(-5, 5))

    loss = value()
    analytic = torch.autograd.grad(loss, params)
    h = 1e-6
    for p, g in list(zip(params, analytic))[::3]:  # a few tensors, a few entries each
        flat, grad = p.data.view(-1), g.reshape(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 3)):
            old = flat[i].item()
            flat[i] = old + h
            up = value().item()
            flat[i] = old - h
            down = value().item()
            flat[i] = old
            numeric = (up - down) / (2 * h)
            assert grad[i].item() == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_first_order_approximates_the_second_order_gradient(tiny):
    learner, x, y = tiny
    gen = LabelGenerator(learner, weight_aware=False).double()
    params = list(gen.parameters())

    def grad(first_order: bool) -> torch.Tensor:
        loss = generator_loss(
            learner, gen, x, y, 0.2, (-5, 5), first_order=first_order, fd_epsilon=1e-4
        )
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    exact, approx = grad(False), grad(True)
    assert torch.nn.functional.cosine_similarity(exact, approx, dim=0) > 0.999


@pytest.mark.parametrize("method", ["maxl", "wa_maxl"])
def test_two_epoch_digits_smoke_run(tmp_path, method):
    from baselines import BASELINES

    config = RunConfig(
        method=method,
        env_id="AuxLabel-Digits-v0",
        env_kwargs={"train_subset": 300},
        epochs=2,
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
    )
    result = BASELINES[method](config, 0)
    assert len(result["epochs"]) == 2 and 0.0 <= result["final"]["test/accuracy"] <= 1.0
    assert result["epochs"][-1]["train/aux_loss"] > 0
