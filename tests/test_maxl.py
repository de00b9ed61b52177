"""MAXL: the meta-gradient through the virtual step, the label mask, a smoke run."""

import math

import pytest
import torch

from baselines.maxl import LabelGenerator, generator_loss
from harness.config import RunConfig
from mtl_envs.data import load_dataset
from mtl_envs.training import AuxLearner, AuxLearnerConfig


def mlp_config(**settings) -> AuxLearnerConfig:
    """A 6-unit MLP main network on scikit-learn's digits, on the CPU."""
    base = {"backbone_kwargs": {"hidden": [6]}, "head_hidden": 4, "device": "cpu"}
    return AuxLearnerConfig(dataset="digits", backbone="mlp", **{**base, **settings})


def digits_run(tmp_path, epochs: int, **fields) -> RunConfig:
    """A short MAXL run on 300 digits, writing under ``tmp_path``."""
    return RunConfig(
        method=fields.pop("method", "maxl"),
        env_id="AuxLabel-Digits-v1",
        env_kwargs={"train_subset": 300},
        epochs=epochs,
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
        **fields,
    )


def tiny_learner(**overrides):
    """A float64 learner with a 6-unit MLP on digits, psi 2, and its first 8 clean images."""
    data = load_dataset("digits", device="cpu")
    cfg = mlp_config(hierarchy_factor=2, lr=0.5, **overrides)
    learner = AuxLearner(cfg, seed=0, dataset=data)
    learner.net.double()
    x = learner.prepare_inputs(data.train.images[:8], train=False).double()
    y = data.train.labels[:8]
    return learner, x, y


@pytest.fixture(scope="module")
def tiny():
    return tiny_learner()


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


@pytest.mark.parametrize("weight_aware", [False, True])
def test_first_order_approximates_the_second_order_gradient(tiny, weight_aware):
    # Weight-aware, the weight head learns through the finite difference's weighted losses.
    learner, x, y = tiny
    gen = LabelGenerator(learner, weight_aware=weight_aware).double()
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
    from harness.registry import run_method

    config = digits_run(tmp_path, 2, method=method)
    result = run_method(config, method, 0)
    assert len(result["epochs"]) == 2 and 0.0 <= result["final"]["test/accuracy"] <= 1.0
    assert result["epochs"][-1]["train/aux_loss"] > 0


def test_virtual_step_is_the_optimisers_own_update():
    # SGD with momentum 0.9 and weight decay: theta - lr (g + wd theta + 0.9 b).
    from baselines.maxl import virtual_sgd_step

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # the second step has a momentum buffer
        params = dict(net.named_parameters())
        grads = torch.autograd.grad(net(x).pow(2).sum(), list(params.values()))
        virtual = virtual_sgd_step(opt, params, grads)
        for p, g in zip(params.values(), grads):
            p.grad = g.clone()
        opt.step()
        for name, p in net.named_parameters():
            torch.testing.assert_close(virtual[name], p.detach())


def test_virtual_step_takes_each_parameters_own_group_and_refuses_other_sgd_rules():
    # w = 2 in a group at lr 0.1, b = 4 in one at lr 1 and weight decay 0.5, gradients 1:
    # w' = 2 - 0.1 * 1 = 1.9, b' = 4 - 1 * (1 + 0.5 * 4) = 1.
    from baselines.maxl import virtual_sgd_step
    from mtl_envs.errors import ConfigError

    net = torch.nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(2.0)
        net.bias.fill_(4.0)
    groups = [{"params": [net.weight]}, {"params": [net.bias], "lr": 1.0, "weight_decay": 0.5}]
    params = dict(net.named_parameters())
    grads = (torch.ones(1, 1), torch.ones(1))
    virtual = virtual_sgd_step(torch.optim.SGD(groups, lr=0.1), params, grads)
    assert virtual["weight"].item() == pytest.approx(1.9)
    assert virtual["bias"].item() == pytest.approx(1.0)
    for rule in ({"nesterov": True}, {"dampening": 0.1}):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, **rule)
        with pytest.raises(ConfigError, match="without Nesterov or dampening"):
            virtual_sgd_step(opt, params, grads)


def test_focal_primary_loss_option():
    # logits (2, 0), label 0: p = e^2 / (e^2 + 1); focal = -(1 - p)^2 log p (gamma 2).
    import math

    cfg = AuxLearnerConfig(dataset="digits", backbone="mlp", device="cpu", primary_loss="focal")
    learner = AuxLearner(cfg, seed=0)
    learner.num_primary = 2
    logits = torch.tensor([[2.0, 0.0]])
    terms = learner.objective([logits], torch.tensor([0]), None)
    p = math.exp(2) / (math.exp(2) + 1)
    expected = -((1 - p) ** 2) * math.log(p)
    assert float(terms["primary_loss"]) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="primary_loss"):
        AuxLearnerConfig(primary_loss="hinge")


