"""The loss-weighting family case by case (LossWeighting env, MultiTaskLearner, the weighting
baselines, IGBv2's SAC): episode ends, resumed runs, the action's temperature, the objectives
the baselines train on, weighted updates through an aggregator, and input that must be
refused. Numbers are worked by hand where a formula is checked."""

import math
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

import mtl_envs  # noqa: F401  (registers the ids)
from mtl_envs.errors import ConfigError
from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig

FAST = {"warmup_epochs": 1, "epochs": 3}


def zeros(n: int = 10) -> np.ndarray:
    return np.zeros(n, dtype=np.float32)


# ---------------------------------------------------------------- episode ends
def test_max_steps_at_the_runs_length_ends_it_by_termination_alone():
    """The run's last batch terminates the episode; a ``max_steps`` that falls on the same
    step adds no truncation (Gymnasium: a terminal state is not cut short)."""
    probe = gym.make("LossWeighting-Digits10-v1", **FAST).unwrapped
    steps = (FAST["epochs"] - FAST["warmup_epochs"]) * probe.learner.num_batches
    env = gym.make("LossWeighting-Digits10-v1", max_steps=steps, **FAST).unwrapped
    env.reset(seed=0)
    for t in range(steps):
        _, _, terminated, truncated, _ = env.step(zeros())
        assert terminated == (t == steps - 1) and not truncated


def test_a_seeded_reset_after_continue_run_starts_a_fresh_run():
    """Only a seedless reset continues a loaded run; a seeded one warms a new run up."""
    env = gym.make("LossWeighting-Digits10-v1", **FAST).unwrapped
    env.reset(seed=0)
    for _ in range(2):
        env.step(zeros())
    env.load_state_dict(env.state_dict())
    env.continue_run()
    _, info = env.reset(seed=1)
    assert env.steps == 0 and env.learner.position == 0
    assert info["epoch"] == FAST["warmup_epochs"]


# ---------------------------------------------------------------- action and temperature
def test_random_weight_actions_give_rlw_weights_at_any_temperature():
    """An action is tanh(z / tau) of logits z; its weights are n softmax(z). At tau = 2 the
    random action of standard normal logits gives RLW's weights, and logits (ln 3, 0, ...,
    0) give task 0 the weight 10 * 3 / (3 + 9) = 2.5."""
    env = gym.make("LossWeighting-Digits10-v1", temperature=2.0, **FAST).unwrapped
    action = env.random_weight_action(np.random.default_rng(3))
    z = np.random.default_rng(3).standard_normal(10)
    expected = 10 * np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(env.action_to_weights(action).numpy(), expected, rtol=1e-4)
    logits = np.array([math.log(3.0)] + [0.0] * 9)
    weights = env.action_to_weights(env.logits_to_action(logits))
    assert float(weights[0]) == pytest.approx(2.5, rel=1e-4)


# ---------------------------------------------------------------- baselines' objectives
@pytest.mark.parametrize("module", ["rlw", "dwa"])
def test_the_si_baselines_train_on_the_log_objective(module, monkeypatch):
    """``rlw_si`` and ``dwa_si`` (IGB Table 4) weight IGB eq. 2's log losses; the plain ones
    weight the losses themselves."""
    import importlib

    baseline = importlib.import_module(f"baselines.{module}")
    rules = {}

    def capture(config, seed, method, make_rule, *args, **kwargs):
        rules[method] = make_rule()

    monkeypatch.setattr(baseline, "run_weighting_baseline", capture)
    baseline.run(None, 0)
    baseline.run_si(None, 0)
    assert rules[module].loss_mode == "sum" and rules[f"{module}_si"].loss_mode == "log"


# ---------------------------------------------------------------- IGBv2's SAC
def test_scheduled_sac_acts_randomly_until_its_first_update():
    """Before its first round of updates the agent's untrained policy must not act, even
    with no random phase of its own: the action comes from ``random_action``, rescaled
    into [-1, 1] for the buffer (Pendulum's box is [-2, 2])."""
    from agents.sac_lossweighting import ScheduledSAC

    model = ScheduledSAC(
        "MlpPolicy",
        "Pendulum-v1",
        first_round=10,
        random_steps=0,
        random_action=lambda rng: np.array([0.5]),
        seed=0,
        device="cpu",
    )
    action, buffer_action = model._sample_action(model.learning_starts)
    np.testing.assert_allclose(action, [[0.5]])
    np.testing.assert_allclose(buffer_action, [[0.25]])


# ---------------------------------------------------------------- input that is refused
@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_max_steps_must_be_a_positive_int(bad):
    with pytest.raises(ConfigError, match="max_steps"):
        gym.make("LossWeighting-Digits10-v1", max_steps=bad, **FAST)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"momentum": 0.5}, r"`momentum` \(0.5\) is SGD's, and `optimizer` is 'adam'"),
        ({"model": "hard_sharing", "head_hidden": 7}, r"`head_hidden` \(7\) sizes the heads"),
        ({"scheduler_gamma": 5.0}, r"`scheduler_gamma` must be in \(0, 1\]"),
    ],
    ids=["momentum-with-adam", "head-hidden-with-a-task-network", "growing-rate"],
)
def test_settings_the_run_would_ignore_or_misread_are_refused(kwargs, match):
    """Each was accepted: momentum and head widths that nothing reads, and a schedule that
    grows the rate, under which IGB eq. 4's lr_0 / lr_t falls below 1."""
    with pytest.raises(ConfigError, match=match):
        MultiTaskLearnerConfig(dataset="cubic", **kwargs)
    MultiTaskLearnerConfig(dataset="cubic", optimizer="sgd", momentum=0.5, scheduler_gamma=1.0)


def test_the_vector_forms_evaluate_names_a_slot():
    envs = gym.make_vec(
        "LossWeighting-Cubic-v1", 2, vectorization_mode="vector_entry_point", **FAST
    )
    envs.reset(seed=0)
    for bad in (-1, 2, True, 0.0):
        with pytest.raises(ConfigError, match=r"`index` must be a slot, an int in \[0, 2\)"):
            envs.unwrapped.evaluate("test", bad)
    assert "mean_nmse" in envs.unwrapped.evaluate("test", 1)


@pytest.mark.parametrize("batching", ["balanced", "uniform"])
def test_a_batch_larger_than_the_training_split_is_refused(batching):
    """Cubic's split holds 140 training samples: a batch of 10^6 once became, balanced, one
    batch of 50,000 repeats per task and, uniform, a batch of the 140."""
    cfg = MultiTaskLearnerConfig(dataset="cubic", model="hard_sharing", batch_size=10**6)
    with pytest.raises(ConfigError, match=r"`batch_size` \(1000000\) exceeds .*140 samples"):
        MultiTaskLearner(replace(cfg, batching=batching, device="cpu"))
