"""LossWeighting (IGB): formulas on hand-worked numbers, the env, the learner's aggregation."""

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from baselines.dwa import DWA
from baselines.igbv1 import IGBv1
from baselines.rlw import RLW
from baselines.uw import UW
from mtl_envs.envs.loss_weighting import improvable_gap_reward
from mtl_envs.errors import ConfigError  # noqa: F401
from mtl_envs.training.metrics import delta_m
from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig
from mtl_envs.training.weighting import weighted_objective_terms

FAST = {"warmup_epochs": 1, "epochs": 3}


class FakeLearner:
    def __init__(self, history=(), base=None):
        self.loss_history = [torch.tensor(h) for h in history]
        self.base_losses = None if base is None else torch.tensor(base)
        self.generator = torch.Generator().manual_seed(0)


def test_reward_eq4_by_hand():
    # declines (0.5, 0.2) / L_base (1, 0.5) = (0.5, 0.4); min 0.4; alpha = 2 -> 0.8.
    r = improvable_gap_reward(
        torch.tensor([1.0, 0.6]), torch.tensor([0.5, 0.4]), torch.tensor([1.0, 0.5]), alpha=2.0
    )
    assert float(r) == pytest.approx(0.8)


def test_mean_reward_of_igbs_table_3_ablation_by_hand():
    # declines (0.5, 0.2) / L_base (1, 0.5) = (0.5, 0.4): mean 0.45, alpha = 2 -> 0.9. A batch
    # of two runs reduces each row with its own alpha.
    args = torch.tensor([1.0, 0.6]), torch.tensor([0.5, 0.4]), torch.tensor([1.0, 0.5])
    assert float(improvable_gap_reward(*args, alpha=2.0, reduce="mean")) == pytest.approx(0.9)
    batch = [torch.stack([a, a]) for a in args]
    rewards = improvable_gap_reward(*batch, alpha=torch.tensor([1.0, 2.0]), reduce="mean")
    torch.testing.assert_close(rewards, torch.tensor([0.45, 0.9]))


