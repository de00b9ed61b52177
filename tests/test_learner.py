"""AuxLearner: one SGD step, snapshot/restore, evaluation."""

import math

import pytest
import torch
from conftest import aux_learner as make

from mtl_envs.training import AuxLearnerConfig, auxiliary_targets


def random_targets(learner, idx, seed=0):
    g = torch.Generator().manual_seed(seed)
    sub = torch.randint(0, learner.config.hierarchy_factor, idx.shape, generator=g)
    return auxiliary_targets(
        sub, learner.data.train.labels[idx], learner.config.hierarchy_factor, learner.num_primary
    )


def params(learner):
    return [p.detach().clone() for p in learner.net.parameters()]


def test_snapshot_restore_is_exact(digits):
    learner = make(digits, momentum=0.9)
    learner.begin_epoch()
    idx = learner.batch_indices(0)
    learner.train_batch(idx, random_targets(learner, idx))
    snap = learner.snapshot()
    before = params(learner)
    # Continue from the snapshot twice; both continuations must be identical.
    outcomes = []
    for _ in range(2):
        learner.restore(snap)
        assert all(torch.equal(a, b) for a, b in zip(before, params(learner)))
        for b in (1, 2):
            i = learner.batch_indices(b)
            learner.train_batch(i, random_targets(learner, i))
        learner.end_epoch()
        outcomes.append(params(learner))
    assert all(torch.equal(a, b) for a, b in zip(*outcomes))
    assert learner.epoch == snap["epoch"] + 1
    # The snapshot itself was not mutated by training.
    learner.restore(snap)
    assert all(torch.equal(a, b) for a, b in zip(before, params(learner)))


def test_same_seed_same_network(digits):
    a, b, c = make(digits, seed=3), make(digits, seed=3), make(digits, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    assert not all(torch.equal(x, y) for x, y in zip(params(a), params(c)))


def test_zero_sample_weights_leave_only_the_primary_gradient(digits):
    stl, weighted = make(digits, seed=1), make(digits, seed=1)
    for learner in (stl, weighted):
        learner.begin_epoch()
    idx = stl.batch_indices(0)
    stl.train_batch(idx, None)
    weighted.train_batch(idx, random_targets(weighted, idx), torch.zeros(len(idx)))
    for x, y in zip(stl.net.backbone.parameters(), weighted.net.backbone.parameters()):
        torch.testing.assert_close(x, y)


def test_aux_loss_weighting_eq7(digits):
    learner = make(digits, seed=2, aux_weight=0.5)
    learner.begin_epoch()
    idx = learner.batch_indices(0)
    targets = random_targets(learner, idx)
    w = torch.linspace(0.1, 2.0, len(idx))
    snap = learner.snapshot()
    out = learner.train_batch(idx, targets, w)
    learner.restore(snap)
    plain = learner.train_batch(idx, targets)  # same forward: augment is off for digits
    assert out["loss"] == pytest.approx(
        float(out["primary_loss"] + 0.5 * out["aux_loss"]), rel=1e-6
    )
    assert plain["primary_loss"] == pytest.approx(float(out["primary_loss"]), rel=1e-6)


def test_objective_eq2_eq7_on_hand_worked_logits(digits):
    # Digits: 10 primary classes, psi = 5, K = 50 auxiliary classes; lambda = 0.5.
    learner = make(digits, aux_weight=0.5)
    primary = torch.zeros(2, 10)  # CE = log 10 for any label
    aux = torch.zeros(2, 50)
    aux[0, 7] = math.log(49.0)  # p_7 = 49 / (49 + 49) = 1/2; sample 1 stays uniform, 1/50
    targets = torch.zeros(2, 50)
    targets[0, 7] = 1.0
    targets[1, 12] = 1.0
    weights = torch.tensor([2.0, 0.5])
    out = learner.objective([primary, aux], torch.tensor([1, 2]), targets, weights)
    focal = [(1 - 0.5) ** 2 * math.log(2.0), (1 - 1 / 50) ** 2 * math.log(50.0)]
    aux_loss = (2.0 * focal[0] + 0.5 * focal[1]) / 2  # eq. 7: mean of w_i * focal_i
    assert float(out["primary_loss"]) == pytest.approx(math.log(10.0))
    assert float(out["aux_loss"]) == pytest.approx(aux_loss)
    assert float(out["loss"]) == pytest.approx(math.log(10.0) + 0.5 * aux_loss)


def test_training_improves_and_evaluate_reports_metrics(digits):
    learner = make(digits, momentum=0.9)
    before = learner.evaluate("val")
    for _ in range(3):
        learner.train_epoch(None)
    after = learner.evaluate("val")
    assert set(after) == {"accuracy", "precision", "recall", "f1", "loss"}
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.5
    with pytest.raises(ValueError, match="split"):
        learner.evaluate("validation")


def test_channels_last_trains_the_same_network_and_bf16_autocast_trains(digits):
    plain, last, amp = (
        make(digits, momentum=0.9),
        make(digits, momentum=0.9, channels_last=True),
        make(digits, momentum=0.9, amp=True),
    )
    assert last.prepare_inputs(digits.train.images[:4], train=False).is_contiguous(
        memory_format=torch.channels_last
    )
    for learner in (plain, last, amp):
        learner.train_epoch(None)
    # The memory format changes no value beyond float rounding.
    for x, y in zip(params(plain), params(last)):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-4)
    # bfloat16 forwards round at 3 significant digits: the run differs, but learns alike.
    assert amp.evaluate("val")["accuracy"] == pytest.approx(
        plain.evaluate("val")["accuracy"], abs=0.1
    )


def test_config_validation():
    with pytest.raises(ValueError, match="train_batch_size"):
        AuxLearnerConfig(train_batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        AuxLearnerConfig(lr=-1.0)


def test_evaluation_leaves_the_network_in_the_mode_it_found(digits):
    learner = make(digits)
    idx = learner.sample_eval_indices()
    for evaluate in (lambda: learner.evaluate("val"), lambda: learner.primary_loss(idx)):
        learner.net.train()
        evaluate()
        assert learner.net.training
        learner.net.eval()
        evaluate()
        assert not learner.net.training