@pytest.mark.parametrize("alternation", ["epoch", "batch"])
def test_maxl_labels_the_inputs_the_main_network_trains_on(tiny, alternation):
    # By batch, the labels come from the generator after its meta-step on these inputs.
    from baselines.maxl import MAXLLabeller

    learner = AuxLearner(tiny[0].config, seed=0, dataset=tiny[0].data)
    labeller = MAXLLabeller(learner, seed=0, alternation=alternation)
    before = [p.detach().clone() for p in labeller.generator.parameters()]
    idx = torch.arange(8)
    x = learner.batch_inputs(idx) + 0.5  # inputs no un-augmented forward would produce
    targets, _ = labeller(idx, x)
    with torch.no_grad():
        expected, _ = labeller.generator(x, learner.data.train.labels[idx])
    torch.testing.assert_close(targets, expected)
    after = list(labeller.generator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before)) == (alternation == "batch")


@pytest.mark.parametrize(
    ("primary_loss", "weight_aware"),
    [("cross_entropy", False), ("focal", False), ("cross_entropy", True)],
)
def test_meta_loss_is_the_primary_loss_after_one_plain_sgd_step(primary_loss, weight_aware):
    """MAXL's meta objective worked out by hand: theta' = theta - lr * grad of the training
    loss (first SGD step, no weight decay), the primary loss the main network trains on at
    theta' (focal: -sum onehot (1 - p)^2 log p, gamma 2), plus 0.2 times sum m log m of the
    batch-mean generated distribution m (0 log 0 = 0). Weight-aware, the training loss weighs
    each sample's auxiliary loss by 2^(lo + (hi - lo) w), here 2^(8 w - 3) for the range
    (-3, 5), from the generator's sigmoid output w."""
    from torch.func import functional_call

    learner, x, y = tiny_learner(momentum=0.0, primary_loss=primary_loss)
    gen = LabelGenerator(learner, weight_aware=weight_aware).double()
    got = generator_loss(learner, gen, x, y, entropy_coef=0.2, exponent_range=(-3, 5))

    with torch.no_grad():
        targets, w = gen(x, y)
    weights = None if w is None else 2.0 ** (8.0 * w - 3.0)
    params = dict(learner.net.named_parameters())
    train_loss = learner.objective(learner.net(x), y, targets, weights)["loss"]
    grads = torch.autograd.grad(train_loss, list(params.values()), allow_unused=True)
    stepped = {n: p if g is None else p - 0.5 * g for (n, p), g in zip(params.items(), grads)}
    logits = functional_call(learner.net, stepped, (x,))[0]
    logp = torch.log_softmax(logits, 1)[torch.arange(8), y]
    focusing = (1 - logp.exp()) ** 2 if primary_loss == "focal" else 1.0
    primary = (-focusing * logp).mean()
    m = targets.mean(0)
    expected = primary + 0.2 * torch.xlogy(m, m).sum()  # 0 log 0 = 0: classes absent here
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
    first_order = generator_loss(learner, gen, x, y, 0.2, (-3, 5), first_order=True)
    assert first_order.item() == pytest.approx(expected.item(), rel=1e-10)


def epoch_learner(**overrides) -> AuxLearner:
    """A float32 MLP learner on 200 digits in batches of 50 whose rate halves every epoch."""
    cfg = mlp_config(
        train_subset=200,
        train_batch_size=50,
        scheduler_step_epochs=1,
        scheduler_gamma=0.5,
        **overrides,
    )
    return AuxLearner(cfg, seed=0)