def test_rlw_weights_are_n_softmax_of_a_standard_normal_draw():
    # RLW (Lin et al., 2022; IGB Algorithm 2 line 11): w = n * softmax(z), z ~ N(0, I), drawn
    # from the run's generator: the same draw by hand gives the same weights.
    learner = FakeLearner()
    weights = RLW().weights(torch.ones(4), learner)
    z = torch.randn(4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(weights, 4 * torch.exp(z) / torch.exp(z).sum())


def test_action_to_weights_sum_to_n():
    env = gym.make("LossWeighting-Digits10-v1", **FAST).unwrapped
    assert torch.allclose(env.action_to_weights(np.zeros(10)), torch.ones(10))
    a = np.zeros(10, dtype=np.float32)
    # atanh(0.8) = log 3: softmax over (3, 1, ..., 1) / 12 -> weights 10 * (3/12, 1/12, ...).
    a[0] = 0.8
    w = env.action_to_weights(a)
    assert float(w[0]) == pytest.approx(2.5) and float(w[1]) == pytest.approx(10 / 12)
    assert float(w.sum()) == pytest.approx(10.0)
    linear = gym.make("LossWeighting-Digits10-v1", action_transform="linear", **FAST).unwrapped
    a[0] = math.log(3.0) / 2  # the linear map at temperature 2: logits (log 3, 0, ...)
    linear.temperature = 2.0
    assert float(linear.action_to_weights(a)[0]) == pytest.approx(2.5)


def test_weight_ratio_is_not_bounded_by_the_box():
    # IGB's actor is unbounded; the linear map caps max/min weight at e^2 = 7.39.
    a = np.full(10, -0.999, dtype=np.float32)
    a[0] = 0.999
    envs = {
        t: gym.make("LossWeighting-Digits10-v1", action_transform=t, **FAST).unwrapped
        for t in ("atanh", "linear")
    }
    ratios = {}
    for transform, env in envs.items():
        w = env.action_to_weights(a)
        ratios[transform] = float(w.max() / w.min())
    assert ratios["linear"] == pytest.approx(math.exp(2 * 0.999), rel=1e-4)
    assert ratios["atanh"] == pytest.approx(math.exp(2 * math.atanh(0.999)), rel=1e-3)  # 1999
    extreme = envs["atanh"].action_to_weights(np.sign(a))  # +-1 exactly stays finite
    assert bool(torch.isfinite(extreme).all()) and float(extreme.max() / extreme.min()) > 1e6


def test_random_weight_action_gives_rlw_weights():
    # Algorithm 2, line 11: n * softmax(z), z ~ N(0, I); atanh(tanh(z)) = z.
    env = gym.make("LossWeighting-Digits10-v1", **FAST).unwrapped
    action = env.random_weight_action(np.random.default_rng(3))
    z = np.random.default_rng(3).standard_normal(10)
    expected = 10 * np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(env.action_to_weights(action).numpy(), expected, rtol=1e-4)


def test_warmup_weights_follow_algorithm_2():
    # The env's warm-up draws RLW weights, n * softmax(z) with z ~ N(0, I) (Algorithm 2,
    # line 11), from the learner's generator: each draw is the one that generator's state
    # gives just before it.
    from mtl_envs.envs.loss_weighting import LossWeightingEnv
    from mtl_envs.training.weighting import random_weights

    env = gym.make("LossWeighting-Digits10-v1", **FAST).unwrapped
    drawn, own = [], LossWeightingEnv._random_weights

    def recording(self, losses):
        state = self.learner.generator.get_state()
        weights = own(self, losses)
        drawn.append((state, weights))
        return weights

    env._random_weights = recording.__get__(env)
    env.reset(seed=0)
    assert len(drawn) == env.warmup_epochs * env.learner.num_batches
    for state, weights in drawn[:3]:
        again = torch.Generator()
        again.set_state(state)
        z = torch.randn(10, generator=torch.Generator().set_state(state))
        torch.testing.assert_close(weights, random_weights(10, again))
        torch.testing.assert_close(weights, 10 * torch.softmax(z, 0))
    assert not torch.equal(drawn[0][1], drawn[1][1])
    nets = {}
    for warmup in ("random", "equal"):
        env = gym.make("LossWeighting-Digits10-v1", warmup_weights=warmup, **FAST).unwrapped
        env.reset(seed=0)
        nets[warmup] = torch.cat([p.flatten() for p in env.learner.net.parameters()])
    assert not torch.allclose(nets["random"], nets["equal"])
    calls = []
    learner = MultiTaskLearner(MultiTaskLearnerConfig(dataset="digits10", loss="log"), seed=0)
    learner.train_epoch(lambda losses: calls.append(losses) or torch.ones_like(losses))
    assert len(calls) == learner.num_batches and calls[0].shape == (10,)


def test_scale_invariant_gradient_eq2():
    # d/dx [w log L(x)] = w L'(x) / L(x); L = x^2 at x = 3, w = 2 -> 2 * 6 / 9.
    x = torch.tensor(3.0, requires_grad=True)
    weighted_objective_terms(x**2, torch.tensor(2.0), "log").backward()
    assert float(x.grad) == pytest.approx(12 / 9)
    with pytest.raises(ValueError, match="loss"):
        weighted_objective_terms(x, torch.tensor(1.0), "mean")


def test_dwa_weights_by_hand():
    rule = DWA(temperature=2.0)
    assert torch.equal(rule.weights(torch.ones(2), FakeLearner([(1.0, 1.0)])), torch.ones(2))
    # r = (0.5/1, 1/1) -> 2 * softmax((0.25, 0.5)).
    w = rule.weights(torch.ones(2), FakeLearner([(1.0, 1.0), (0.5, 1.0)]))
    e1, e2 = math.exp(0.25), math.exp(0.5)
    torch.testing.assert_close(w, torch.tensor([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)]))


def test_dwa_default_temperature_is_two():
    # IGB section 4.1 / DWA: T = 2. r = (0.5, 1) -> 2 * softmax((0.25, 0.5)).
    w = DWA().weights(torch.ones(2), FakeLearner([(1.0, 1.0), (0.5, 1.0)]))
    e1, e2 = math.exp(0.25), math.exp(0.5)
    torch.testing.assert_close(w, torch.tensor([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)]))


