"""The auxiliary-labelling family case by case (AuxLabel, AuxLearner, MAXL, the human and
random baselines, the PPO protocol): eq. 8's weights, epoch and episode boundaries, restore
modes, seeds and streams, checkpoints; numbers are worked by hand. Tiny data: the bundled
Digits set (1,200 training images) or subsets of it."""

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import aux_learner as make

import mtl_envs  # noqa: F401  (registers the ids)
from mtl_envs.errors import ConfigError
from mtl_envs.training import AuxLearner, AuxLearnerConfig

TINY = {"train_batch_size": 4, "eval_batch_size": 8}


def small(seed=0, **kwargs):
    """A learner on a stratified subset of Digits (``train_subset``), loaded afresh: a shared
    dataset would override the subset."""
    cfg = AuxLearnerConfig(dataset="digits", backbone="small_cnn", device="cpu", **kwargs)
    return AuxLearner(cfg, seed=seed)


def spy_weights(env) -> list:
    """Record the sample weights each SGD step of ``env``'s learner receives."""
    seen = []
    train_batch = env.learner.train_batch

    def spy(indices, targets, weights=None, inputs=None):
        seen.append(None if weights is None else weights.clone())
        return train_batch(indices, targets, weights, inputs=inputs)

    env.learner.train_batch = spy
    return seen


# ---------------------------------------------------------------- action -> weight (eq. 8)
def test_weighted_env_trains_on_eq8_weights_of_the_chosen_bins():
    env = gym.make("AuxLabelWeighted-Digits-v1", **TINY).unwrapped
    env.reset(seed=0)
    seen = spy_weights(env)
    for b in (0, 10, 20, 4):
        env.step(np.array([0, b]))
    # bin b of 21 -> w = b / 20 -> 2^(10 w - 5): 2^-5, 2^0, 2^5, 2^-3.
    assert seen[0].tolist() == [1 / 32, 1.0, 32.0, 0.125]


def test_weighted_env_reads_its_own_weight_bins_and_exponent_range():
    env = gym.make(
        "AuxLabelWeighted-Digits-v1", weight_bins=5, weight_exponent_range=(-3, 5), **TINY
    ).unwrapped
    assert env.action_space == gym.spaces.MultiDiscrete([5, 5])
    env.reset(seed=0)
    seen = spy_weights(env)
    for b in (0, 1, 2, 4):
        env.step(np.array([1, b]))
    # bin b of 5 -> w = b / 4 -> 2^(-3 + 8 w): 2^-3, 2^-1, 2^1, 2^5 (the defaults would give
    # 2^-5, 2^-4.5, 2^-4, 2^-3).
    assert seen[0].tolist() == [0.125, 0.5, 2.0, 32.0]


