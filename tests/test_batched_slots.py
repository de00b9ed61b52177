"""The batched LossWeighting vector form slot by slot: each run's own optimiser step, rate,
seed, step budget and divergence; partial resets that leave the other slots alone; infos laid
out as Gymnasium's SyncVectorEnv lays them out."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import assert_same_vector_infos

import mtl_envs  # noqa: F401
from mtl_envs.envs import vector_infos
from mtl_envs.errors import ConfigError
from mtl_envs.training.batched import BatchedMultiTaskLearner
from mtl_envs.training.multitask_learner import MultiTaskLearnerConfig

CUBIC = {"epochs": 4, "warmup_epochs": 2}  # 3 batches per epoch: 6 agent steps per run


def _vec(env_id="LossWeighting-Cubic-v1", num_envs=2, **kwargs):
    return gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
    )


# ----------------------------------------------------------------- vector_infos.py


def test_reset_mask_must_be_bool():
    """An int mask is not a bool mask (SyncVectorEnv refuses it too); without the dtype
    check, ``[1, 1]`` passes and ``~mask`` later means -2, not False."""
    with pytest.raises(ConfigError, match="must be a bool array"):
        vector_infos.reset_mask({"reset_mask": np.array([1, 0])}, 2)
    with pytest.raises(ConfigError, match="must be a bool array"):
        vector_infos.reset_mask({"reset_mask": np.array([1, 1])}, 2)
    assert vector_infos.reset_mask({"reset_mask": np.array([True, False])}, 2).tolist() == [
        True,
        False,
    ]


def test_same_step_masks_only_the_ended_slots():
    """Slot 0 ends, slot 1 steps on: the top level holds slot 0's reset info and slot 1's step
    info; final_obs / final_info are masked to slot 0 only."""
    step_info = {"losses": np.array([[1.0, 2.0], [3.0, 4.0]]), "epoch": np.array([3, 3])}
    reset_info = {"epoch": np.array([2, 9]), "base_losses": np.array([[5.0, 6.0], [7.0, 8.0]])}
    final_obs = np.array([[0.1, 0.2], [0.3, 0.4]], dtype=np.float32)
    infos = vector_infos.same_step(step_info, np.array([True, False]), final_obs, reset_info)
    assert infos["_losses"].tolist() == [False, True]
    assert infos["epoch"].tolist() == [2, 3] and infos["_epoch"].tolist() == [True, True]
    assert infos["_base_losses"].tolist() == [True, False]
    assert infos["_final_obs"].tolist() == [True, False] and infos["final_obs"][1] is None
    np.testing.assert_array_equal(infos["final_obs"][0], final_obs[0])
    assert infos["_final_info"].tolist() == [True, False]
    final = infos["final_info"]
    assert final["_losses"].tolist() == [True, False] and final["_epoch"].tolist() == [True, False]
    assert final["epoch"].tolist() == [3, 3]


def test_same_step_infos_match_sync_vector_env_through_staggered_ends():
    """SAME_STEP with slots ending on different steps (a partial reset staggers them): keys,
    masks and values as SyncVectorEnv's, final_info/final_obs masked to the ended slot."""
    from gymnasium.vector import AutoresetMode

    ours = _vec(**CUBIC)
    theirs = gym.make_vec(
        "LossWeighting-Cubic-v1",
        num_envs=2,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        **CUBIC,
    )
    ours.reset(seed=5)
    theirs.reset(seed=5)
    actions = np.zeros(ours.action_space.shape, dtype=np.float32)
    for step in range(8):
        if step == 2:  # slot 1 starts afresh: it ends two steps after slot 0
            mask = np.array([False, True])
            ours.reset(options={"reset_mask": mask})
            theirs.reset(options={"reset_mask": mask})
        _, _, term, _, info = ours.step(actions)
        _, _, s_term, _, expected = theirs.step(actions)
        np.testing.assert_array_equal(term, s_term)
        assert_same_vector_infos(info, expected)
        if step == 5:
            assert term.tolist() == [True, False]
            assert info["_final_info"].tolist() == [True, False]
            assert info["final_info"]["_losses"].tolist() == [True, False]


def test_unbatch_gives_each_slot_only_its_masked_keys():
    infos = {
        "a": np.array([1, 2]),
        "_a": np.array([True, False]),
        "b": np.array([3, 4]),  # no mask: every slot
        "final_obs": np.array([None, None], dtype=object),
        "_final_obs": np.array([False, False]),
    }
    assert vector_infos.unbatch(infos, 2) == [{"a": 1, "b": 3}, {"b": 4}]


# ----------------------------------------------------------------- batched.py


def _batched(optimizer="adam", weight_decay=0.0, num_runs=2):
    config = MultiTaskLearnerConfig(
        dataset="cubic",
        model="hard_sharing",
        batch_size=60,
        loss="sum",
        optimizer=optimizer,
        weight_decay=weight_decay,
        device="cpu",
    )
    return BatchedMultiTaskLearner(config, num_runs)