def test_epoch_alternation_labels_with_a_frozen_generator_then_runs_its_own_pass():
    """MAXL's Algorithm 1 (and its reference code): the main pass labels with a fixed
    generator; then one meta-step per batch over the whole training set in a fresh order, at
    the epoch's learning rate, the main network (weights and batch-norm statistics) fixed."""
    from baselines.maxl import MAXLLabeller

    learner = epoch_learner(augment=True)  # the augmentation path, from the labeller's stream
    labeller = MAXLLabeller(learner, seed=0)  # alternation="epoch" by default
    start = {k: v.clone() for k, v in labeller.generator.state_dict().items()}
    seen = []  # per meta-step: (main lr, main epoch, main SGD steps so far, labels)
    steps = {"main": 0}
    train_batch = learner.train_batch

    def counting_train_batch(*args, **kwargs):
        steps["main"] += 1
        # The generator has not moved while the main network trains.
        for k, v in labeller.generator.named_parameters():
            torch.testing.assert_close(v.detach(), start[k], rtol=0, atol=0)
        return train_batch(*args, **kwargs)

    meta_step = labeller.meta_step

    def recording_meta_step(inputs, y):
        seen.append((learner.lr, learner.epoch, steps["main"], y.clone()))
        meta_step(inputs, y)

    after_batches = labeller.after_batches
    main_state = {}

    def checked_after_batches():
        main_state.update({k: v.clone() for k, v in learner.net.state_dict().items()})
        after_batches()
        for k, v in learner.net.state_dict().items():
            torch.testing.assert_close(v, main_state[k], rtol=0, atol=0)

    learner.train_batch = counting_train_batch
    labeller.meta_step = recording_meta_step
    lr0 = learner.lr
    learner.train_epoch(labeller, checked_after_batches)
    assert steps["main"] == learner.num_batches == 4 and main_state
    # Four meta-steps after all four main steps, before the main schedule halved the rate.
    assert [s[:3] for s in seen] == [(lr0, 0, 4)] * 4
    assert learner.lr == pytest.approx(lr0 / 2) and learner.epoch == 1
    # Every training image once, in another order than the main pass's.
    labels = learner.data.train.labels
    pass_labels = torch.cat([s[3] for s in seen])
    assert torch.equal(pass_labels.sort().values, labels.sort().values)
    assert not torch.equal(pass_labels, labels[learner.order])
    moved = any(not torch.equal(v, start[k]) for k, v in labeller.generator.named_parameters())
    assert moved


def test_epoch_alternation_keeps_the_data_order_of_the_other_baselines():
    # Baselines of one seed see the same batches: the generator pass draws from its own stream.
    from baselines.maxl import MAXLLabeller

    plain, maxl = epoch_learner(augment=True), epoch_learner(augment=True)
    labeller = MAXLLabeller(maxl, seed=0)
    for _ in range(3):
        plain.train_epoch(None)
        maxl.train_epoch(labeller, labeller.after_batches)
        assert torch.equal(plain.order, maxl.order)
        assert torch.equal(plain.generator.get_state(), maxl.generator.get_state())


@pytest.mark.parametrize("alternation", ["epoch", "batch"])
def test_maxl_run_makes_its_generator_pass_once_per_epoch(tmp_path, monkeypatch, alternation):
    from baselines.maxl import MAXLLabeller
    from harness.registry import run_method

    passes = []
    generator_pass = MAXLLabeller.generator_pass
    monkeypatch.setattr(
        MAXLLabeller, "generator_pass", lambda self: (passes.append(1), generator_pass(self))
    )
    config = digits_run(tmp_path, 2, method_kwargs={"alternation": alternation})
    result = run_method(config, "maxl", 0)
    assert len(passes) == (2 if alternation == "epoch" else 0)
    assert result["alternation"] == alternation


def test_a_run_from_before_the_alternation_was_recorded_is_not_resumed(tmp_path):
    # Runs made before the epoch mode alternated by batch under the same config.
    from harness.registry import run_method
    from mtl_envs.io import atomic_write_json, read_json

    config = digits_run(tmp_path, 1)
    result = run_method(config, "maxl", 0)
    assert result["alternation"] == "epoch"
    path = tmp_path / "AuxLabel-Digits-v1" / "maxl" / "seed0" / "result.json"
    old = read_json(path)
    del old["alternation"]
    atomic_write_json(path, old)
    config.resume = True
    with pytest.raises(ValueError, match="alternation"):
        run_method(config, "maxl", 0)


def test_batch_alternation_meta_steps_before_each_label():
    from baselines.maxl import MAXLLabeller

    learner = epoch_learner()
    labeller = MAXLLabeller(learner, seed=0, alternation="batch")
    calls = []
    meta_step = labeller.meta_step
    labeller.meta_step = lambda inputs, y: (calls.append(len(y)), meta_step(inputs, y))
    learner.train_epoch(labeller, labeller.after_batches)
    assert calls == [50] * 4  # one per batch, none after the epoch


def test_alternation_must_be_known():
    from baselines.maxl import MAXLLabeller

    with pytest.raises(
        ValueError, match=r"method_kwargs.alternation.*\['epoch', 'batch'\].*'step'"
    ):
        MAXLLabeller(epoch_learner(), seed=0, alternation="step")


