"""Task grouping pieces (ETAP): gains, affinities, group selection, the gain predictor."""

import itertools
import math

import numpy as np
import pytest
import torch

from mtl_envs.training.affinity import (
    HeadSplit,
    group_affinity,
    per_task_gradients,
    step_affinity,
)
from mtl_envs.training.gain_prediction import ETAPPredictor, prediction_quality
from mtl_envs.training.group_trainer import GroupProtocol, GroupTrainer, all_groups, mtl_gain
from mtl_envs.training.grouping import (
    branch_and_bound,
    complete_cover,
    cover_search,
    evaluate_selection,
    exhaustive_search,
    gain_matrix,
    selection_candidates,
    selection_score,
    selection_value,
)


def small_digits10_learner(hidden=16, head_hidden=8, **config):
    """A Digits10 learner with a small MLP encoder trained by SGD, for the affinity tests."""
    from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig

    cfg = MultiTaskLearnerConfig(
        dataset="digits10",
        backbone="mlp",
        backbone_kwargs={"hidden": [hidden]},
        head_hidden=head_hidden,
        optimizer="sgd",
        device="cpu",
        **config,
    )
    return MultiTaskLearner(cfg, seed=0)


def test_mtl_gain_eq1():
    assert mtl_gain(0.5, 0.4) == pytest.approx(0.2)
    assert mtl_gain(0.5, 0.6) == pytest.approx(-0.2)
    assert len(all_groups(4)) == 15 and all_groups(3)[:3] == [(0,), (1,), (2,)]


def test_step_affinity_eq5_by_hand():
    g = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    losses = torch.tensor([1.0, 2.0])
    z = step_affinity(g, losses, lr=0.1)
    # z[0->1] = 0.1 * g1.g0 / L1 = 0.05; z[1->0] = 0.1 * g0.g1 / L0 = 0.1; z[1->1] = 0.1 * 2 / 2.
    torch.testing.assert_close(z, torch.tensor([[0.1, 0.05], [0.1, 0.1]]))
    # Momentum buffer b = (0, 2), beta = 0.5: every score to j gains 0.1 * 0.5 * g_j.b / L_j.
    zm = step_affinity(g, losses, lr=0.1, momentum=0.5, buffer=torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(zm, torch.tensor([[0.1, 0.1], [0.1, 0.15]]))


def test_affinity_of_a_two_task_linear_model_matches_the_closed_form():
    # L_i(theta) = 0.5 * ||X theta - y_i||^2 / m, so g_i = X^T (X theta - y_i) / m.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=gen)
    ys = [torch.randn(20, generator=gen) for _ in range(2)]
    theta = torch.randn(3, generator=gen, requires_grad=True)
    losses = [0.5 * ((x @ theta - y) ** 2).mean() for y in ys]
    grads = per_task_gradients(losses, [theta])
    closed = torch.stack([x.T @ (x @ theta.detach() - y) / 20 for y in ys])
    torch.testing.assert_close(grads, closed)
    z = step_affinity(grads, torch.stack(losses).detach(), lr=0.05)
    expected = 0.05 * (closed[1] @ closed[0]) / losses[1].detach()
    torch.testing.assert_close(z[0, 1], expected)


def test_group_affinity_eq7():
    a = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 4.0], [5.0, 6.0, 0.0]])
    # z_{G->0} = mean(z_{1->0}, z_{2->0}) = mean(3, 5); z_{G->2} = mean(2, 4).
    assert group_affinity(a, (0, 1, 2)) == {0: 4.0, 1: 3.5, 2: 3.0}
    assert group_affinity(a, (1,)) == {1: 0.0}


def test_selection_score_by_hand():
    groups = [(0, 1), (1, 2)]
    gains = {(0, 1): {0: 0.2, 1: -0.1}, (1, 2): {1: 0.3, 2: 0.1}}
    m = gain_matrix(groups, gains, 3)
    assert selection_score(m, [0]) == pytest.approx(0.2)  # task 1 falls back to STL (0)
    assert selection_score(m, [0, 1]) == pytest.approx(0.2 + 0.3 + 0.1)