@pytest.mark.parametrize(
    ("optimizer", "weight_decay"), [("adam", 0.0), ("adam", 0.1), ("sgd", 0.1)]
)
def test_stacked_update_is_torchs_optimizer_step_per_run(optimizer, weight_decay):
    """_update is torch's Adam / SGD (eps, L2 weight decay, bias corrections at each run's own
    step count, each run's own learning rate), row by row; a row left out keeps its
    parameters. Gradients span nine decades, so Adam's eps matters on the small ones."""
    learner = _batched(optimizer, weight_decay)
    learner.learners[1].optimizer.param_groups[0]["lr"] = 3e-4  # as a StepLR decay would
    n = 5
    scale = torch.logspace(-9, 0, n)
    weights = torch.tensor([[1.0, 2.0, 0.5, 1.0, 1.5], [0.5, 1.0, 1.0, 2.0, 0.5]])
    refs = []
    for k in range(2):
        p = learner.flat[k].detach().clone().requires_grad_(True)
        lr = learner.learners[k].lr
        cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        kwargs = {} if optimizer == "adam" else {"momentum": learner.config.momentum}
        refs.append((p, cls([p], lr=lr, weight_decay=weight_decay, **kwargs)))
    for active in ([True, True], [True, False], [True, True]):
        before = learner.flat.detach().clone()
        losses = 1.0 + learner.flat[:, :n] * scale  # grad of w_i L_i: w_i * scale_i
        learner._update(losses, weights, torch.tensor(active))
        for k, (p, opt) in enumerate(refs):
            if not active[k]:
                assert torch.equal(learner.flat[k], before[k])
                continue
            grad = torch.zeros_like(p)
            grad[:n] = weights[k] * scale
            p.grad = grad
            opt.step()
            torch.testing.assert_close(
                learner.flat[k] - before[k], p.detach() - before[k], rtol=1e-4, atol=1e-7
            )


def test_apply_pending_leaves_inactive_runs_cursor_and_epoch_sums_alone():
    learner = _batched()
    learner.reset_runs([0, 1], [0, 1], 1, None)
    sums = [run._epoch_loss_sum.clone() for run in learner.learners]
    counts = [run._epoch_batches for run in learner.learners]
    positions = [run.position for run in learner.learners]
    learner.apply_pending(torch.ones(2, learner.num_tasks), active=[True, False])
    assert learner.learners[0].position == positions[0] + 1
    assert learner.learners[1].position == positions[1]
    assert learner.learners[1]._epoch_batches == counts[1]
    assert torch.equal(learner.learners[1]._epoch_loss_sum, sums[1])
    assert learner.learners[0]._epoch_batches == counts[0] + 1


def test_a_partial_reset_leaves_the_other_slots_augmentation_and_batchnorm_alone():
    """Digits10 (augmentation, BatchNorm): restarting slot 1 mid-run replays slot 0's pending
    batch with the same augmentation draw, and leaves slot 0's BatchNorm statistics and
    generator where they were."""
    vector = _vec("LossWeighting-Digits10-v1", epochs=2, warmup_epochs=1, augment=True)
    vector.reset(seed=0)
    actions = np.zeros(vector.action_space.shape, dtype=np.float32)
    for _ in range(2):
        obs, *_ = vector.step(actions)
    learner = vector.unwrapped.learner
    buffers = {name: b[0].clone() for name, b in learner.buffers.items()}
    assert buffers  # the network has BatchNorm statistics to check
    rng = learner.learners[0].generator.get_state()
    again, _ = vector.reset(options={"reset_mask": np.array([False, True])})
    np.testing.assert_allclose(again[0], obs[0], rtol=1e-6)
    for name, value in buffers.items():
        assert torch.equal(learner.buffers[name][0], value), name
    assert torch.equal(learner.learners[0].generator.get_state(), rng)


def _vector_and_singles(seed: int, **kwargs):
    """Two Cubic slots and the two single envs they must match, reset with seeds seed + k."""
    vector = _vec(**kwargs)
    singles = [gym.make("LossWeighting-Cubic-v1", **kwargs) for _ in range(2)]
    vector.reset(seed=seed)
    for k, env in enumerate(singles):
        env.reset(seed=seed + k)
    return vector, singles


