"""SB3 adapter, feature extractor and a short PPO run of the alternating protocol."""

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import mtl_envs  # noqa: F401
from agents.ppo_auxlabel import action_metrics, default_n_steps, rollout_settings, run
from agents.sb3_vec_env import SB3VecEnvAdapter
from harness.config import RunConfig
from mtl_envs.errors import ConfigError


def make_adapter(**kwargs):
    vec = gym.make_vec(
        "AuxLabel-Digits-v1",
        num_envs=20,
        vectorization_mode="vector_entry_point",
        train_batch_size=20,
        **kwargs,
    )
    return SB3VecEnvAdapter(vec)


def test_adapter_speaks_sb3():
    venv = make_adapter(max_batches=2)
    resets = []  # what each reset of the adapter hands the vector env
    reset = venv.env.reset
    venv.env.reset = lambda **kwargs: resets.append(kwargs) or reset(**kwargs)
    venv.seed(3)
    obs = venv.reset()
    assert obs["image"].shape == (20, 1, 8, 8) and obs["primary_label"].shape == (20,)
    obs, rewards, dones, infos = venv.step(np.zeros(20, dtype=np.int64))
    assert rewards.dtype == np.float32 and not dones.any() and len(infos) == 20
    obs, rewards, dones, infos = venv.step(np.zeros(20, dtype=np.int64))
    assert dones.all()
    assert infos[0]["TimeLimit.truncated"] is True  # max_batches is a budget: truncation
    assert infos[0]["terminal_observation"]["image"].shape == (1, 8, 8)
    assert venv.get_attr("num_envs") == [20] * 20
    # SB3 semantics: a seed and options apply to the next reset only.
    venv.set_options({"mode": "train_main"})
    venv.reset()
    venv.reset()
    assert resets == [
        {"seed": 3, "options": None},
        {"seed": None, "options": {"mode": "train_main"}},
        {"seed": None, "options": None},
    ]


def test_adapter_rejects_next_step_autoreset():
    sync = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnvAdapter(sync)


def test_action_metrics_on_hand_worked_weights():
    vec = gym.make_vec(
        "AuxLabelWeighted-Digits-v1",
        num_envs=20,
        vectorization_mode="vector_entry_point",
        train_batch_size=20,
    )
    # Bins 0, 20, 10, 20 of 21 on 2^(10 w - 5) (RL-AUX eq. 8): 1/32, 32, 1, 32.
    actions = np.array([[0, 0], [1, 20], [1, 10], [0, 20]])
    metrics = action_metrics(vec.unwrapped, actions)
    assert metrics["agent/label_classes_used"] == 2.0
    assert metrics["agent/mean_weight"] == pytest.approx((1 / 32 + 32 + 1 + 32) / 4)
    assert metrics["agent/share_weight_above_1"] == 0.5
    vec.close()


def test_default_rollout_is_the_largest_divisor_up_to_ten():
    assert [default_n_steps(b) for b in (12, 50, 450, 13, 1)] == [6, 10, 10, 1, 1]
    assert rollout_settings({}, 12)["n_steps"] == 6
    assert rollout_settings({"n_steps": 3}, 12)["n_steps"] == 3
    assert rollout_settings({"n_steps": 12}, 12)["n_steps"] == 12  # a whole epoch
    agent = {"n_epochs": 2}
    assert rollout_settings(agent, 12) == {"n_epochs": 2, "n_steps": 6}
    assert agent == {"n_epochs": 2}  # the caller's settings (a run config's) stay as given


def test_rollouts_that_lose_the_reward_or_spill_over_are_refused():
    with pytest.raises(ConfigError, match=r"`agent.n_steps` \(1\).*normalize_advantage: false"):
        rollout_settings({"n_steps": 1}, 12)
    with pytest.raises(ConfigError, match=r"`agent.n_steps` \(1\)"):
        rollout_settings({}, 13)  # a prime number of batches leaves only n_steps=1
    assert rollout_settings({"n_steps": 1, "normalize_advantage": False}, 12)["n_steps"] == 1
    with pytest.raises(ConfigError, match=r"\(5\) must divide the 12 .* \[1, 2, 3, 4, 6, 12\]"):
        rollout_settings({"n_steps": 5}, 12)