def test_si_and_igbv1_train_on_log_losses_ew_on_plain_ones():
    """SI is eq. 2 with equal weights and IGBv1 is eq. 3 on eq. 2's objective; EW sums the
    plain losses."""
    from baselines.ew import EW
    from baselines.si import SI

    assert (SI.loss_mode, IGBv1.loss_mode, EW.loss_mode) == ("log", "log", "sum")
    assert torch.equal(SI().weights(torch.tensor([3.0, 0.5]), None), torch.ones(2))


def test_dwa_si_weights_the_log_losses_by_plain_loss_ratios():
    # IGB Table 4's DWA + SI: DWA's weights (ratios of plain epoch losses), objective eq. 2.
    history = FakeLearner([(1.0, 1.0), (0.5, 1.0)])
    plain, si = DWA(), DWA(scale_invariant=True)
    assert (plain.loss_mode, si.loss_mode) == ("sum", "log")
    torch.testing.assert_close(
        si.weights(torch.ones(2), history), plain.weights(torch.ones(2), history)
    )


@pytest.mark.parametrize("rule", [RLW, DWA])
def test_si_variant_steps_on_weighted_log_losses(rule):
    """One SGD step of ``X + SI`` moves the network by ``lr * sum_i w_i grad(L_i) / L_i``
    (IGB eq. 2 under X's weights), with the weights X draws from the same generator state."""
    cfg = MultiTaskLearnerConfig(
        dataset="cubic", model="hard_sharing", device="cpu", optimizer="sgd", momentum=0.0
    )
    learner = MultiTaskLearner(cfg, seed=0, weighting=rule(scale_invariant=True))
    learner.begin_epoch()
    idx = learner.batch_indices(0)
    params = [p for p in learner.net.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    losses, _ = learner.task_losses(idx)
    n = len(losses)  # two finished epochs, so DWA's ratios are not all 1
    learner.loss_history = [torch.linspace(1.0, 2.0, n), torch.linspace(2.0, 0.5, n)]
    detached = torch.stack(losses).detach()
    state = learner.generator.get_state()
    w = rule().weights(detached, learner)  # the plain rule's weights, same draw
    learner.generator.set_state(state)
    grads = [torch.zeros_like(p) for p in params]
    for t, loss in enumerate(losses):
        for g, gt in zip(
            grads, torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        ):
            if gt is not None:
                g += w[t] / detached[t] * gt
    learner.train_batch(idx)
    for p, p0, g in zip(params, before, grads):
        torch.testing.assert_close(p.detach(), p0 - cfg.lr * g, rtol=1e-4, atol=1e-6)


def test_uw_weights_and_log_variance_gradient():
    rule = UW()
    rule.reset(2)
    losses = torch.tensor([3.0, 1.0])
    w = rule.weights(losses, None)
    torch.testing.assert_close(w, torch.tensor([0.5, 0.5]))  # 1 / (2 e^0)
    rule.objective(losses, w).backward()
    # d/ds [L e^{-s} / 2 + s / 2] at s = 0 is (1 - L) / 2.
    torch.testing.assert_close(rule.log_vars.grad, torch.tensor([-1.0, 0.0]))


def test_uw_log_variances_learn_at_their_own_rate():
    """UW's log-variances get their own optimiser group at 0.025 (the IGB4MTL code's
    ``method_params_lr``) without weight decay; Adam's first step moves each by that rate
    (the sign of its gradient), where the network's rate would move it by 1e-3."""
    from baselines.uw import UW

    cfg = MultiTaskLearnerConfig(
        dataset="cubic", model="hard_sharing", device="cpu", lr=1e-3, weight_decay=1e-4
    )
    learner = MultiTaskLearner(cfg, seed=0, weighting=UW())
    net, own = learner.optimizer.param_groups
    assert (net["lr"], own["lr"], own["weight_decay"]) == (1e-3, 0.025, 0.0)
    assert own["params"] == [learner.weighting.log_vars]
    learner.begin_epoch()
    losses = learner.train_batch(learner.batch_indices(0))
    # d/ds [L e^{-s} / 2 + s / 2] at s = 0 is (1 - L) / 2: s moves against its sign.
    expected = -0.025 * torch.sign((1 - losses) / 2)
    torch.testing.assert_close(learner.weighting.log_vars.detach(), expected, rtol=1e-4, atol=1e-6)


def test_igbv1_weights_eq3():
    rule = IGBv1()
    assert torch.equal(rule.weights(torch.tensor([2.0, 1.0]), FakeLearner()), torch.ones(2))
    w = rule.weights(torch.tensor([2.0, 1.0]), FakeLearner(base=(1.0, 1.0)))
    e = math.e
    torch.testing.assert_close(w, torch.tensor([2 * e / (e + 1), 2 / (e + 1)]))
    # L / L_base with a base that is not 1: (1/2, 1/0.5) = (0.5, 2) -> 2 softmax((0.5, 2)),
    # (0.36485, 1.63515); neither L nor L * L_base gives these.
    w = rule.weights(torch.tensor([1.0, 1.0]), FakeLearner(base=(2.0, 0.5)))
    a, b = math.exp(0.5), math.exp(2.0)
    torch.testing.assert_close(w, torch.tensor([2 * a / (a + b), 2 * b / (a + b)]))
    assert w.tolist() == pytest.approx([0.36485, 1.63515], abs=1e-5)


def test_rlw_weights_positive_sum_to_n_and_seeded():
    a = RLW().weights(torch.ones(4), FakeLearner())
    b = RLW().weights(torch.ones(4), FakeLearner())
    assert torch.equal(a, b) and bool((a > 0).all()) and float(a.sum()) == pytest.approx(4.0)


def test_delta_m_eq5_by_hand():
    stl = {"test/a/accuracy": 0.8, "test/b/mse": 2.0, "test/mean_accuracy": 0.8}
    mtl = {"test/a/accuracy": 0.88, "test/b/mse": 2.5, "test/mean_accuracy": 0.88}
    # accuracy +10% counts -10, mse +25% counts +25 -> mean 7.5 %.
    assert delta_m(mtl, stl) == pytest.approx(7.5)


def test_base_losses_are_second_epoch_mean():
    learner = MultiTaskLearner(MultiTaskLearnerConfig(dataset="digits10", device="cpu"), seed=0)
    seen = []
    for _ in range(3):
        learner.begin_epoch()
        batch_losses = [
            learner.train_batch(learner.batch_indices(b)) for b in range(learner.num_batches)
        ]
        learner.end_epoch()
        seen.append(torch.stack(batch_losses).mean(0))
    torch.testing.assert_close(learner.base_losses, seen[1])
    torch.testing.assert_close(learner.loss_history[2], seen[2])


def test_env_reward_uses_next_batch_losses():
    env = gym.make("LossWeighting-Digits10-v1", **FAST).unwrapped
    obs, info = env.reset(seed=0)
    base = np.array(info["base_losses"])
    for _ in range(3):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, info = env.step(action)
        expected = info["alpha"] * np.min((np.array(info["losses"]) - next_obs) / base)
        assert reward == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert np.allclose(info["losses"], obs, rtol=1e-5)  # obs were the trained batch's losses
        assert sum(info["weights"]) == pytest.approx(10.0, rel=1e-5)
        obs = next_obs


def test_reward_multiplier_is_initial_over_current_learning_rate():
    # StepLR halving every epoch: after the 2 warm-up epochs lr_t = lr_0 / 4, so alpha = 4;
    # once the first acting epoch ends it is lr_0 / 8 and alpha = 8 (IGB eq. 4).
    env = gym.make(
        "LossWeighting-Cubic-v1",
        warmup_epochs=2,
        epochs=4,
        scheduler_step_epochs=1,
        scheduler_gamma=0.5,
    ).unwrapped
    obs, info = env.reset(seed=0)
    base = np.array(info["base_losses"])
    alphas = []
    for _ in range(env.learner.num_batches + 1):
        next_obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        alphas.append(info["alpha"])
        expected = info["alpha"] * np.min((np.array(info["losses"]) - next_obs) / base)
        assert reward == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert alphas[0] == 4.0 and alphas[-2] == 4.0 and alphas[-1] == 8.0


def test_episode_is_the_whole_run_and_normalized_observation():
    env = gym.make("LossWeighting-Digits10-v1", observation="normalized_losses", **FAST).unwrapped
    obs, info = env.reset(seed=1)
    assert np.allclose(obs * np.array(info["base_losses"]), env._current.numpy(), rtol=1e-5)
    steps, terminated = 0, False
    while not terminated:
        _, _, terminated, truncated, info = env.step(np.zeros(10, dtype=np.float32))
        steps += 1
    assert steps == (3 - 1) * env.learner.num_batches and env.learner.epoch == 3


def test_max_steps_truncates_and_divergence_is_reported():
    env = gym.make("LossWeighting-Digits10-v1", max_steps=2, **FAST).unwrapped
    env.reset(seed=0)
    env.step(np.zeros(10, dtype=np.float32))
    *_, terminated, truncated, _ = env.step(np.zeros(10, dtype=np.float32))
    assert truncated and not terminated
    # A huge learning rate makes the squared errors overflow during the warm-up.
    huge = gym.make("LossWeighting-Exam-v1", optimizer="sgd", lr=1e10, loss="sum", **FAST)
    obs, info = huge.unwrapped.reset(seed=0)
    assert info["diverged"] and np.isfinite(obs).all()
    obs, reward, terminated, truncated, info = huge.unwrapped.step(np.zeros(65, dtype=np.float32))
    assert info["diverged"] and truncated and not terminated
    assert np.isfinite(obs).all() and reward == 0.0


def test_same_seed_same_trajectory():
    env = gym.make("LossWeighting-Exam-v1", **FAST)
    runs = []
    for seed in (5, 5, 6):
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(0)
        traj = [obs]
        for _ in range(4):
            obs, reward, *_ = env.step(env.action_space.sample())
            traj += [obs, reward]
        runs.append(traj)
    for a, b in zip(runs[0], runs[1]):
        assert np.array_equal(a, b)
    # Another seed, another run (network, data order, warm-up weights).
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_saved_run_continues_mid_epoch():
    """state_dict + continue_run: a new env picks the run up between two batches, with the
    same augmentation of the current batch and the same BatchNorm statistics."""
    kwargs = {**FAST, "augment": True, "device": "cpu"}  # random crops draw from the run's rng
    actions = [np.linspace(-1, 1, 10, dtype=np.float32) * s for s in (1, -1, 0.5, 0, -0.5)]
    env = gym.make("LossWeighting-Digits10-v1", **kwargs)
    env.reset(seed=3)
    for action in actions[:2]:
        saved_obs = env.step(action)[0]
    state = copy.deepcopy(env.unwrapped.state_dict())  # like torch's, it holds live tensors
    later = [env.step(action)[:2] for action in actions[2:]]
    net = env.unwrapped.learner.net.state_dict()

    other = gym.make("LossWeighting-Digits10-v1", **kwargs)
    other.unwrapped.load_state_dict(state)
    other.unwrapped.continue_run()
    for bad in ({"seed": -1}, {"options": {"mode": "x"}}):  # refused: the run stays pending
        with pytest.raises(ConfigError):
            other.unwrapped.reset(**bad)
    obs, _ = other.reset()
    assert np.array_equal(obs, saved_obs)  # the saved batch's losses, computed again
    again = [other.step(action)[:2] for action in actions[2:]]
    for (obs_a, reward_a), (obs_b, reward_b) in zip(later, again, strict=True):
        assert np.array_equal(obs_a, obs_b) and reward_a == reward_b
    for key, value in other.unwrapped.learner.net.state_dict().items():
        assert torch.equal(value, net[key]), key
    other.reset(seed=3)  # a seeded reset starts a fresh run again
    assert other.unwrapped.steps == 0


def test_bad_arguments():
    with pytest.raises(ConfigError, match="Did you mean 'aggregator'"):
        gym.make("LossWeighting-Digits10-v1", agregator="mgda")
    with pytest.raises(ValueError, match="`aggregator` must be None or one of"):
        gym.make("LossWeighting-Digits10-v1", aggregator="mgdaa")
    with pytest.raises(ValueError, match="observation"):
        gym.make("LossWeighting-Digits10-v1", observation="loss")
    with pytest.raises(ValueError, match="epochs"):
        gym.make("LossWeighting-Digits10-v1", epochs=2)
    env = gym.make("LossWeighting-Digits10-v1", **FAST).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(np.full(10, 2.0, dtype=np.float32))


def test_mean_aggregator_scales_the_shared_update_and_leaves_heads_alone():
    def one_step(aggregator):
        cfg = MultiTaskLearnerConfig(
            dataset="digits10",
            device="cpu",
            optimizer="sgd",
            momentum=0.0,
            lr=0.1,
            aggregator=aggregator,
        )
        learner = MultiTaskLearner(cfg, seed=0)
        before = [p.detach().clone() for p in learner.net.parameters()]
        learner.begin_epoch()
        learner.train_batch(learner.batch_indices(0))
        shared = [p.detach() - b for p, b in zip(learner.net.backbone.parameters(), before)]
        heads_before = before[len(shared) :]
        heads = [p.detach() - b for p, b in zip(learner.net.heads.parameters(), heads_before)]
        return shared, heads

    plain_shared, plain_heads = one_step(None)
    mean_shared, mean_heads = one_step("mean")
    upgrad_shared, _ = one_step("upgrad")
    # torchjd's Mean averages the 10 task gradients; plain training sums them.
    for p, m in zip(plain_shared, mean_shared):
        torch.testing.assert_close(m * 10, p, rtol=1e-4, atol=1e-6)
    for p, m in zip(plain_heads, mean_heads):
        torch.testing.assert_close(m, p)
    assert not all(torch.allclose(p, u) for p, u in zip(mean_shared, upgrad_shared))


def test_compare_reports_delta_m_against_stl_results(tmp_path):
    # Δm (IGB eq. 5) belongs to the comparison, against the stl results of the same seeds.
    from harness.compare import summarize
    from harness.config import RunConfig
    from harness.registry import run_method
    from harness.results import load_results

    def config(method):
        return RunConfig(
            method=method,
            env_id="LossWeighting-Digits10-v1",
            epochs=1,
            output_dir=str(tmp_path),
            progress=False,
            tensorboard=False,
        )

    stl = run_method(config("stl"), "stl", 0)
    ew = run_method(config("ew"), "ew", 0)
    rows = {r["method"]: r for r in summarize(load_results([tmp_path]))}
    stl_test = {k: v for k, v in stl["final"].items() if k.startswith("test/")}
    assert rows["ew"]["delta_m"] == pytest.approx(delta_m(ew["final"], stl_test))
    assert rows["stl"]["delta_m"] == pytest.approx(0.0)


def test_stl_networks_minimise_the_plain_task_loss():
    # IGB's STL reference trains L_t itself: neither the env's log objective nor an aggregator.
    from baselines.stl import single_task_learners
    from harness.config import RunConfig

    config = RunConfig(
        method="stl",
        env_id="LossWeighting-Digits10-v1",
        env_kwargs={"loss": "log", "aggregator": "upgrad", "optimizer": "sgd", "momentum": 0.0},
    )
    learners = single_task_learners(config, seed=0)
    assert [learner.tasks for learner in learners] == [[t] for t in range(10)]
    assert all(learner.config.loss == "sum" and learner.aggregator is None for learner in learners)
    learner = learners[3]
    learner.begin_epoch()
    idx = learner.batch_indices(0)
    before = [p.detach().clone() for p in learner.net.parameters()]
    losses, _ = learner.task_losses(idx)
    grads = torch.autograd.grad(losses[0], list(learner.net.parameters()), allow_unused=True)
    learner.train_batch(idx)
    lr = learner.config.lr
    for p, p0, g in zip(learner.net.parameters(), before, grads):
        expected = p0 if g is None else p0 - lr * g  # one SGD step on the plain loss
        torch.testing.assert_close(p.detach(), expected)


def test_stl_networks_start_from_the_multi_task_networks_encoder():
    """Every task's network is built from the run's seed (not one seed per task): it starts
    from the encoder the multi-task network of that seed starts from, with its data-order
    generator, so Δm compares what training did rather than two initialisations."""
    from baselines.loss_weighting import build_learner
    from baselines.stl import single_task_learners
    from harness.config import RunConfig

    config = RunConfig(method="stl", env_id="LossWeighting-Digits10-v1")
    initial = build_learner(config, 5)
    encoder = initial.net.backbone.state_dict()
    for learner in single_task_learners(config, seed=5):
        for name, value in learner.net.backbone.state_dict().items():
            torch.testing.assert_close(value, encoder[name], rtol=0, atol=0)
        assert torch.equal(learner.generator.get_state(), initial.generator.get_state())
    other = single_task_learners(config, seed=6)[0].net.backbone.state_dict()
    assert not all(torch.equal(other[name], value) for name, value in encoder.items())


def test_validation_reward_telescopes_to_the_final_validation_loss():
    env = gym.make("LossWeighting-CubicScales-v1", warmup_epochs=1, epochs=4).unwrapped
    env.reset(seed=0)
    total, rewards, done = 0.0, [], False
    while not done:
        _, reward, terminated, truncated, info = env.step(np.zeros(env.num_tasks))
        total += reward
        rewards.append(reward)
        done = terminated or truncated
    # Non-zero only where an epoch ends; the sum is minus the mean normalised val loss.
    batches = env.learner.num_batches
    assert all(r == 0.0 for i, r in enumerate(rewards) if (i + 1) % batches)
    val = torch.tensor(env.learner.split_losses("val"))
    assert total == pytest.approx(-float((val / env.base_losses).mean()), rel=1e-5)
    # Its data: per-task target scales spread over two decades.
    data = env.learner.data.train
    task = data.mask.float().argmax(1)
    stds = torch.stack([data.targets[task == t, t].std() for t in range(20)])
    assert float(stds.max() / stds.min()) == pytest.approx(100.0, rel=0.3)


@pytest.mark.parametrize("model", ["hard_sharing", "hypernet", "per_task", "cross_stitch"])
def test_aggregators_leave_the_task_parameters_of_task_networks_alone(model):
    """IGB Algorithm 3 on the task networks: the task-stacked parameters (hard sharing's
    heads, the hypernetwork's embeddings, every per-task network) take each task's own
    gradient; only the shared ones (the trunk, the hypernetwork) go through the aggregator.
    torchjd's Mean averages the task gradients, so the shared step is 1/n of the plain one
    and the task parameters' step is the plain one. The tasks' weights differ, so each
    task's term keeps its own weight through the aggregator."""

    def one_step(aggregator):
        cfg = MultiTaskLearnerConfig(
            dataset="cubic",
            model=model,
            device="cpu",
            optimizer="sgd",
            momentum=0.0,
            lr=0.05,
            loss="sum",
            batch_size=60,
            aggregator=aggregator,
        )
        learner = MultiTaskLearner(cfg, seed=0)
        own = {id(p) for p in learner.net.task_parameters()}
        params = [p for p in learner.net.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in params]
        learner.begin_epoch()
        weights = torch.linspace(0.2, 1.8, learner.num_tasks)
        learner.train_batch(learner.batch_indices(0), weights)
        steps = [p.detach() - b for p, b in zip(params, before)]
        return [id(p) in own for p in params], steps, learner.num_tasks

    kinds, plain, n = one_step(None)
    _, mean, _ = one_step("mean")
    assert any(kinds) and (model == "per_task") == all(kinds)
    for is_task, p, m in zip(kinds, plain, mean):
        assert p.abs().max() > 1e-4  # every parameter moves: the comparison says something
        torch.testing.assert_close(m if is_task else m * n, p, rtol=1e-4, atol=1e-6)


def test_a_task_without_validation_samples_is_left_out_of_the_validation_means():
    """Exam's smallest school has two pupils: one trains, one tests, none validates. Its
    validation loss used to count as 0 in every validation mean."""
    env = gym.make("LossWeighting-Exam-v1", epochs=2, warmup_epochs=1).unwrapped
    env.reset(seed=0)
    learner = env.learner
    sizes = {
        split: learner.data.split(split).mask.sum(0).tolist() for split in ("train", "val", "test")
    }
    empty = [t for t, n in enumerate(sizes["val"]) if n == 0]
    assert len(empty) == 1 and sizes["train"][empty[0]] == sizes["test"][empty[0]] == 1
    name = learner.data.task_names[empty[0]]
    val, test = learner.evaluate("val"), learner.evaluate("test")
    assert f"{name}/mse" not in val and f"{name}/mse" in test
    per_task = [v for k, v in val.items() if k.endswith("/mse")]
    assert len(per_task) == 64 and val["mean_mse"] == pytest.approx(np.mean(per_task), rel=1e-6)
    assert len([k for k in test if k.endswith("/mse")]) == 65


def test_multitask_evaluation_leaves_the_network_in_train_mode():
    env = gym.make("LossWeighting-Digits10-v1", epochs=2, warmup_epochs=1).unwrapped
    env.reset(seed=0)
    env.learner.net.train()
    env.learner.evaluate("val")
    assert env.learner.net.training