def test_slots_match_single_envs_under_a_step_lr_schedule_and_weight_decay():
    """lr halves every epoch: the stacked update must use each run's scheduled rate and the
    reward its alpha = lr_0 / lr_t; L2 weight decay strong enough to show its sign."""
    vector, singles = _vector_and_singles(3, **CUBIC, scheduler_step_epochs=1, weight_decay=0.05)
    rng = np.random.default_rng(0)
    for _ in range(5):
        actions = rng.uniform(-0.9, 0.9, vector.action_space.shape).astype(np.float32)
        v_obs, v_rew, *_, info = vector.step(actions)
        outs = [env.step(a) for env, a in zip(singles, actions)]
        np.testing.assert_allclose(v_obs, np.stack([o[0] for o in outs]), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(v_rew, [o[1] for o in outs], rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(info["alpha"], [o[4]["alpha"] for o in outs])
    assert info["alpha"].tolist() == [8.0, 8.0]  # 2 warm-up epochs and one acting epoch


# ----------------------------------------------------------------- loss_weighting.py


def test_a_run_that_ends_on_its_max_steps_is_terminated_not_truncated():
    """Gymnasium: an episode that reaches its terminal state is terminated, even on the step
    max_steps also cuts; both forms agree."""
    single = gym.make("LossWeighting-Cubic-v1", epochs=3, warmup_epochs=2, max_steps=3)
    single.reset(seed=0)
    for _ in range(3):
        *_, terminated, truncated, _ = single.unwrapped.step(np.zeros(20, dtype=np.float32))
    assert terminated and not truncated
    vector = _vec(epochs=3, warmup_epochs=2, max_steps=3)
    vector.reset(seed=0)
    for _ in range(3):
        _, _, terminated, truncated, _ = vector.step(np.zeros((2, 20), dtype=np.float32))
    assert terminated.tolist() == [True, True] and truncated.tolist() == [False, False]


def test_vector_max_steps_counts_each_run_from_its_reset():
    vector = _vec(**CUBIC, max_steps=2)
    vector.reset(seed=0)
    cuts = []
    for _ in range(4):
        _, _, terminated, truncated, _ = vector.step(np.zeros((2, 20), dtype=np.float32))
        assert not terminated.any()
        cuts.append(truncated.tolist())
    assert cuts == [[False, False], [True, True], [False, False], [True, True]]


def test_vector_divergence_truncates_only_the_diverged_slot():
    """Slot 1 trains at a huge learning rate and diverges: it alone is truncated with reward 0
    and info["diverged"]; slot 0 steps on (its rewards finite, not truncated)."""
    vector = _vec(**CUBIC, optimizer="sgd", loss="sum")
    vector.reset(seed=0)
    vector.unwrapped.learner.learners[1].optimizer.param_groups[0]["lr"] = 1e12
    for _ in range(6):
        obs, reward, terminated, truncated, info = vector.step(np.zeros((2, 20), dtype=np.float32))
        if truncated[1]:
            break
    assert truncated.tolist() == [False, True] and not terminated[1]
    assert info["_final_info"].tolist() == [False, True] and info["final_info"]["diverged"][1]
    assert not info["diverged"][0] and info["_diverged"][0]  # slot 0's own step info
    assert reward[1] == 0.0 and np.isfinite(reward[0]) and np.isfinite(obs).all()


def test_a_partial_reset_uses_only_the_seeds_of_the_slots_it_restarts():
    """As SyncVectorEnv: reset(seed=[s0, s1], reset_mask=[False, True]) seeds slot 1 only;
    slot 0's generator, hence its next run after an autoreset, is untouched. A None seed in a
    restarted slot continues that slot's generator."""
    a, b = _vec(**CUBIC), _vec(**CUBIC)
    a.reset(seed=0)
    b.reset(seed=0)
    mask = np.array([False, True])
    a.reset(seed=[100, 7], options={"reset_mask": mask})
    b.reset(seed=[None, 7], options={"reset_mask": mask})
    actions = np.zeros((2, 20), dtype=np.float32)
    for _ in range(6):  # slot 0 ends its run and autoresets from its own generator
        obs_a, *_ = a.step(actions)
        obs_b, *_ = b.step(actions)
    np.testing.assert_array_equal(obs_a, obs_b)
    # A None per-slot seed on a restarted slot: that slot goes on from its generator.
    obs, _ = a.reset(seed=[None, 3])
    expected, _ = _vec(**CUBIC).reset(seed=[2, 3])
    np.testing.assert_array_equal(obs[1], expected[1])


def test_val_rewards_match_single_envs_across_epoch_ends_and_an_autoreset():
    """reward="val" on Cubic (3 batches per epoch, so epochs end within the test): each epoch
    end pays the change of the potential since the last one, and a fresh run counts from 0.
    (The existing val test runs CubicScales, 12 batches per epoch: in its 9 steps no epoch
    ends and every val reward is 0 in both forms.)"""
    vector, singles = _vector_and_singles(1, **CUBIC, reward="val")
    rng = np.random.default_rng(0)
    paid = 0
    for _ in range(9):  # epoch ends at steps 3, 6 (run ends, autoreset) and 9
        actions = rng.uniform(-0.9, 0.9, vector.action_space.shape).astype(np.float32)
        _, v_rew, *_ = vector.step(actions)
        outs = [env.step(a) for env, a in zip(singles, actions)]
        for env, out in zip(singles, outs):
            if out[2] or out[3]:
                env.reset()
        np.testing.assert_allclose(v_rew, [o[1] for o in outs], rtol=1e-3, atol=1e-5)
        paid += int(np.any(v_rew != 0))
    assert paid == 3


def test_next_step_restart_pays_zero_on_an_augmented_dataset():
    """NEXT_STEP: the step that restarts an ended slot pays 0 (SyncVectorEnv's convention). On
    Digits10 with augmentation the restarting slot's stale losses and its re-forwarded batch
    differ (a new augmentation draw), so the reward must be zeroed, not merely come out 0."""
    vector = _vec(
        "LossWeighting-Digits10-v1",
        epochs=2,
        warmup_epochs=1,
        augment=True,
        max_steps=1,
        autoreset_mode="NextStep",
    )
    vector.reset(seed=0)
    actions = np.zeros(vector.action_space.shape, dtype=np.float32)
    *_, truncated, _ = vector.step(actions)
    assert truncated.all()
    _, reward, terminated, truncated, info = vector.step(actions)  # both slots restart
    assert reward.tolist() == [0.0, 0.0] and not (terminated.any() or truncated.any())
    assert info["_base_losses"].all()


def test_each_slot_evaluates_with_its_own_batchnorm_statistics_and_a_restart_renews_them():
    """BatchNorm's running statistics show only in evaluation (training normalises by the
    batch). Restarting slot 0 alone leaves slot 1's evaluation as it was, and the restarted
    slot evaluates as the slot of a fresh vector env reset with the same seed: its
    statistics start afresh, not copied from a neighbour or kept from its last run."""
    vector = _vec("LossWeighting-Digits10-v1", epochs=2, warmup_epochs=1)
    vector.reset(seed=0)
    actions = np.zeros(vector.action_space.shape, dtype=np.float32)
    for _ in range(3):
        vector.step(actions)
    before = vector.unwrapped.evaluate("test", 1)
    vector.reset(seed=[5, None], options={"reset_mask": np.array([True, False])})
    assert vector.unwrapped.evaluate("test", 1) == before
    fresh = _vec("LossWeighting-Digits10-v1", epochs=2, warmup_epochs=1)
    fresh.reset(seed=[5, 6])
    restarted, expected = vector.unwrapped.evaluate("test", 0), fresh.unwrapped.evaluate("test", 0)
    assert restarted.keys() == expected.keys()
    for key, value in expected.items():
        assert restarted[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_a_partial_reset_without_autoreset_leaves_an_ended_slot_ended():
    """Autoreset disabled: slot 0 has ended, and restarting slot 1 alone must not revive it
    (a step would train it past its end); restarting it is the caller's to do."""
    vector = _vec(**CUBIC, autoreset_mode="Disabled")
    vector.reset(seed=0)
    actions = np.zeros((2, 20), dtype=np.float32)
    vector.step(actions)
    vector.reset(options={"reset_mask": np.array([False, True])})  # slot 1 ends a step later
    for _ in range(5):
        _, _, terminated, _, _ = vector.step(actions)
    assert terminated.tolist() == [True, False]
    vector.reset(options={"reset_mask": np.array([False, True])})
    with pytest.raises(ConfigError, match=r"Slots \[0\] have ended"):
        vector.step(actions)


def test_the_base_losses_are_the_second_warmup_epochs_whatever_the_warmup_length():
    """IGB Algorithm 2 fixes L_base from the second warm-up epoch; with three warm-up epochs
    the vector form's L_base is still the second's, as the single env's."""
    kwargs = {"epochs": 5, "warmup_epochs": 3}
    _, info = _vec(**kwargs).reset(seed=4)
    expected = [
        gym.make("LossWeighting-Cubic-v1", **kwargs).reset(seed=4 + k)[1]["base_losses"]
        for k in range(2)
    ]
    np.testing.assert_allclose(info["base_losses"], np.stack(expected), rtol=1e-5)


def test_a_next_step_restart_reports_neither_end_when_max_steps_cut_the_run():
    """NEXT_STEP: max_steps cuts both runs one batch before their end; the following step
    restarts them and reports neither terminated nor truncated (it trains nothing, so the
    run's last batch cannot end it after the cut)."""
    vector = _vec(**CUBIC, max_steps=5, autoreset_mode="NextStep")
    vector.reset(seed=0)
    actions = np.zeros((2, 20), dtype=np.float32)
    for _ in range(5):
        _, _, terminated, truncated, _ = vector.step(actions)
    assert truncated.all() and not terminated.any()
    _, reward, terminated, truncated, _ = vector.step(actions)
    assert not terminated.any() and not truncated.any() and reward.tolist() == [0.0, 0.0]