class Built(Exception):
    """Raised by a patched ``_setup_model``: the algorithm's settings are set, nothing built."""


def settings_given_to(algorithm, monkeypatch, run, config, seed):
    """The SB3 algorithm object that ``run(config, seed)`` constructs, stopped before it
    builds its networks (its constructor has stored every setting by then)."""
    built = []

    def stop(self):
        built.append(self)
        raise Built

    monkeypatch.setattr(algorithm, "_setup_model", stop)
    with pytest.raises(Built):
        run(config, seed=seed)
    (model,) = built
    return model


def test_ppo_run_hands_its_settings_to_sb3(tmp_path, monkeypatch):
    from stable_baselines3 import PPO

    from agents.extractors import ImageLabelExtractor

    config = RunConfig(
        method="ppo",
        env_id="AuxLabelWeighted-Digits-v1",
        env_kwargs={"train_batch_size": 50, "train_subset": 300, "backbone": "mlp"},
        output_dir=str(tmp_path),
        progress=False,
        agent={"n_epochs": 2, "batch_size": 50, "gamma": 0.9, "device": "cpu"},
        policy={"image_features": 32},
    )
    model = settings_given_to(PPO, monkeypatch, run, config, seed=7)
    assert model.seed == 7 and str(model.device) == "cpu"
    # The config's values over the defaults of RL-AUX appendix B (lr 3e-4, entropy 0.01);
    # n_steps: 300 images in batches of 50 are 6 batches, all of them one rollout.
    assert (model.n_epochs, model.batch_size, model.gamma, model.n_steps) == (2, 50, 0.9, 6)
    assert (model.learning_rate, model.ent_coef) == (3e-4, 0.01)
    assert model.policy_kwargs == {
        "features_extractor_class": ImageLabelExtractor,
        "features_extractor_kwargs": {
            "backbone": "mlp",
            "backbone_kwargs": {},
            "image_features": 32,
        },
        "net_arch": [],
    }


