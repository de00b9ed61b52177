"""Formulas of RL-AUX / MAXL against numbers worked by hand."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from mtl_envs.errors import ConfigError
from mtl_envs.training import (
    auxiliary_targets,
    classification_metrics,
    confusion_matrix,
    focal_loss,
    hierarchy_mask,
    label_entropy,
    masked_softmax,
    weight_from_bin,
)
from mtl_envs.training.losses import max_label_entropy
from mtl_envs.training.metrics import delta_m, task_target_variance


def test_hierarchy_mask_eq6():
    # psi = 2, three primary classes -> K = 6; class 0 owns {0, 1}, class 2 owns {4, 5}.
    mask = hierarchy_mask(torch.tensor([0, 2]), hierarchy_factor=2, num_primary=3)
    assert mask.tolist() == [
        [True, True, False, False, False, False],
        [False, False, False, False, True, True],
    ]


def test_masked_softmax_eq5():
    # exp(0), exp(ln 2), exp(ln 3) over the unmasked entries: 1/6, 2/6, 3/6; masked -> 0.
    z = torch.tensor([[0.0, math.log(2), math.log(3), 5.0]])
    m = torch.tensor([[True, True, True, False]])
    torch.testing.assert_close(masked_softmax(z, m), torch.tensor([[1 / 6, 2 / 6, 3 / 6, 0.0]]))


def test_auxiliary_targets_hierarchical_and_flat():
    y = torch.tensor([1, 0])
    hier = auxiliary_targets(torch.tensor([1, 0]), y, hierarchy_factor=2, num_primary=2)
    assert hier.tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]  # 2*1+1 = 3, 2*0+0 = 0
    # psi != num_primary and labels != classes: class psi * y + a = (1, 4), where swapping
    # a and y gives (2, 2) and num_primary * a + y gives (3, 2).
    hier = auxiliary_targets(torch.tensor([1, 0]), torch.tensor([0, 2]), 2, num_primary=3)
    assert hier.argmax(1).tolist() == [1, 4] and hier.shape == (2, 6)
    # Flat: label 0 is outside block {2, 3} of class 1 -> uniform over the block;
    # label 1 is inside block {0, 1} of class 0 -> one-hot.
    flat = auxiliary_targets(torch.tensor([0, 1]), y, 2, 2, label_space="flat")
    assert flat.tolist() == [[0, 0, 0.5, 0.5], [0, 1, 0, 0]]
    with pytest.raises(ValueError, match="label_space"):
        auxiliary_targets(torch.tensor([0]), torch.tensor([0]), 2, 2, label_space="tree")


def test_focal_loss_by_hand():
    # p = (0.5, 0.5), target class 0, gamma 2: -(1 - 0.5)^2 * ln 0.5 = 0.25 ln 2.
    loss = focal_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), gamma=2.0)
    torch.testing.assert_close(loss, torch.tensor([0.25 * math.log(2)]))
    # The factor is (1 - p)^gamma, not p^gamma (equal at p = 0.5): logits (2, 0), target 0,
    # gamma 2: p_0 = e^2 / (e^2 + 1) -> -(1 - p_0)^2 ln p_0 = 0.00180 (p_0^2 would give 0.0981).
    p0 = math.exp(2) / (math.exp(2) + 1)
    loss = focal_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]), gamma=2.0)
    torch.testing.assert_close(loss, torch.tensor([-((1 - p0) ** 2) * math.log(p0)]))
    assert float(loss) == pytest.approx(0.00180, abs=1e-5)
    # gamma = 0 is plain cross-entropy: p = (e^2, 1)/(e^2 + 1) -> -ln p_0 = ln(1 + e^-2).
    ce = focal_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]), gamma=0.0)
    torch.testing.assert_close(ce, torch.tensor([math.log(1 + math.exp(-2))]))


def test_label_entropy_eq3():
    # Two one-hot targets on different classes: mean (0.5, 0.5, 0) -> entropy ln 2.
    t = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    torch.testing.assert_close(label_entropy(t), torch.tensor(math.log(2)))
    # A single class used -> 0 (the degenerate labelling the bonus guards against).
    torch.testing.assert_close(label_entropy(torch.tensor([[1.0, 0], [1.0, 0]])), torch.tensor(0.0))


def test_weight_from_bin_eq8():
    bins = torch.tensor([0, 10, 20, 1])
    # 2^(10w - 5): w = 0 -> 2^-5, w = 0.5 -> 1, w = 1 -> 2^5, w = 0.05 -> 2^-4.5.
    torch.testing.assert_close(weight_from_bin(bins), torch.tensor([1 / 32, 1.0, 32.0, 2**-4.5]))
    # The public code's 2^(8w - 3): w = 0.5 -> 2^1.
    torch.testing.assert_close(
        weight_from_bin(torch.tensor([10]), 21, (-3, 5)), torch.tensor([2.0])
    )


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    p[p == 3] = 2  # class 3 never predicted: precision 0 by convention
    metrics = classification_metrics(confusion_matrix(torch.tensor(p), torch.tensor(y), 4))
    prec, rec, f1, _ = precision_recall_fscore_support(
        y, p, average="macro", zero_division=0, labels=range(4)
    )
    assert metrics["accuracy"] == pytest.approx((p == y).mean())
    assert metrics["precision"] == pytest.approx(prec)
    assert metrics["recall"] == pytest.approx(rec)
    assert metrics["f1"] == pytest.approx(f1)


@pytest.mark.parametrize("mode", ["sum", "log"])
def test_objective_term_derivatives_are_the_terms_gradient(mode):
    from mtl_envs.training.weighting import objective_term_derivatives, weighted_objective_terms

    losses = torch.tensor([0.5, 2.0, 1e-13], requires_grad=True)
    weights = torch.tensor([1.0, 3.0, 2.0])
    (expected,) = torch.autograd.grad(weighted_objective_terms(losses, weights, mode).sum(), losses)
    got = objective_term_derivatives(losses.detach(), weights, mode)
    torch.testing.assert_close(got, expected)
    # By hand: w for the sum, w / L for the log (0 below the clamp).
    hand = [1.0, 3.0, 2.0] if mode == "sum" else [2.0, 1.5, 0.0]
    torch.testing.assert_close(got, torch.tensor(hand))


def test_task_target_variance_pools_tasks_without_spread():
    from mtl_envs.training.metrics import task_target_variance

    # Task A holds targets 1 and 3: variance ((1-2)^2 + (3-2)^2) / 2 = 1. Task B holds one
    # target, 5: no variance of its own, so the pooled one of 1, 3, 5: (4 + 0 + 4) / 3 = 8/3.
    targets = torch.tensor([[[1.0], [0.0]], [[3.0], [0.0]], [[0.0], [5.0]]])
    mask = torch.tensor([[True, False], [True, False], [False, True]])
    assert task_target_variance(targets, mask).tolist() == pytest.approx([1.0, 8 / 3])
    # Two outputs per task (RobotArm's three angles, say) average their variances.
    two = torch.cat([targets, 2 * targets], dim=2)
    assert task_target_variance(two, mask).tolist() == pytest.approx([2.5, 20 / 3])
    # A task whose targets are all equal (seven of 1/3, whose float mean is not exact) has no
    # spread of its own either: it takes the pooled variance of 1, 3 and seven 1/3: mean
    # 19/27, mean square 97/81, variance 97/81 - 361/729 = 512/729.
    constant = torch.zeros(9, 2, 1)
    constant[0, 0, 0], constant[1, 0, 0] = 1.0, 3.0
    constant[2:, 1, 0] = 1 / 3
    mask = torch.zeros(9, 2, dtype=torch.bool)
    mask[:2, 0] = mask[2:, 1] = True
    assert task_target_variance(constant, mask).tolist() == pytest.approx([1.0, 512 / 729])


def test_max_label_entropy_is_log_k_the_entropy_of_a_uniform_labelling():
    assert max_label_entropy(50) == pytest.approx(math.log(50))
    # Every one of 6 classes used once: the batch mean is uniform, entropy log 6, the bound.
    assert float(label_entropy(torch.eye(6))) == pytest.approx(max_label_entropy(6), rel=1e-6)


def test_focal_loss_default_gamma_is_maxls_two():
    logits, target = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    p0 = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))
    assert float(focal_loss(logits, target)) == pytest.approx(-((1 - p0) ** 2) * math.log(p0))


def test_delta_m_skips_the_metrics_the_method_does_not_report():
    # A task left out of the method's metrics (no samples in its split) is no term, not a KeyError.
    reference = {"test/a/accuracy": 0.8, "test/b/mse": 2.0}
    assert delta_m({"test/a/accuracy": 0.88}, reference) == pytest.approx(-10.0)


def test_delta_m_without_common_per_task_metrics_is_a_config_error():
    # harness.compare catches this ValueError for single-task (AuxLabel) results.
    with pytest.raises(ConfigError, match="No per-task metrics"):
        delta_m({"test/mean_accuracy": 0.9}, {"test/mean_accuracy": 0.8})
    with pytest.raises(ValueError):
        delta_m({"test/a/accuracy": 0.9}, {"test/b/accuracy": 0.8})


def test_task_target_variance_is_floored_when_every_target_is_equal():
    # Every target of every task the same: no variance anywhere; the floor keeps nMSE finite.
    targets = torch.full((4, 2, 1), 3.0)
    var = task_target_variance(targets, torch.ones(4, 2, dtype=torch.bool))
    assert var.tolist() == pytest.approx([1e-12, 1e-12], rel=1e-6)
    assert bool((var > 0).all())