@pytest.mark.parametrize("seed", range(6))
def test_branch_and_bound_equals_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    n = 5
    candidates = [g for g in all_groups(n) if len(g) > 1]
    gains = {g: {t: float(rng.normal(0.0, 0.2)) for t in g} for g in candidates}
    m = gain_matrix(candidates, gains, n)
    for budget in (1, 2, 3):
        _, exact = exhaustive_search(m, budget)
        chosen, bnb = branch_and_bound(m, budget)
        assert bnb == pytest.approx(exact) and len(chosen) <= budget
        assert selection_score(m, chosen) == pytest.approx(bnb)


def test_etap_objective_by_hand():
    # ETAP section 3.2.3: cover every task; single tasks (gain 0) cost budget too.
    candidates = [(0,), (1,), (2,), (0, 1), (1, 2), (0, 1, 2)]
    gains = {g: {t: 0.0 for t in g} for g in candidates}
    gains[(0, 1)] = {0: 0.2, 1: -0.1}
    gains[(1, 2)] = {1: 0.3, 2: -0.2}
    gains[(0, 1, 2)] = {0: 0.1, 1: 0.1, 2: 0.1}
    m = gain_matrix(candidates, gains, 3)
    # {0,1} + {2}: 0.2 - 0.1 + 0 = 0.1; {0,1} + {1,2}: 0.2 + 0.3 - 0.2 = 0.3; all: 0.3.
    assert selection_value(m, [3, 2], "etap", candidates) == pytest.approx(0.1)
    assert selection_value(m, [3, 4], "etap", candidates) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="does not cover"):
        selection_value(m, [3], "etap", candidates)
    # Budget 1 must take the group of all three; the fallback objective would take {1, 2}.
    assert cover_search(candidates, m, 1) == ([5], pytest.approx(0.3))
    assert selection_score(m, [4]) == pytest.approx(0.3)
    # Budget 3: {0,1}, {1,2} and {0,1,2}, each task from its best: 0.2 + 0.3 + 0.1.
    chosen, value = cover_search(candidates, m, 3)
    assert value == pytest.approx(0.6) and chosen == [3, 4, 5]


def best_cover_by_brute_force(candidates, m, budget):
    """ETAP's objective's best value over every selection of at most ``budget`` candidates
    that covers all tasks."""
    n = m.shape[1]
    feasible = [
        combo
        for size in range(1, budget + 1)
        for combo in itertools.combinations(range(len(candidates)), size)
        if set().union(*(candidates[c] for c in combo)) == set(range(n))
    ]
    return max(selection_value(m, combo, "etap", candidates) for combo in feasible)


@pytest.mark.parametrize("seed", range(4))
def test_cover_search_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 4
    candidates = selection_candidates(n, "etap")
    gains = {
        g: {t: 0.0 if len(g) == 1 else float(rng.normal(0.0, 0.2)) for t in g} for g in candidates
    }
    m = gain_matrix(candidates, gains, n)
    for budget in (1, 2, 3, 4):
        exact = best_cover_by_brute_force(candidates, m, budget)
        chosen, value = cover_search(candidates, m, budget)
        assert value == pytest.approx(exact) and len(chosen) <= budget


@pytest.mark.parametrize("loc, scale", [(-5.0, 1e-3), (0.0, 1e-5)])
def test_cover_search_is_exact_at_any_scale_of_the_gains(loc, scale):
    # Large gains close together (HiGHS's default relative gap stops within 0.01% of the
    # bound: 2e-3 of a total near -20) and raw TAG scores of order 1e-5 (below its absolute
    # gap): the optimum is still the brute force's.
    n = 5
    candidates = selection_candidates(n, "etap")
    for seed in range(20):
        rng = np.random.default_rng(seed)
        gains = {g: {t: float(rng.normal(loc, scale)) for t in g} for g in candidates}
        m = gain_matrix(candidates, gains, n)
        for budget in (1, 2):
            exact = best_cover_by_brute_force(candidates, m, budget)
            _, value = cover_search(candidates, m, budget)
            assert value == pytest.approx(exact, rel=1e-9, abs=0), (seed, budget)