def policy_after_one_update(n_steps: int, offsets: list[float]) -> np.ndarray:
    """The policy's parameters after one rollout of ``n_steps`` batches and one PPO update,
    with ``offsets[t]`` added to every slot's reward at step t (vf_coef 0, so only the
    policy loss moves the weights)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecEnvWrapper

    from agents.extractors import ImageLabelExtractor

    class ShiftRewards(VecEnvWrapper):
        def reset(self):
            self.t = 0
            return self.venv.reset()

        def step_wait(self):
            obs, rewards, dones, infos = self.venv.step_wait()
            rewards = rewards + offsets[self.t]
            self.t += 1
            return obs, rewards, dones, infos

    torch.manual_seed(0)
    model = PPO(
        "MultiInputPolicy",
        ShiftRewards(make_adapter(max_batches=n_steps, backbone="mlp")),
        n_steps=n_steps,
        batch_size=20 * n_steps,
        n_epochs=2,
        learning_rate=1e-2,
        vf_coef=0.0,
        seed=0,
        policy_kwargs={
            "features_extractor_class": ImageLabelExtractor,
            "features_extractor_kwargs": {"backbone": "mlp", "image_features": 16},
            "net_arch": [],
        },
    )
    model.learn(20 * n_steps)
    return torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach().numpy()


def test_the_ppo_update_sees_the_reward_only_across_batches():
    """Every slot of a batch shares its reward; SB3's per-minibatch advantage normalisation
    removes it from a one-batch rollout (why n_steps=1 is refused) and keeps the difference
    between the batches of a longer one."""
    one = policy_after_one_update(1, [0.0])
    assert np.abs(policy_after_one_update(1, [5.0]) - one).max() < 1e-4
    two = policy_after_one_update(2, [0.0, 0.0])
    assert np.abs(policy_after_one_update(2, [5.0, 0.0]) - two).max() > 1e-2


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ppo_smoke_run_writes_result(tmp_path):
    config = RunConfig(
        method="ppo",
        env_id="AuxLabelWeighted-Digits-v1",
        env_kwargs={
            "train_batch_size": 50,
            "train_subset": 300,
            "backbone": "mlp",
            "lr": 0.04,
            "scheduler_step_epochs": 1,  # halves the rate after each main epoch
        },
        epochs=2,
        seeds=[0],
        output_dir=str(tmp_path),
        progress=False,
        agent={"n_epochs": 2, "batch_size": 50},
        policy={"image_features": 32},  # the agent's backbone mirrors the main network's
    )
    result = run(config, seed=0)  # 2 cycles x 6 batches x 50 slots = 600 agent steps
    path = tmp_path / "AuxLabelWeighted-Digits-v1" / "ppo" / "seed0"
    saved = json.loads((path / "result.json").read_text())
    assert saved["method"] == "ppo" and saved["seed"] == 0 and len(saved["epochs"]) == 2
    assert 0.0 <= saved["final"]["test/accuracy"] <= 1.0
    assert "agent/reward" in saved["epochs"][0] and saved["epochs"][0]["agent/reward"] < 0
    assert 1 / 32 <= saved["epochs"][0]["agent/mean_weight"] <= 32
    # Each cycle records the rate its epochs trained at (the schedule steps after them).
    assert [e["train/lr"] for e in saved["epochs"]] == [0.04, 0.02]
    assert saved["config"]["env_kwargs"]["train_subset"] == 300
    assert saved["policy"] == {"backbone": "mlp", "backbone_kwargs": {}, "image_features": 32}
    assert (path / "agent.zip").is_file() and (path / "main_net.pt").is_file()
    assert any((path / "tb").iterdir())
    assert result["final"] == saved["final"]
    # The agent's settings as resolved: the defaults under the config's, n_steps = the 6
    # batches of 50 of an epoch on 300 images.
    assert saved["agent"] == {
        "learning_rate": 3e-4,
        "ent_coef": 0.01,
        "n_epochs": 2,
        "batch_size": 50,
        "gamma": 0.99,
        "n_steps": 6,
    }
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2]
    assert {"agent/label_classes_used", "agent/share_weight_above_1"} <= set(saved["epochs"][0])
    # The saved agent's deterministic actions on every training image.
    out = tmp_path / "actions.json"
    script = Path(__file__).resolve().parents[1] / "scripts" / "auxlabel_agent_actions.py"
    subprocess.run([sys.executable, str(script), str(path), "--out", str(out)], check=True)
    (actions,) = json.loads(out.read_text())["runs"]
    assert actions["images"] == 300 and actions["label_classes"] == 5
    assert 1 <= actions["label_classes_used"] <= 5 and 0.2 <= actions["top_label_share"] <= 1
    assert 1 / 32 <= actions["mean_weight"] <= 32 and sum(actions["bin_shares"]) == pytest.approx(1)
    # 21 bins of 2^(b/2 - 5): (2^-5 / 21) (2^10.5 - 1) / (2^0.5 - 1) = 5.199
    assert actions["random_policy_mean_weight"] == pytest.approx(5.199, abs=1e-3)


def test_custom_agent_runs(capsys, monkeypatch):
    from agents.custom_agent import main

    made, calls = [], []
    make_vec = gym.make_vec

    def recording(*args, **kwargs):
        envs = make_vec(*args, **kwargs)
        made.append(kwargs)
        reset, evaluate = envs.reset, envs.unwrapped.evaluate
        envs.reset = lambda **kw: calls.append(("reset", kw)) or reset(**kw)
        envs.unwrapped.evaluate = lambda split: calls.append(("evaluate", split)) or evaluate(split)
        return envs

    monkeypatch.setattr(gym, "make_vec", recording)
    metrics = main(["--epochs", "1", "--batch-size", "100", "--seed", "3"])
    assert 0.0 <= metrics["accuracy"] <= 1.0
    out = capsys.readouterr().out
    assert "epoch 1: val accuracy" in out and "final network: test accuracy" in out
    assert out.count("val accuracy") == 1  # one epoch, one line
    (kwargs,) = made
    assert kwargs["num_envs"] == kwargs["train_batch_size"] == 100
    # The seeded reset, one train-agent and one train-main epoch, validation after it and
    # the test split once at the end.
    assert calls == [
        ("reset", {"seed": 3}),
        ("reset", {"options": {"mode": "train_agent"}}),
        ("reset", {"options": {"mode": "train_main"}}),
        ("evaluate", "val"),
        ("evaluate", "test"),
    ]


def test_igbv2_schedule_steps():
    from agents.sac_lossweighting import schedule_steps

    # Env steps start in epoch 3 (after 2 warm-up epochs): SAC learns from epoch 4, i.e.
    # after 1 epoch of steps, and acts from epoch 6, after 3 epochs of steps.
    assert schedule_steps(4, 6, warmup_epochs=2, batches=12) == (12, 36)
    # One warm-up epoch of 10 batches: epoch 4 starts after 2 epochs of steps, 6 after 4.
    assert schedule_steps(4, 6, warmup_epochs=1, batches=10) == (20, 40)
    # Epochs at or before the first env step: from the start, never a negative count.
    assert schedule_steps(1, 3, warmup_epochs=2, batches=12) == (0, 0)


def test_igbv2_learning_rate_follows_the_aggregator():
    from agents.sac_lossweighting import sac_defaults

    # IGB section 4.1: 1e-4 with MGDA, PCGrad or Nash-MTL, 3e-4 alone or with other aggregators.
    for aggregator in ("mgda", "pcgrad", "nash_mtl"):
        assert sac_defaults(aggregator)["learning_rate"] == 1e-4
    for aggregator in (None, "cagrad", "imtl_g", "upgrad"):
        assert sac_defaults(aggregator)["learning_rate"] == 3e-4
    assert sac_defaults("pcgrad")["buffer_size"] == 10_000
    # The rest of section 4.1: discount 0.99, a round of updates every 50 batches.
    defaults = sac_defaults(None)
    assert defaults["gamma"] == 0.99 and tuple(defaults["train_freq"]) == (50, "step")


@pytest.mark.parametrize(
    ("aggregator", "agent", "learning_rate"),
    [(None, {}, 3e-4), ("pcgrad", {}, 1e-4), ("pcgrad", {"learning_rate": 5e-4}, 5e-4)],
)
def test_igbv2_run_hands_its_settings_to_sb3(
    tmp_path, monkeypatch, aggregator, agent, learning_rate
):
    """The run's env aggregator picks SAC's learning rate (IGB section 4.1) unless the config
    sets one; the seed, the schedule and the other settings reach SAC too."""
    from agents.sac_lossweighting import ScheduledSAC
    from agents.sac_lossweighting import run as run_igbv2

    config = RunConfig(
        method="igbv2",
        env_id="LossWeighting-CubicScales-v1",
        env_kwargs={} if aggregator is None else {"aggregator": aggregator},
        epochs=6,
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
        agent={**agent, "batch_size": 8, "device": "cpu"},
    )
    model = settings_given_to(ScheduledSAC, monkeypatch, run_igbv2, config, seed=7)
    assert model.learning_rate == learning_rate and model.seed == 7
    assert (model.batch_size, model.buffer_size, model.gamma) == (8, 10_000, 0.99)
    assert (model.gradient_steps, model.round_scaling) == (50, "buffer")
    assert model.policy_kwargs["net_arch"] == [128, 128]  # SB3 adds use_sde to the rest
    # CubicScales: 12 batches an epoch after 2 warm-up epochs; SAC updates from epoch 4 (after
    # 12 env steps: SB3 starts once more than 11 are stored) and acts from epoch 6 (after 36).
    assert (model.learning_starts, model.random_steps) == (11, 36)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_igbv2_smoke_run(tmp_path):
    from agents.sac_lossweighting import SAC_DEFAULTS, sac_defaults
    from agents.sac_lossweighting import run as run_igbv2

    config = RunConfig(
        method="igbv2",
        env_id="LossWeighting-Digits10-v1",
        env_kwargs={"warmup_epochs": 1, "lr": 0.002, "scheduler_step_epochs": 1},
        epochs=3,
        seeds=[0],
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
        method_kwargs={"update_epoch": 2, "use_epoch": 3},
        agent={
            "gradient_steps": 2,
            "train_freq": [6, "step"],
            "batch_size": 8,
            "policy_kwargs": {"net_arch": [16]},
        },
    )
    defaults = sac_defaults(None)
    result = run_igbv2(config, seed=0)
    # SB3 adds use_sde to the policy_kwargs it is given: neither the defaults, the config
    # nor the settings a resume compares (in another process) may change with it.
    assert sac_defaults(None) == defaults and SAC_DEFAULTS["policy_kwargs"] == {
        "net_arch": [128, 128]
    }
    assert config.agent["policy_kwargs"] == {"net_arch": [16]}
    assert result["agent"]["policy_kwargs"] == {"net_arch": [16]}
    assert [e["epoch"] for e in result["epochs"]] == [2, 3]
    # The rate each epoch trained at: halved after every epoch, the warm-up's included.
    assert [e["train/lr"] for e in result["epochs"]] == [0.001, 0.0005]
    assert 0.5 < result["final"]["test/mean_accuracy"] <= 1.0
    assert result["train_time_s"] > 0 and result["schedule"] == {"update_epoch": 2, "use_epoch": 3}


def test_igbv2_round_scale_hand_worked():
    from agents.sac_lossweighting import (
        round_scale,
        run_gradient_steps,
        scaled_round,
        update_rounds,
    )

    # k = 1 + filled / capacity; a round is int(steps * k / 2) steps of int(batch * k / 2).
    assert round_scale(0, 10_000) == 0.5
    assert scaled_round(50, 256, 0, 10_000) == (25, 128)
    assert scaled_round(50, 256, 2_500, 10_000) == (31, 160)  # k / 2 = 0.625
    assert scaled_round(50, 256, 10_000, 10_000) == (50, 256)
    assert scaled_round(50, 256, 99_999, 10_000) == (50, 256)  # a full buffer stays full
    assert scaled_round(50, 256, 2_500, 10_000, "none") == (50, 256)
    assert scaled_round(1, 1, 0, 10_000) == (1, 1)  # never an empty round
    # The first round after 20 stored, then every 16 steps, none at the run's last step (100
    # is not reached): t = 20, 36, 52, 68, 84 with capacity 64 -> k / 2 = 0.656, 0.781,
    # 0.906, 1, 1 -> int(8 k / 2) = 5 + 6 + 7 + 8 + 8.
    assert list(update_rounds(100, 20, 16)) == [20, 36, 52, 68, 84]
    assert run_gradient_steps(100, 20, 16, 8, 64) == 34
    assert run_gradient_steps(100, 20, 16, 8, 64, "none") == 40
    assert list(update_rounds(50, 0, 16)) == [16, 32, 48]  # from the first step: SB3's count
    with pytest.raises(ConfigError, match=r"round_scaling.*\['buffer', 'none'\].*'fill'"):
        round_scale(0, 10, "fill")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_igbv2_rounds_grow_with_the_buffer(tmp_path, monkeypatch):
    """The rounds a real run makes are the ones :func:`run_gradient_steps` counts."""
    from stable_baselines3 import SAC

    from agents.sac_lossweighting import run as run_igbv2
    from agents.sac_lossweighting import run_gradient_steps

    rounds = []
    train = SAC.train

    def record(self, gradient_steps, batch_size=64):
        rounds.append((gradient_steps, batch_size))
        return train(self, gradient_steps, batch_size)

    monkeypatch.setattr(SAC, "train", record)
    config = RunConfig(
        method="igbv2",
        env_id="LossWeighting-Digits10-v1",
        env_kwargs={"warmup_epochs": 1},
        epochs=3,  # 2 epochs of 12 env steps
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
        method_kwargs={"update_epoch": 2, "use_epoch": 3},  # learns from the first step
        agent={"gradient_steps": 4, "train_freq": [4, "step"], "batch_size": 8, "buffer_size": 16},
    )
    run_igbv2(config, seed=0)
    # After 4, 8, 12, 16 and 20 of 16 stored: k / 2 = 0.625, 0.75, 0.875, 1, 1.
    assert rounds == [(2, 5), (3, 6), (3, 7), (4, 8), (4, 8)]
    assert sum(s for s, _ in rounds) == run_gradient_steps(24, 0, 4, 4, 16)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_igbv2s_first_round_comes_at_update_epoch_before_sac_acts(tmp_path, monkeypatch):
    """Algorithm 2: SAC trains from update_e (4) and acts from use_e (6). CubicScales has 12
    batches an epoch and the env steps start in epoch 3, so the rounds come after steps 12
    (the end of epoch 3) and 62 of the run's 84 (SB3's own count: 50 only, after SAC began
    acting at step 36)."""
    from stable_baselines3 import SAC

    from agents.sac_lossweighting import run as run_igbv2
    from agents.sac_lossweighting import update_rounds

    at = []
    train = SAC.train

    def record(self, gradient_steps, batch_size=64):
        at.append(self.num_timesteps)
        return train(self, gradient_steps, batch_size)

    monkeypatch.setattr(SAC, "train", record)
    config = RunConfig(
        method="igbv2",
        env_id="LossWeighting-CubicScales-v1",
        epochs=9,  # 2 warm-up + 7 epochs of 12 env steps
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
        agent={"gradient_steps": 2, "batch_size": 8},
    )
    run_igbv2(config, seed=0)
    assert at == [12, 62] == list(update_rounds(84, 12, 50))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_igbv2_writes_sacs_training_scalars_to_tensorboard(tmp_path):
    """The run is one episode, after which SB3 would write its scalars: they are written
    once an epoch instead, so SAC's losses reach ``tb_agent``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agents.sac_lossweighting import run as run_igbv2

    config = RunConfig(
        method="igbv2",
        env_id="LossWeighting-CubicScales-v1",
        epochs=7,
        output_dir=str(tmp_path),
        progress=False,
        agent={"gradient_steps": 2, "batch_size": 8},
    )
    run_igbv2(config, seed=0)
    folder = tmp_path / "LossWeighting-CubicScales-v1" / "igbv2" / "seed0" / "tb_agent"
    events = EventAccumulator(str(folder))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/actor_loss", "train/critic_loss", "train/ent_coef"} <= tags
    # The run's own log: one event file, the test split's scalars in it (written before the
    # writer closes, not into a second file).
    tb = folder.parent / "tb"
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1
    run_events = EventAccumulator(str(tb))
    run_events.Reload()
    assert "test/mean_nmse" in run_events.Tags()["scalars"]


def test_ppo_policy_defaults_are_appendix_c2s(tmp_path, monkeypatch):
    """Appendix C.2: 256 image features from a backbone mirroring the main network's."""
    from stable_baselines3 import PPO

    from agents.ppo_auxlabel import run

    config = RunConfig(
        method="ppo",
        env_id="AuxLabel-Digits-v1",
        env_kwargs={"train_batch_size": 50, "train_subset": 300, "backbone": "mlp"},
        output_dir=str(tmp_path),
        progress=False,
        agent={"device": "cpu"},
    )
    model = settings_given_to(PPO, monkeypatch, run, config, seed=0)
    assert model.policy_kwargs["features_extractor_kwargs"] == {
        "backbone": "mlp",
        "backbone_kwargs": {},
        "image_features": 256,
    }