# ---------------------------------------------------------------- epoch boundaries
def test_an_epoch_drops_the_shuffled_remainder():
    """50 images in batches of 20: 2 batches an epoch (floor), the last 10 left out."""
    env = gym.make("AuxLabel-Digits-v1", train_subset=50, train_batch_size=20, eval_batch_size=8)
    env = env.unwrapped
    assert env.learner.num_batches == 2
    env.reset(seed=0)
    steps, terminated = 0, False
    while not terminated:
        *_, terminated, truncated, info = env.step(0)
        steps += 1
        assert not truncated
    assert steps == 40 and info["batch"] == 1
    batches = env.learner.epoch_batches(torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [20, 20]
    assert len(set(torch.cat(batches).tolist())) == 40


# ---------------------------------------------------------------- restore semantics
def test_restore_batch_starts_train_main_from_the_canonical_epoch_and_schedule():
    """restore='batch': the agent's epoch ends on a copy of the canonical model (its end steps
    that copy's schedule); the next seedless reset must go back to the canonical model, so
    the train_main epoch starts at epoch 0 and the first learning rate."""
    env = gym.make(
        "AuxLabel-Digits-v1",
        restore="batch",
        train_subset=40,
        train_batch_size=20,
        eval_batch_size=8,
        scheduler_step_epochs=1,
    ).unwrapped
    env.reset(seed=0)
    lr = env.learner.lr
    terminated = False
    while not terminated:
        *_, terminated, _, _ = env.step(0)
    _, info = env.reset(options={"mode": "train_main"})
    assert info["epoch"] == 0 and env.learner.epoch == 0
    assert env.learner.lr == lr  # StepLR(1, 0.5) would have halved it once


def test_a_seeded_reset_starts_the_epoch_count_over():
    env = gym.make("AuxLabel-Digits-v1", train_subset=40, train_batch_size=20, eval_batch_size=8)
    env = env.unwrapped
    env.reset(seed=0, options={"mode": "train_main"})
    terminated = False
    while not terminated:
        *_, terminated, _, _ = env.step(0)
    assert env.learner.epoch == 1
    _, info = env.reset(seed=1, options={"mode": "train_main"})
    assert info["epoch"] == 0 and env.learner.epoch == 0


def test_learner_checkpoint_keeps_the_data_order_and_cursor_mid_epoch(digits):
    learner = make(digits, seed=3, train_batch_size=20)
    learner.begin_epoch()
    learner.advance()
    learner.advance()
    state = learner.state_dict()
    other = make(digits, seed=4, train_batch_size=20)
    other.begin_epoch()
    other.load_state_dict(state)
    assert other.position == 2
    assert torch.equal(other.current_indices, learner.current_indices)
    assert torch.equal(other.order, learner.order)
    # The data stream goes on where the checkpoint left it: the next epoch's order too.
    learner.begin_epoch()
    other.begin_epoch()
    assert torch.equal(other.order, learner.order)


# ---------------------------------------------------------------- seeds and the reward batch
def test_the_seed_sets_the_data_order(digits):
    a, b, c = make(digits, seed=3), make(digits, seed=3), make(digits, seed=4)
    for learner in (a, b, c):
        learner.begin_epoch()
    assert torch.equal(a.order, b.order)
    assert not torch.equal(a.order, c.order)


def test_each_reward_draws_a_fresh_eval_batch_from_the_runs_stream(digits):
    learner = make(digits, seed=0, eval_batch_size=32)
    copy = torch.Generator().manual_seed(0)
    copy.set_state(learner.generator.get_state())
    first, second = learner.sample_eval_indices(), learner.sample_eval_indices()
    assert not torch.equal(first, second)
    assert torch.equal(first, torch.randperm(1200, generator=copy)[:32])
    assert torch.equal(second, torch.randperm(1200, generator=copy)[:32])


def test_reward_loss_scores_unaugmented_images_and_draws_nothing(digits):
    """Eq. 4's loss on B_R training images is measured on the stored images even where the
    training batches are augmented (crop + flip drawn from the run's stream)."""
    learner = make(digits, seed=0, augment=True)
    idx = torch.arange(16)
    state = learner.generator.get_state()
    loss = learner.primary_loss(idx)
    assert torch.equal(learner.generator.get_state(), state)  # no augmentation drawn
    x = learner.normalize(learner.data.train.images[idx])
    learner.net.eval()
    with torch.no_grad():
        (logits,) = learner.net(x, heads=[0])
    assert float(loss) == pytest.approx(
        float(F.cross_entropy(logits, learner.data.train.labels[idx])), rel=1e-6
    )


def test_evaluate_loss_is_the_mean_over_the_split_in_any_chunking(digits):
    learner = make(digits, seed=0)
    val = learner.data.val  # 297 images: chunks of 100 leave a chunk of 97
    x = learner.normalize(val.images)
    learner.net.eval()
    with torch.no_grad():
        (logits,) = learner.net(x, heads=[0])
    expected = float(F.cross_entropy(logits, val.labels))
    assert learner.evaluate("val", batch_size=100)["loss"] == pytest.approx(expected, rel=1e-5)
    assert learner.evaluate("val")["loss"] == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- MAXL
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_maxl_generator_schedule_steps_once_per_epoch(digits):
    from baselines.maxl import MAXLLabeller

    learner = make(digits, seed=0, scheduler_step_epochs=1, scheduler_gamma=0.5)
    labeller = MAXLLabeller(learner, seed=0, lr=1e-3)
    labeller.end_epoch()
    assert labeller.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)
    labeller.end_epoch()
    assert labeller.optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-4)


def test_maxl_generator_pass_leaves_the_main_stream_alone():
    """The generator pass draws its order and augmentation from the labeller's own stream,
    so the main network's next epoch sees the data order of every other baseline, on an
    augmented dataset too."""
    from baselines.maxl import MAXLLabeller

    learner = small(augment=True, train_subset=40, train_batch_size=20)
    labeller = MAXLLabeller(learner, seed=0)
    state = learner.generator.get_state()
    labeller.generator_pass()
    assert torch.equal(learner.generator.get_state(), state)