def test_complete_cover_and_evaluate_selection():
    assert complete_cover([(0, 1), (2,)], 5) == [(0, 1), (2, 3, 4)]
    assert complete_cover([(0, 1), ()], 3) == [(0, 1), (2,)]
    assert complete_cover([(0, 1, 2)], 3) == [(0, 1, 2)]
    table = {
        "task_names": ["a", "b", "c"],
        "gains": {"0": {"0": 0.0}, "1": {"1": 0.0}, "2": {"2": 0.0}, "0-1": {"0": 0.5, "1": -0.5}},
        "losses": {
            "0": {"0": [1.0]},
            "1": {"1": [2.0]},
            "2": {"2": [3.0]},
            "0-1": {"0": [0.5], "1": [3.0]},
        },
    }
    # ETAP: {0,1} keeps task 1's loss 3.0 (gain -0.5); task 2 needs its own network.
    etap = evaluate_selection(table, [(0, 1)], "etap")
    assert etap == {"total_gain": 0.0, "total_loss": 0.5 + 3.0 + 3.0, "networks": 2}
    # Fallback: task 1 falls back to training alone for free.
    fallback = evaluate_selection(table, [(0, 1)], "fallback")
    assert fallback["total_gain"] == 0.5 and fallback["total_loss"] == 0.5 + 2.0 + 3.0
    with pytest.raises(ValueError, match="holds no val gains"):
        evaluate_selection(table, [(0, 1)], "etap", split="val")