def test_wa_maxl_weights_follow_eq8_from_the_sigmoid_output(tiny):
    """WA-MAXL scales its weights as RL-AUX eq. 8 does: 2^(lo + (hi - lo) w) for the
    generator's sigmoid output w; a weight head whose logit is 0 gives w = 0.5, weight 1,
    and logit ln 3 gives w = 0.75, weight 2^2.5 = 5.657 (read as bins without the x20:
    2^-5 and thereabouts). With the later code's range (-3, 5), w = 0.5 gives 2^1."""
    from baselines.maxl import MAXLLabeller, sample_weights

    torch.testing.assert_close(
        sample_weights(torch.tensor([0.0, 0.5, 0.75, 1.0]), (-5.0, 5.0)),
        torch.tensor([2.0**-5, 1.0, 2.0**2.5, 2.0**5]),
    )
    assert float(sample_weights(torch.tensor(0.5), (-3.0, 5.0))) == pytest.approx(2.0)
    learner = AuxLearner(tiny[0].config, seed=0, dataset=tiny[0].data)
    labeller = MAXLLabeller(learner, seed=0, weight_aware=True)
    head = labeller.generator.net.heads[1][-1]  # the weight head's output layer
    idx = torch.arange(8)
    for bias, expected in ((0.0, 1.0), (math.log(3.0), 2.0**2.5)):
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(bias)
        _, weights = labeller(idx, learner.batch_inputs(idx))
        torch.testing.assert_close(weights, torch.full((8,), expected))
    # The labeller's own range: w = 0.5 under (-3, 5) is 2^(-3 + 8 * 0.5) = 2.
    labeller = MAXLLabeller(learner, seed=0, weight_aware=True, exponent_range=(-3.0, 5.0))
    head = labeller.generator.net.heads[1][-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    _, weights = labeller(idx, learner.batch_inputs(idx))
    torch.testing.assert_close(weights, torch.full((8,), 2.0))


def test_each_meta_step_is_one_sgd_step_of_the_generator_on_the_training_mode_network():
    """The generator's SGD at the reference's defaults (lr 1e-3, weight decay 5e-4):
    phi' = phi - 1e-3 (g + 5e-4 phi) for the meta-gradient g of this batch alone (nothing
    carried over from the step before), the main network in training mode (batch-norm on
    the batch's statistics, also after an evaluation left it in eval mode) and its running
    statistics untouched; the generator's rate follows the main schedule (halved each epoch)."""
    from baselines.maxl import MAXLLabeller

    cfg = AuxLearnerConfig(
        dataset="digits",
        backbone="small_cnn",
        backbone_kwargs={"widths": [3]},
        head_hidden=4,
        device="cpu",
        train_subset=100,
        scheduler_step_epochs=1,
        scheduler_gamma=0.5,
    )
    learner = AuxLearner(cfg, seed=0)
    learner.net.double()
    labeller = MAXLLabeller(learner, seed=0)
    labeller.generator.double()
    idx = torch.arange(16)
    x, y = learner.batch_inputs(idx).double(), learner.data.train.labels[idx]
    main = {k: v.clone() for k, v in learner.net.state_dict().items()}
    params = list(labeller.generator.parameters())
    for _ in range(2):
        before = [p.detach().clone() for p in params]
        learner.net.train()
        g = torch.autograd.grad(
            generator_loss(learner, labeller.generator, x, y, 0.2, (-5, 5)), params
        )
        learner.net.eval()
        labeller.meta_step(x, y)
        for p, p0, gp in zip(params, before, g):
            torch.testing.assert_close(
                p0 - p.detach(), 1e-3 * (gp + 5e-4 * p0), rtol=1e-6, atol=1e-12
            )
    for k, v in learner.net.state_dict().items():
        assert torch.equal(v, main[k]), k
    assert labeller.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    labeller.end_epoch()
    assert labeller.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_the_generator_and_its_pass_order_follow_the_seed():
    # Seed s: the generator starts from seed s + 1 (not the main network's own start, s)
    # and the generator pass draws from a stream of its own seeded by s.
    from baselines.maxl import MAXLLabeller

    learner = epoch_learner()
    a, b, c = (MAXLLabeller(learner, seed=s) for s in (0, 0, 1))

    def first_layer(module):  # the backbone's first Linear: (6, 64) in both networks
        return next(module.parameters()).detach()

    assert torch.equal(first_layer(a.generator), first_layer(b.generator))
    assert not torch.equal(first_layer(a.generator), first_layer(c.generator))
    assert not torch.equal(first_layer(a.generator), first_layer(learner.net))
    orders = [torch.randperm(200, generator=labeller.rng) for labeller in (a, b, c)]
    assert torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], orders[2])