def test_maxl_streams_replay_no_other_runs_stream(digits):
    """The generator of run s once started from seed s + 1: its backbone was run s + 1's
    main backbone to the last digit. Its initial weights and its pass's order now come from
    streams of their own (``sub_seed``), and the seed still sets them."""
    from baselines.maxl import MAXLLabeller

    def backbone(module):
        return torch.cat([p.flatten() for p in module.backbone.parameters()])

    def generator(seed):
        return backbone(MAXLLabeller(make(digits, seed=seed), seed=seed).generator.net)

    mains = [backbone(make(digits, seed=s).net) for s in range(3)]
    g0 = generator(0)
    assert all(not torch.equal(g0, m) for m in mains)
    assert torch.equal(g0, generator(0)) and not torch.equal(g0, generator(1))
    # The pass's order: not the main data order of any of these seeds.
    learner = make(digits, seed=0)
    orders = {tuple(make(digits, seed=s).shuffled_order()[:20].tolist()) for s in range(3)}
    rng = MAXLLabeller(learner, seed=0).rng
    assert tuple(learner.shuffled_order(rng)[:20].tolist()) not in orders


# ---------------------------------------------------------------- baselines
def test_random_labels_follow_the_seed_and_stay_in_each_block(digits):
    from baselines.random_labels import random_labeller

    learner = make(digits, seed=0)
    idx = torch.arange(len(learner.data.train))
    labels = learner.data.train.labels

    def classes(seed):
        targets, weights = random_labeller(learner, seed)(idx, None)
        assert weights is None and bool((targets.sum(1) == 1).all())
        return targets.argmax(1)

    a, b, c = classes(0), classes(0), classes(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Not drawn from run 1's main stream (it once used seed + 1, run 1's data-order seed).
    replay = torch.randint(0, 5, labels.shape, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a % 5, replay)
    assert torch.equal(a // 5, labels)  # sub-class psi * y + s: inside y's block
    # 1,200 uniform draws of 5 sub-classes use all 5 (each missed with prob. 0.8^1200).
    assert set((a % 5).tolist()) == set(range(5))


def test_aux_baseline_runner_ends_the_labellers_epoch_after_every_epoch(tmp_path, monkeypatch):
    """run_aux_baseline's on_epoch_end: MAXL's generator schedule steps once per epoch,
    after the main network's epoch (its schedule included) has ended."""
    from baselines.maxl import MAXLLabeller
    from harness.config import RunConfig
    from harness.registry import run_method

    ends = []
    end_epoch = MAXLLabeller.end_epoch
    monkeypatch.setattr(
        MAXLLabeller,
        "end_epoch",
        lambda self: (ends.append(self.learner.epoch), end_epoch(self)),
    )
    config = RunConfig(
        method="maxl",
        env_id="AuxLabel-Digits-v1",
        env_kwargs={"train_subset": 300},
        epochs=2,
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
    )
    run_method(config, "maxl", 0)
    assert ends == [1, 2]


# ---------------------------------------------------------------- episode end by max_batches
def test_a_cut_epochs_final_observation_is_the_batch_it_ended_on():
    """An episode truncated by max_batches ends like a terminated one: the final observation
    (and ``sample_indices``) show the batch just labelled, not the next batch of the epoch."""
    vec = gym.make_vec(
        "AuxLabel-Digits-v1", 4, vectorization_mode="vector_entry_point", max_batches=1, **TINY
    )
    obs, _ = vec.reset(seed=0)
    indices = vec.unwrapped.sample_indices().copy()
    _, _, terms, truncs, infos = vec.step(np.zeros(4, dtype=np.int64))
    assert truncs.all() and not terms.any()
    final = infos["final_obs"]
    np.testing.assert_array_equal(np.stack([o["image"] for o in final]), obs["image"])
    np.testing.assert_array_equal([o["primary_label"] for o in final], obs["primary_label"])
    held = gym.make_vec(
        "AuxLabel-Digits-v1",
        4,
        vectorization_mode="vector_entry_point",
        autoreset_mode="Disabled",
        max_batches=1,
        **TINY,
    )
    obs, _ = held.reset(seed=0)
    indices = held.unwrapped.sample_indices().copy()
    after, _, _, truncs, _ = held.step(np.zeros(4, dtype=np.int64))
    assert truncs.all()
    np.testing.assert_array_equal(held.unwrapped.sample_indices(), indices)
    np.testing.assert_array_equal(after["image"], obs["image"])


def test_train_epoch_reports_the_mean_of_its_batches_losses():
    learner = small(train_subset=60, train_batch_size=20)
    losses = []
    train_batch = learner.train_batch

    def spy(*args, **kwargs):
        out = train_batch(*args, **kwargs)
        losses.append(float(out["loss"]))
        return out

    learner.train_batch = spy
    metrics = learner.train_epoch(None)
    assert len(losses) == 3
    assert metrics["train/loss"] == pytest.approx(sum(losses) / 3, rel=1e-6)


# ---------------------------------------------------------------- seeding of the first reset
def test_a_first_reset_without_a_seed_starts_a_fresh_run():
    """Gymnasium: an unseeded first reset draws its randomness afresh; two envs reset so do
    not share the network and data order the constructor built from seed 0."""
    runs = []
    for _ in range(2):
        env = gym.make("AuxLabel-Digits-v1", **TINY).unwrapped
        env.reset()
        runs.append((next(env.learner.net.parameters()).detach().clone(), env.learner.order))
    assert not torch.equal(runs[0][0], runs[1][0])
    assert not torch.equal(runs[0][1], runs[1][1])


# ---------------------------------------------------------------- MAXL labelling mode
def test_maxl_labels_with_the_generator_in_training_mode(digits):
    """As in the MAXL reference, the generator labels a batch in training mode: batch-norm
    on the batch's own statistics, not on its (still initial) running ones."""
    from baselines.maxl import MAXLLabeller

    learner = make(digits, seed=0)
    labeller = MAXLLabeller(learner, seed=0)
    idx = torch.arange(16)
    x, y = learner.batch_inputs(idx), learner.data.train.labels[idx]
    labeller.generator.eval()  # whatever mode an evaluation left it in
    targets, _ = labeller(idx, x)
    assert labeller.generator.training
    with torch.no_grad():
        expected, _ = labeller.generator(x, y)
        labeller.generator.eval()
        in_eval, _ = labeller.generator(x, y)
    torch.testing.assert_close(targets, expected)
    assert not torch.allclose(targets, in_eval)


# ---------------------------------------------------------------- checkpoints
def test_maxl_checkpoint_carries_the_generator_pass_stream():
    """A resumed MAXL labeller draws its next generator pass's order and augmentation where
    the interrupted one would have."""
    from baselines.maxl import MAXLLabeller

    learner = small(train_subset=40, train_batch_size=20)
    a = MAXLLabeller(learner, seed=0)
    torch.randperm(40, generator=a.rng)  # the stream has moved on (one pass's order)
    b = MAXLLabeller(learner, seed=1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(torch.randperm(40, generator=a.rng), torch.randperm(40, generator=b.rng))


def test_alternating_state_restores_the_canonical_main_network():
    """The PPO protocol's checkpoint: a resumed run's next agent epoch starts from the
    canonical network the interrupted run had made, not from the one its fresh env built."""
    from types import SimpleNamespace

    from agents.ppo_auxlabel import AlternatingState

    class Agent:  # the few members AlternatingState reads of SB3's PPO
        num_timesteps, _n_updates, device = 0, 0, "cpu"

        def get_parameters(self):
            return {}

        def set_parameters(self, *args, **kwargs):
            pass

        def get_env(self):
            return SimpleNamespace(_reset_seeds=lambda: None)

    def vector(seed):
        env = gym.make_vec(
            "AuxLabel-Digits-v1",
            20,
            vectorization_mode="vector_entry_point",
            train_subset=40,
            train_batch_size=20,
            eval_batch_size=8,
        ).unwrapped
        env.reset(seed=seed, options={"mode": "train_main"})
        return env

    first = vector(0)
    for _ in range(2):  # one train_main epoch: its network becomes canonical
        first.step(np.zeros(20, dtype=np.int64))
    canonical = [v.clone() for v in first.task.canonical["net"].values()]
    state = AlternatingState(Agent(), first).state_dict()
    resumed = vector(1)
    AlternatingState(Agent(), resumed).load_state_dict(state)
    resumed.reset(options={"mode": "train_agent"})
    for a, b in zip(canonical, resumed.learner.net.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_each_ppo_cycle_is_an_agent_epoch_then_a_main_epoch(tmp_path, monkeypatch):
    """RL-AUX appendix B: every cycle trains the agent for one epoch (train_agent mode, from
    the canonical network) and then the main network for one (train_main), in this order."""
    from agents.ppo_auxlabel import run
    from harness.config import RunConfig
    from mtl_envs.envs.aux_label import AuxLabelTask

    modes = []
    apply = AuxLabelTask.apply
    monkeypatch.setattr(
        AuxLabelTask,
        "apply",
        lambda self, actions: (modes.append(self.mode), apply(self, actions))[1],
    )
    config = RunConfig(
        method="ppo",
        env_id="AuxLabel-Digits-v1",
        env_kwargs={"train_batch_size": 50, "train_subset": 300, "backbone": "mlp"},
        epochs=2,
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
        agent={"n_epochs": 1, "batch_size": 50, "device": "cpu"},
        policy={"image_features": 8},
    )
    run(config, seed=0)
    cycle = ["train_agent"] * 6 + ["train_main"] * 6  # 300 images in batches of 50
    assert modes == cycle * 2


# ---------------------------------------------------------------- input the env must refuse
def test_a_reward_batch_larger_than_the_training_split_is_refused():
    """B_R = 64 distinct images of a 40-image split once shrank silently to 40; the same
    case for B_T was already refused. The 'val' reward reads no B_R, so its default stands."""
    with pytest.raises(ConfigError, match=r"`eval_batch_size` \(64\) exceeds .*40 images"):
        gym.make("AuxLabel-Digits-v1", train_subset=40, train_batch_size=20, eval_batch_size=64)
    gym.make("AuxLabel-Digits-v1", train_subset=40, train_batch_size=20, eval_batch_size=40)
    gym.make("AuxLabel-Digits-v1", train_subset=40, train_batch_size=20, reward="val")
    with pytest.raises(ConfigError, match=r"`eval_batch_size` \(256\)"):
        small(train_subset=40, train_batch_size=20).sample_eval_indices()


@pytest.mark.parametrize(
    "kwargs", [{"weight_bins": 7}, {"weight_exponent_range": (-1, 1)}], ids=["bins", "range"]
)
def test_weight_settings_on_an_unweighted_id_are_refused(kwargs):
    """An unweighted id's actions are labels alone: a weight setting there would change
    nothing. The defaults, in any spelling, stay valid."""
    (name,) = kwargs
    with pytest.raises(ConfigError, match=rf"`{name}` .*AuxLabelWeighted id"):
        gym.make("AuxLabel-Digits-v1", **TINY, **kwargs)
    gym.make("AuxLabel-Digits-v1", weight_bins=21, weight_exponent_range=[-5, 5], **TINY)
    gym.make("AuxLabelWeighted-Digits-v1", **TINY, **kwargs)


@pytest.mark.parametrize("vector", [False, True], ids=["single", "vector"])
def test_a_reset_mode_of_none_is_refused_not_read_as_no_mode(vector):
    """``options={"mode": None}`` once kept the previous mode without a word."""
    env = (
        gym.make_vec("AuxLabel-Digits-v1", num_envs=4, **TINY)
        if vector
        else gym.make("AuxLabel-Digits-v1", **TINY).unwrapped
    )
    env.reset(seed=0, options={"mode": "train_main"})
    with pytest.raises(ConfigError, match=r"`options\['mode'\]` must be one of .*got None"):
        env.reset(options={"mode": None})
    _, info = env.reset()  # no options: the mode stays
    assert np.all(info["mode"] == "train_main")


def test_bools_inside_an_action_are_refused():
    """``np.asarray([True, 3])`` is ``[1, 3]``: a bool once passed as label 1."""
    weighted = gym.make("AuxLabelWeighted-Digits-v1", **TINY).unwrapped
    weighted.reset(seed=0)
    for bad in ([True, 3], (1, np.True_), np.array([True, 3], dtype=object)):
        with pytest.raises(ConfigError, match="outside the action space"):
            weighted.step(bad)
    weighted.step([1, 3])
    vector = gym.make_vec("AuxLabel-Digits-v1", num_envs=4, **TINY)
    vector.reset(seed=0)
    with pytest.raises(ConfigError, match=r"got bools in \[1, True, 0, 2\]"):
        vector.step([1, True, 0, 2])
    vector.step([1, 1, 0, 2])


@pytest.mark.parametrize("vector", [False, True], ids=["single", "vector"])
def test_a_refused_reset_changes_nothing(vector):
    """A reset refused for its mode once still used up the fresh run that a first reset
    owes: the next reset continued the constructor's network."""
    env = (
        gym.make_vec("AuxLabel-Digits-v1", num_envs=4, **TINY)
        if vector
        else gym.make("AuxLabel-Digits-v1", **TINY).unwrapped
    )
    built = [p.detach().clone() for p in env.learner.net.parameters()]
    with pytest.raises(ConfigError, match="options\\['mode'\\]"):
        env.reset(options={"mode": "train"})
    env.reset()  # the first reset without a seed starts a fresh run from the env's generator
    fresh = list(env.learner.net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(built, fresh))