def test_etap_recovers_a_nonlinear_affinity_to_gain_map():
    rng = np.random.default_rng(0)
    n = 8
    affinity = rng.normal(0.0, 1.0, (n, n))
    bias = rng.normal(0.0, 0.05, n)

    def truth(group):
        scores = group_affinity(affinity, group)
        return {t: math.tanh(1.5 * scores[t]) + bias[t] for t in group}

    groups = [g for g in all_groups(n) if len(g) > 1]
    order = rng.permutation(len(groups))
    train = [groups[i] for i in order[:40]]
    test = [groups[i] for i in order[40:200]]
    gains = {g: truth(g) for g in train + test}
    model = ETAPPredictor(affinity).fit(train, gains)
    pred = [p for g in test for p in model.predict(g).values()]
    true = [gains[g][t] for g in test for t in sorted(g)]
    quality = prediction_quality(pred, true)
    assert quality["pearson"] > 0.95 and quality["r2"] > 0.9
    assert model.predict((3,)) == {3: 0.0}
    # Both stages choose their penalty over the same folds, each group's rows kept together.
    assert model.correction.cv is model.mapping.cv
    assert model.correction.best_params_["alpha"] in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def test_etap_rows_and_final_prediction_eq11_eq12_by_hand():
    # Eq. 11's input for (group, task): the multi-hot u_G, here with the target task's
    # one-hot beside it; eq. 7 gives each row's affinity z; eq. 12 adds the two stages.
    affinity = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 4.0], [5.0, 6.0, 0.0]])
    model = ETAPPredictor(affinity)
    z, codes, keys = model._rows([(0, 2), (0, 1, 2)])
    assert keys == [((0, 2), 0), ((0, 2), 2), ((0, 1, 2), 0), ((0, 1, 2), 1), ((0, 1, 2), 2)]
    # z_{G->t} = mean over the other members j of affinity[j, t].
    np.testing.assert_allclose(z.ravel(), [5.0, 2.0, (3.0 + 5.0) / 2, (1.0 + 6.0) / 2, 3.0])
    np.testing.assert_array_equal(codes[0], [1, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(codes[3], [1, 1, 1, 0, 1, 0])
    groups = [(0, 1), (0, 2), (1, 2), (0, 1, 2)]
    gains = {g: {t: 0.1 * (t + 1) * len(g) for t in g} for g in groups}
    model.fit(groups, gains)
    z, codes, _ = model._rows([(1, 2)])
    stage1, stage2 = model.mapping.predict(z), model.correction.predict(codes)
    assert model.predict((1, 2)) == pytest.approx(
        {1: stage1[0] + stage2[0], 2: stage1[1] + stage2[1]}
    )

    # Eq. 10's residual is y - y_aff, so the correction moves stage 1 towards the gains: on
    # the training rows the squared error falls (a correction fitted to y_aff - y would
    # move it away and raise the error).
    def squared_error(predict):
        return sum((predict(g)[t] - gains[g][t]) ** 2 for g in groups for t in g)

    def stage1_only(group):
        z, _, keys = model._rows([group])
        return {t: v for (_, t), v in zip(keys, model.mapping.predict(z))}

    assert squared_error(model.predict) < 0.5 * squared_error(stage1_only)


def test_etap_cross_validation_keeps_each_group_in_one_fold():
    groups = [(0, 1), (0, 2, 3), (1, 2), (1, 3), (0, 1, 2, 3), (2, 3)]
    keys = [(g, t) for g in groups for t in g]
    folds = ETAPPredictor(np.eye(4), seed=0).folds(keys)
    assert len(folds) == 5
    for train, held in folds:
        assert {keys[i][0] for i in train}.isdisjoint({keys[i][0] for i in held})
    assert sorted(np.concatenate([held for _, held in folds]).tolist()) == list(range(len(keys)))


def test_group_trainer_caches_and_computes_gains(tmp_path):
    protocol = GroupProtocol(epochs=1)
    trainer = GroupTrainer(protocol, cache_dir=tmp_path, device="cpu")
    pair = trainer.task_losses((1, 0), seed=0)
    assert set(pair) == {0, 1} and all(v > 0 for v in pair.values())
    files = sorted(p.name for p in tmp_path.rglob("*.json"))
    assert files == ["0-1.json"]
    gains = trainer.gains((0, 1), seeds=[0])
    stl0 = trainer.task_losses((0,), seed=0)[0]
    assert gains[0] == pytest.approx((stl0 - pair[0]) / stl0)
    # Cached: a second trainer reads the same numbers without training.
    again = GroupTrainer(protocol, cache_dir=tmp_path, device="cpu")
    assert again.task_losses((0, 1), seed=0) == pair
    with pytest.raises(ValueError, match="group"):
        trainer.task_losses((0, 10), seed=0)
    assert GroupProtocol(epochs=2).key() != protocol.key()


def test_gains_over_seeds_are_the_mean_of_each_seeds_eq1(monkeypatch):
    """ETAP eq. 1 per seed, then the mean: seed 0 STL 1.0, group 0.5 (gain 0.5); seed 1 STL
    2.0, group 1.5 (gain 0.25): 0.375, where the gain of the seed-mean losses would be
    (1.5 - 1.0) / 1.5 = 0.333."""
    trainer = GroupTrainer(GroupProtocol(epochs=1), cache_dir=None, device="cpu")
    losses = {((0,), 0): 1.0, ((0, 1), 0): 0.5, ((0,), 1): 2.0, ((0, 1), 1): 1.5}
    losses |= {((1,), 0): 1.0, ((1,), 1): 1.0}

    def task_losses(group, seed, split="test"):
        return {t: losses[(tuple(group), seed)] for t in group}

    monkeypatch.setattr(trainer, "task_losses", task_losses)
    assert trainer.gains((0, 1), seeds=[0, 1])[0] == pytest.approx(0.375)
    # On the validation split both the group's and the STL losses are validation ones:
    # STL 4.0, group 3.0 -> 0.25 (against the test STL loss 1.0 it would be -2.0).
    val = {((0,), 0): 4.0, ((0, 1), 0): 3.0, ((1,), 0): 1.0}
    monkeypatch.setattr(
        trainer,
        "task_losses",
        lambda group, seed, split="test": {
            t: (val if split == "val" else losses)[(tuple(group), seed)] for t in group
        },
    )
    assert trainer.gains((0, 1), seeds=[0], split="val")[0] == pytest.approx(0.25)


def test_protocol_keys_tell_dataset_options_apart():
    """A protocol's cache key holds its dataset options (the scarce table's labels per task
    must not share the full-label cache) and stays what it was for protocols without any."""
    plain = GroupProtocol()
    scarce = GroupProtocol(dataset_kwargs={"labels_per_task": 30})
    assert scarce.key() != plain.key()
    assert GroupProtocol(dataset_kwargs={"labels_per_task": 31}).key() != scarce.key()
    assert plain.key() == GroupProtocol(dataset_kwargs={}).key()


def test_branch_and_bound_scales_to_all_groups_of_ten_tasks():
    rng = np.random.default_rng(1)
    candidates = [g for g in all_groups(10) if len(g) > 1]
    gains = {g: {t: float(rng.normal(-0.05, 0.1)) for t in g} for g in candidates}
    m = gain_matrix(candidates, gains, 10)
    chosen, score = branch_and_bound(m, 2)
    # Exact for budget 2: check against all pairs of the top candidates by brute force.
    best_pair = max(selection_score(m, [a, b]) for a, b in itertools.combinations(range(len(m)), 2))
    assert score == pytest.approx(
        max(best_pair, max(selection_score(m, [c]) for c in range(len(m))))
    )


def test_collect_affinities_etap_and_tag_on_an_mtl_run():
    from mtl_envs.training.affinity import collect_affinities

    learner = small_digits10_learner(hidden=32, head_hidden=16, lr=0.1, momentum=0.9)
    scores = collect_affinities(learner, epochs=2, tag=True)
    assert scores.steps == 24 and scores.etap.shape == (10, 10) and scores.tag.shape == (10, 10)
    # A task's own update lowers its own loss: positive self-affinity in both estimates.
    assert (np.diag(scores.etap_no_momentum) > 0).all() and (np.diag(scores.tag) > 0).all()
    # With momentum, the first-order ETAP score and TAG's lookahead agree on the pairs.
    off = ~np.eye(10, dtype=bool)
    assert np.corrcoef(scores.etap[off], scores.tag[off])[0, 1] > 0.8
    assert learner.epoch == 2


def test_collect_affinities_averages_every_kth_step_eq6(monkeypatch):
    import mtl_envs.training.affinity as affinity

    # Step k's score matrix is replaced by (k + 1) * ones: scoring every 2nd of the 24 steps
    # of two Digits10 epochs averages 1, 2, ..., 12 into 6.5 (eq. 6 over the scored steps).
    calls = []

    def numbered(grads, losses, lr, momentum=0.0, buffer=None):
        calls.append(lr)
        return torch.full((10, 10), float(len(calls)))

    monkeypatch.setattr(affinity, "step_affinity", numbered)
    learner = small_digits10_learner(lr=0.1, momentum=0.0)
    scores = affinity.collect_affinities(learner, epochs=2, every=2)
    assert scores.steps == 24 and len(calls) == 12 and set(calls) == {0.1}
    np.testing.assert_allclose(scores.etap, np.full((10, 10), 6.5))
    np.testing.assert_allclose(scores.etap_no_momentum, np.full((10, 10), 6.5))
    # Eq. 5's eta is each step's own rate: halved after every epoch, the 12 steps of the
    # second epoch score at 0.05.
    calls.clear()
    decaying = small_digits10_learner(
        lr=0.1, momentum=0.0, scheduler_step_epochs=1, scheduler_gamma=0.5
    )
    affinity.collect_affinities(decaying, epochs=2)
    assert calls == pytest.approx([0.1] * 12 + [0.05] * 12)


@pytest.mark.parametrize("loss", ["sum", "log"])
def test_update_from_per_task_gradients_is_the_plain_update(loss):
    # collect_affinities steps with the per-task gradients it scored with: the same update as
    # the learner's own backward of the objective (sum L_i, or sum log L_i).
    from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig

    cfg = MultiTaskLearnerConfig(
        dataset="digits10", backbone="mlp", optimizer="sgd", lr=0.1, loss=loss, device="cpu"
    )
    plain, reused = MultiTaskLearner(cfg, seed=3), MultiTaskLearner(cfg, seed=3)
    for learner in (plain, reused):
        learner.begin_epoch()
    for _ in range(3):
        losses, features = plain.task_losses(plain.next_indices())
        plain.apply(losses, features, None)
        losses, _ = reused.task_losses(reused.next_indices())
        params = [p for p in reused.net.parameters() if p.requires_grad]
        grads = per_task_gradients(losses, params)
        reused.apply_task_gradients(torch.stack(losses).detach(), grads, params)
    # The split at the representation gives the same encoder gradients and update.
    batch = reused.prepare_batch(reused.next_indices())
    losses, _ = reused.batch_losses(batch)
    split = HeadSplit(reused.net)
    full = per_task_gradients(losses, split.params)
    split_losses, encoder = split(reused, batch)
    torch.testing.assert_close(torch.stack(split_losses), torch.stack(losses))
    torch.testing.assert_close(encoder, full[:, : encoder.shape[1]], rtol=1e-5, atol=1e-7)
    c = reused.objective_coefficients(torch.stack(losses))
    gradient = torch.cat([g.reshape(-1) for g in split.gradients(c)])
    torch.testing.assert_close(gradient, c @ full, rtol=1e-5, atol=1e-7)
    # Scoring with the representation's gradients: each task's gradient of the encoder's
    # output, and the same update from one combined vector-Jacobian product.
    losses, features = reused.batch_losses(batch)
    representation = per_task_gradients(losses, [features])
    split = HeadSplit(reused.net, per_task_encoder=False)
    _, deltas = split(reused, batch)
    torch.testing.assert_close(deltas, representation, rtol=1e-5, atol=1e-7)
    gradient = torch.cat([g.reshape(-1) for g in split.gradients(c)])
    torch.testing.assert_close(gradient, c @ full, rtol=1e-5, atol=1e-7)
    with pytest.raises(RuntimeError, match="call the split first"):
        split.gradients(c)  # one update per split batch
    for a, b in zip(plain.net.parameters(), reused.net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain._epoch_loss_sum, reused._epoch_loss_sum)


def test_representation_scores_are_an_option_with_clear_limits():
    from mtl_envs.errors import ConfigError
    from mtl_envs.training.affinity import collect_affinities
    from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig

    cfg = MultiTaskLearnerConfig(dataset="digits10", backbone="mlp", device="cpu")
    learner = MultiTaskLearner(cfg, seed=0)
    scores = collect_affinities(learner, epochs=1, gradients="representation")
    assert np.isfinite(scores.etap).all() and (np.diag(scores.etap) > 0).all()
    np.testing.assert_array_equal(scores.etap, scores.etap_no_momentum)  # no momentum term
    with pytest.raises(ConfigError, match="gradients"):
        collect_affinities(learner, epochs=1, gradients="features")
    with pytest.raises(ConfigError, match="TAG"):
        collect_affinities(learner, epochs=1, tag=True, gradients="representation")


def test_tag_lookahead_compares_losses_on_the_same_augmented_inputs():
    # A vanishing step cannot change any loss: every TAG score must be 0, augmentation or not.
    from mtl_envs.training.affinity import collect_affinities
    from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig

    cfg = MultiTaskLearnerConfig(
        dataset="digits10", optimizer="sgd", lr=1e-12, momentum=0.0, augment=True, device="cpu"
    )
    learner = MultiTaskLearner(cfg, seed=0)
    scores = collect_affinities(learner, epochs=1, etap=False, tag=True)
    assert learner.augment and scores.steps == learner.num_batches
    assert np.abs(scores.tag).max() < 1e-5


def test_tag_lookahead_matches_a_network_stepped_by_hand():
    # z[i, j] = 1 - L_j(theta - eta (g_i + beta b)) / L_j(theta): step a copy of the network
    # by task i's update (plus a momentum buffer b) and read its losses on the same batch.
    import copy

    from mtl_envs.training.affinity import _lookahead_affinity

    learner = small_digits10_learner(lr=0.5)
    learner.begin_epoch()
    batch = learner.prepare_batch(learner.next_indices())
    shared = [p for p in learner.net.backbone.parameters() if p.requires_grad]
    losses, _ = learner.batch_losses(batch)
    grads = per_task_gradients(losses, shared)
    before = torch.stack(losses).detach()
    buffer = torch.randn(grads.shape[1], generator=torch.Generator().manual_seed(1))
    scores = _lookahead_affinity(learner, batch, shared, grads, before, 0.5, 0.9, buffer)
    expected = torch.zeros(10, 10)
    for i in range(10):
        stepped = copy.deepcopy(learner)
        update = 0.5 * (grads[i] + 0.9 * buffer)
        offset = 0
        with torch.no_grad():
            for p in (q for q in stepped.net.backbone.parameters() if q.requires_grad):
                p -= update[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
            after = torch.stack(stepped.batch_losses(batch)[0])
        expected[i] = 1.0 - after / before
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
    assert scores.abs().max() > 1e-3  # the step is large enough to move the losses


def test_shipped_table_matches_retraining_within_seed_noise():
    from mtl_envs.training.group_trainer import load_gain_table

    table = load_gain_table("digits10")
    assert len(table["gains"]) == 2**10 - 1 and table["protocol_key"]
    protocol = GroupProtocol(**table["protocol"])
    assert protocol.key() == table["protocol_key"]
    trainer = GroupTrainer(protocol, cache_dir=None, device="cpu")
    for group in [(3,), (0, 7), (2, 5, 8)]:
        fresh = trainer.task_losses(group, seed=table["seeds"][0])
        for t in group:
            stored = table["losses"]["-".join(map(str, group))][str(t)]
            noise = abs(stored[0] - stored[1])
            assert abs(fresh[t] - stored[0]) <= max(2 * noise, 0.05 * stored[0])


def test_the_shipped_tables_affinities_are_what_the_code_collects(tmp_path):
    """``build_gain_table.py --affinities-of`` reruns a table's all-task runs under its own
    protocol and seeds: on the shipped Digits10 table it gives back its affinities, and
    touches nothing else of the file."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shipped = root / "mtl_envs" / "tables" / "digits10_gains.json"
    copy = tmp_path / "digits10_gains.json"
    shutil.copy(shipped, copy)
    subprocess.run(
        [sys.executable, "scripts/build_gain_table.py", "--affinities-of", str(copy)],
        cwd=root,
        check=True,
        timeout=300,
        capture_output=True,
    )
    old, new = json.loads(shipped.read_text()), json.loads(copy.read_text())
    assert {key for key in old if old[key] != new[key]} <= {"affinity"}
    for kind in ("etap", "tag"):
        # TAG's 1 - L(after) / L(before) cancels digits: 1e-7 against scores of about 1e-4.
        np.testing.assert_allclose(new["affinity"][kind], old["affinity"][kind], atol=1e-7)


@pytest.mark.parametrize("table, floor", [("digits10", 0.9999), ("digits10_scarce", 0.98)])
def test_tags_lookahead_on_the_adam_tables_is_etaps_first_order_score(table, floor):
    """At Adam's 1e-3 the lookahead ``1 - L_j(theta - eta g_i) / L_j(theta)`` is its first-
    order term, ETAP's momentum-free eq. 5 (``docs/results.md`` quotes these correlations)."""
    from mtl_envs.training.group_trainer import load_gain_table

    affinity = load_gain_table(table)["affinity"]
    off = ~np.eye(10, dtype=bool)
    tag, etap = (np.asarray(affinity[k])[off] for k in ("tag", "etap"))
    assert np.corrcoef(tag, etap)[0, 1] >= floor
