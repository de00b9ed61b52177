"""Training-time ratio T (IGB section 4.1) of IGBv2 (SAC) and IGBv1 against EW, one run.

    python benchmarks/loss_weighting_cost.py [--data-root DIR] [--epochs 30] [--repeats 5]
        [--interleave-rounds 8] [--interleave-steps 50] [--out FILE]

For Digits10 (30 epochs, the configured run with IGB's SAC schedule) and, with
``--data-root``, CIFAR100MTL with ``small_cnn`` (4 epochs of 450 batches; SAC learns and acts
from epoch 3 so both happen within them), it trains EW, IGBv1 and IGBv2 for the same epochs
in one process, takes each run's training time (evaluation excluded) and prints T = time /
time(EW) (target on CIFAR100MTL: IGBv2 <= 1.10). For IGBv2 it also splits the time into SAC
updates, action selection and the rest (env steps and the env's warm-up epochs = network
training), and divides the SAC updates and the rest by the number of SAC gradient steps and
of network updates: the milliseconds of one SAC update against one network step. A Digits10
run lasts seconds, so that case is repeated (``--repeats``) and reports the median T of the
repeats with the interquartile range of IGBv2's, and the time split of the median repeat.

Runs timed one after the other also differ by the machine's drift, several percent over
minutes here. So for each id it also prices IGBv2's env step against EW's network step in
one process, in alternating rounds on one network (``--interleave-rounds`` of
``--interleave-steps``): an env step trains the pending batch and forwards the next, as EW's
step does, plus the env's own work, with SAC acting and running its update rounds between
steps (untimed); the median of the rounds' ratios is the env step's price.

A configured CIFAR100MTL run (50 epochs, SAC from epoch 4) takes about 30 minutes per method
here, so its T is extrapolated: the counts of the configured schedule (network steps, env
steps, SAC gradient steps of rounds that grow with the buffer) priced at the per-step costs
measured above, each SAC step at the dearer of its in-run cost and the cost of a step at the
full batch of 256 (timed apart on a full buffer). The row shows the sum's three terms: the
loop (EW's network steps, the env steps at their interleaved price), SAC's share and the
actions' share. Beside the loop, two other estimates of the env's cost: its own work timed
inside IGBv2's run (its steps less the learner's network work inside them), and IGBv2's env
and network time less its network steps at EW's price, a difference of two runs' timings
where the drift lands (IGBv1's T in the same run, whose loop is EW's, shows how far).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC

import mtl_envs  # noqa: F401
from agents.sac_lossweighting import (
    ScheduledSAC,
    run_gradient_steps,
    sac_defaults,
    schedule_steps,
)
from agents.sac_lossweighting import run as run_igbv2
from harness.bench import BenchReport, add_out_argument, int_at_least, positive_int
from harness.config import RunConfig
from harness.registry import run_method
from harness.timing import CALLS, TIMERS, reset_timers, time_method
from mtl_envs.envs.loss_weighting import LossWeightingEnv
from mtl_envs.training.multitask_learner import MultiTaskLearner


def count_gradient_steps(train):
    """SAC's ``train`` that adds its ``gradient_steps`` to ``CALLS["sac_gradient_steps"]``."""

    def wrapper(self, gradient_steps: int, *args, **kwargs):
        CALLS["sac_gradient_steps"] += gradient_steps
        return train(self, gradient_steps, *args, **kwargs)

    return wrapper


# Instrument the agent (gradient updates, action selection) and count the network's updates
# (the env's warm-up epochs included, which its reset trains).
# SAC.train receives the round as ScheduledSAC sized it.
SAC.train = count_gradient_steps(SAC.train)
time_method(ScheduledSAC, "train", "sac_updates")
time_method(ScheduledSAC, "_sample_action", "action_selection")
time_method(MultiTaskLearner, "update", "network_step")
# The env's own work per step is timed inside IGBv2's run: its steps, less the learner's
# network work inside them (the step trains the pending batch and forwards the next one).
time_method(LossWeightingEnv, "step", "env_step")
time_method(MultiTaskLearner, "apply_pending", "learner_apply")
time_method(MultiTaskLearner, "forward_pending", "learner_forward")


def measure(env_id: str, epochs: int, env_kwargs: dict, schedule: dict, out: str) -> dict[str, Any]:
    def config(method: str) -> RunConfig:
        return RunConfig(
            method=method,
            env_id=env_id,
            env_kwargs=env_kwargs,
            epochs=epochs,
            output_dir=out,
            progress=False,
            tensorboard=False,
            method_kwargs=schedule,
        )

    # An untimed short run first: one-off costs (data caches, kernel initialisation) would
    # otherwise land on whichever method runs first.
    warm = RunConfig(**{**config("ew").to_dict(), "epochs": 3, "output_dir": f"{out}/warm-up"})
    run_method(warm, "ew", 0)
    times = {}
    for method in ("ew", "igbv1"):
        reset_timers()
        times[method] = run_method(config(method), method, 0)["train_time_s"]
        times[f"{method}_network_steps"] = CALLS["network_step"]
    reset_timers()
    result = run_igbv2(config("igbv2"), 0)
    times["igbv2"] = result["train_time_s"]
    times["sac_updates"] = TIMERS["sac_updates"]
    times["action_selection"] = TIMERS["action_selection"]
    times["env_network"] = times["igbv2"] - times["sac_updates"] - times["action_selection"]
    # Each env step forwards the next batch; a reset forwards one too (its share is left out).
    steps = CALLS["env_step"]
    forward = TIMERS["learner_forward"] * steps / max(1, CALLS["learner_forward"])
    times["env_own_s"] = TIMERS["env_step"] - TIMERS["learner_apply"] - forward
    times["ms_env_timed"] = 1e3 * times["env_own_s"] / max(1, steps)
    times["sac_gradient_steps"] = CALLS["sac_gradient_steps"]
    times["network_steps"] = CALLS["network_step"]
    times["actions"] = CALLS["action_selection"]
    times["ms_per_update"] = 1e3 * times["sac_updates"] / max(1, CALLS["sac_gradient_steps"])
    times["ms_per_network_step"] = 1e3 * times["env_network"] / max(1, CALLS["network_step"])
    times["t_igbv1"] = times["igbv1"] / times["ew"]
    times["t_igbv2"] = times["igbv2"] / times["ew"]
    return times


def median_repeat(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median IGBv2 T (its time split), with the median T of IGBv1 over the runs
    and every run's T kept as ``repeats_t_igbv1`` / ``repeats_t_igbv2``."""
    ordered = sorted(runs, key=lambda r: r["t_igbv2"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["t_igbv1"] = float(np.median([r["t_igbv1"] for r in runs]))
    median["repeats_t_igbv1"] = [r["t_igbv1"] for r in runs]
    median["repeats_t_igbv2"] = [r["t_igbv2"] for r in runs]
    return median


class _Spaces(gym.Env):
    """An env that only carries SAC's spaces (the agent is timed on a filled buffer)."""

    def __init__(self, n: int):
        self.observation_space = gym.spaces.Box(0.0, np.inf, (n,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n,), dtype=np.float32)


def sac_on_full_buffer(env: gym.Env, device: str) -> SAC:
    """IGBv2's SAC (its default networks and settings, without the round scaling) for
    ``env``'s spaces, its replay buffer filled with random transitions: update rounds then
    cost what they cost on a full buffer."""
    from stable_baselines3.common.logger import Logger

    kwargs = {k: v for k, v in sac_defaults(None).items() if k != "round_scaling"}
    kwargs["train_freq"] = tuple(kwargs["train_freq"])
    model = SAC("MlpPolicy", env, seed=0, device=device, **kwargs)
    model.set_logger(Logger(folder=None, output_formats=[]))
    buffer, rng = model.replay_buffer, np.random.default_rng(0)
    for name in ("observations", "next_observations", "rewards"):
        array = getattr(buffer, name)
        array[:] = rng.random(array.shape, dtype=np.float32)
    buffer.actions[:] = rng.uniform(-0.99, 0.99, buffer.actions.shape)
    buffer.full = True
    return model


def sac_step_ms(n_tasks: int, batch_size: int, device: str, rounds: int = 3) -> float:
    """Milliseconds of one gradient step of IGBv2's SAC (its default networks) on a full
    replay buffer of random transitions, the median of ``rounds`` rounds of 50 steps."""
    model = sac_on_full_buffer(_Spaces(n_tasks), device)
    model.train(50, batch_size)  # untimed: first-call costs
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        model.train(50, batch_size)
        seconds.append(time.perf_counter() - start)
    return 1e3 * float(np.median(seconds)) / 50


def interleaved_step_ratio(
    env_id: str, env_kwargs: dict, steps: int, rounds: int, device: str
) -> dict[str, Any]:
    """IGBv2's env step against EW's network step, timed in alternating rounds of one
    process on one network: each env step trains a batch and forwards the next as EW's step
    does, plus the env's own work, with SAC choosing its action and running its update
    rounds (on a full buffer of random transitions) between the steps, as in IGBv2's run.

    Two runs timed minutes apart differ by the machine's drift as well as by the methods
    (EW alone varies by several percent between runs here); alternating short rounds puts
    the drift on both sides. Returns the median and quartiles of the rounds' ratios."""
    # One warm-up epoch (the least the env allows) and no end within the rounds.
    env = gym.make(env_id, **env_kwargs, warmup_epochs=1, epochs=1_000).unwrapped
    learner = env.learner
    agent = sac_on_full_buffer(env, device)
    every, gradient_steps = agent.train_freq.frequency, agent.gradient_steps
    obs, _ = env.reset(seed=0)

    def ew_round() -> float:
        # EW's step through the learner's own API: the pending batch trained with equal
        # weights, the next one forwarded (an env step's network work, without the env and
        # the agent around it).
        start = time.perf_counter()
        for _ in range(steps):
            learner.apply_pending(None)
            learner.forward_pending()
        return time.perf_counter() - start

    def env_round(obs: np.ndarray) -> tuple[float, np.ndarray]:
        seconds = 0.0
        for k in range(steps):
            action, _ = agent.predict(obs)
            start = time.perf_counter()
            obs, *_ = env.step(action)
            seconds += time.perf_counter() - start
            if (k + 1) % every == 0:
                agent.train(gradient_steps, agent.batch_size)
        return seconds, obs

    ew_round()  # untimed: first-call costs
    ew_ms, env_ms = [], []
    for _ in range(rounds):
        ew_ms.append(1e3 * ew_round() / steps)
        seconds, obs = env_round(obs)
        env_ms.append(1e3 * seconds / steps)
    env.close()
    ratios = [b / a for a, b in zip(ew_ms, env_ms)]
    low, median, high = np.percentile(ratios, [25, 50, 75])
    return {
        "ratio": float(median),
        "ratio_iqr": [float(low), float(high)],
        "ratios": ratios,
        # Each round's milliseconds per step: how far the machine drifts between rounds.
        "ms_ew_rounds": ew_ms,
        "ms_env_rounds": env_ms,
    }


def configured_run_t(
    t: dict[str, Any], env_id: str, env_kwargs: dict, schedule: dict, device: str, ratio: float
) -> dict[str, Any]:
    """IGBv2's T over the id's configured epochs and ``schedule``, from the per-step costs of
    a measured run ``t`` (see the module docstring); the counts and prices it uses."""
    env = gym.make(env_id, **env_kwargs).unwrapped
    batches, warm, n = env.learner.num_batches, env.warmup_epochs, env.num_tasks
    env.close()
    epochs = gym.spec(env_id).kwargs["epochs"]
    agent = sac_defaults(None)
    steps = (epochs - warm) * batches
    learning_starts, _ = schedule_steps(
        schedule["update_epoch"], schedule["use_epoch"], warm, batches
    )
    sac_steps = run_gradient_steps(
        steps,
        learning_starts,
        agent["train_freq"][0],
        agent["gradient_steps"],
        agent["buffer_size"],
        agent["round_scaling"],
    )
    ms_sac = max(sac_step_ms(n, agent["batch_size"], device), t["ms_per_update"])
    ms_network = 1e3 * t["ew"] / t["ew_network_steps"]
    ms_action = 1e3 * t["action_selection"] / max(1, t["actions"])
    # The env's own cost per step (observation, reward, bookkeeping), beyond the network step
    # it makes: IGBv2's env and network time less its network steps at EW's price, over its
    # env steps. The measured run has env steps in half its epochs, the configured run in
    # nearly all, so the cost is carried per env step, not as the measured run's ratio.
    env_ms = (1e3 * t["env_network"] - t["network_steps"] * ms_network) / max(1, t["actions"])
    network_steps = epochs * batches
    # The loop: EW's network steps, the env steps' excess over them as the interleaved
    # rounds measured it (``ratio``). Beside it, the env's own work as timed inside the run
    # and the difference of the two runs' timings (env_ms), which holds the machine's drift.
    loop = 1.0 + steps * (ratio - 1.0) / network_steps
    loop_env_timed = 1.0 + steps * t["ms_env_timed"] / (network_steps * ms_network)
    ew_seconds = network_steps * ms_network / 1e3
    sac_seconds, action_seconds = sac_steps * ms_sac / 1e3, steps * ms_action / 1e3
    return {
        "epochs": epochs,
        "network_steps": network_steps,
        "env_steps": steps,
        "ms_env_per_step": t["ms_env_timed"],
        "ms_env_by_difference": env_ms,
        "sac_gradient_steps": sac_steps,
        "ms_per_update_priced": ms_sac,
        "ms_per_network_step": ms_network,
        "ms_per_action": ms_action,
        "ew_s": ew_seconds,
        "sac_s": sac_seconds,
        "actions_s": action_seconds,
        "loop_ratio": loop,
        "interleaved_ratio": ratio,
        "loop_env_timed": loop_env_timed,
        "t_igbv2_env_timed": loop_env_timed + (sac_seconds + action_seconds) / ew_seconds,
        "sac_share": sac_seconds / ew_seconds,
        "actions_share": action_seconds / ew_seconds,
        "t_igbv2": loop + (sac_seconds + action_seconds) / ew_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--epochs",
        type=int_at_least(7),
        default=30,
        help="Digits10 epochs, 7 or more (SAC learns from epoch 4 and acts from epoch 6)",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=5, help="Digits10 repeats (CIFAR100MTL runs once)"
    )
    parser.add_argument(
        "--interleave-rounds",
        type=positive_int,
        default=8,
        help="alternating rounds of EW's and IGBv2's steps (the env step's price)",
    )
    parser.add_argument(
        "--interleave-steps",
        type=positive_int,
        default=50,
        help="steps per round (50: one SAC update round inside each env round)",
    )
    add_out_argument(parser)
    args = parser.parse_args()
    report = BenchReport.from_args("loss_weighting_cost", args)
    torch.manual_seed(0)
    paper = {"update_epoch": 4, "use_epoch": 6}
    cases = [("LossWeighting-Digits10-v1", args.epochs, {"device": args.device}, paper)]
    if args.data_root:
        cifar = {"data_root": args.data_root, "backbone": "small_cnn", "device": args.device}
        short = {"update_epoch": 3, "use_epoch": 3}
        cases.append(("LossWeighting-CIFAR100MTL-v1", 4, cifar, short))
    else:
        print("(pass --data-root to include CIFAR100MTL)")
    with tempfile.TemporaryDirectory() as out:
        print(f"{'env':30} {'EW (s)':>8} {'T IGBv1':>8} {'T IGBv2':>8}   IGBv2 time split")
        for env_id, epochs, kwargs, schedule in cases:
            repeats = 1 if "CIFAR" in env_id else args.repeats
            t = median_repeat(
                [measure(env_id, epochs, kwargs, schedule, out) for _ in range(repeats)]
            )
            split = (
                f"SAC updates {t['sac_updates']:.1f} s, actions {t['action_selection']:.1f} s, "
                f"env + network {t['env_network']:.1f} s (EW: {t['ew']:.1f} s); "
                f"{t['ms_per_update']:.1f} ms per SAC update ({t['sac_gradient_steps']}) "
                f"against {t['ms_per_network_step']:.1f} ms per network step "
                f"({t['network_steps']})"
            )
            print(
                f"{env_id:30} {t['ew']:8.2f} {t['t_igbv1']:8.3f} {t['t_igbv2']:8.3f}   {split}",
                flush=True,
            )
            name = env_id.removeprefix("LossWeighting-")
            backbone = f", {kwargs['backbone']}" if "backbone" in kwargs else ""
            target = "report"
            spread = ""
            if repeats > 1:
                low, high = np.percentile(t["repeats_t_igbv2"], [25, 75])
                spread = f" (median of {repeats}; IGBv2 IQR [{low:.3f}, {high:.3f}])"
            report.add(
                f"{name}{backbone}, {epochs} epochs: T IGBv1 / T IGBv2",
                f"{t['t_igbv1']:.3f} / {t['t_igbv2']:.3f}{spread}",
                target,
                **t,
            )
            report.add(f"IGBv2's time split on {name}", split)
            step = interleaved_step_ratio(
                env_id, kwargs, args.interleave_steps, args.interleave_rounds, args.device
            )
            low, high = step["ratio_iqr"]
            ew_ms = step["ms_ew_rounds"]
            step_text = (
                f"{step['ratio']:.3f} (IQR [{low:.3f}, {high:.3f}], {args.interleave_rounds} "
                f"rounds of {args.interleave_steps} steps; EW's step {min(ew_ms):.1f}-"
                f"{max(ew_ms):.1f} ms across the rounds)"
            )
            print(f"{name}: IGBv2's env step / EW's network step, interleaved: {step_text}")
            report.add(
                f"IGBv2's env step / EW's network step on {name}, interleaved in one process",
                step_text,
                "report",
                **step,
            )
            if "CIFAR" in env_id:
                full = configured_run_t(t, env_id, kwargs, paper, args.device, step["ratio"])
                text = (
                    f"{full['t_igbv2']:.3f} = loop {full['loop_ratio']:.3f} (env steps "
                    f"{full['interleaved_ratio']:.3f} x EW's network step, interleaved; with "
                    f"the env's work timed in the run, {full['ms_env_per_step']:.2f} ms per "
                    f"step, loop {full['loop_env_timed']:.3f}; "
                    f"{full['ms_env_by_difference']:.2f} ms by the runs' difference) + SAC "
                    f"{full['sac_share']:.3f} ({full['sac_gradient_steps']:,} steps x "
                    f"{full['ms_per_update_priced']:.1f} ms) + actions "
                    f"{full['actions_share']:.3f}, against {full['network_steps']:,} network "
                    f"steps x {full['ms_per_network_step']:.1f} ms"
                )
                print(f"{name}, configured {full['epochs']} epochs, extrapolated: T IGBv2 {text}")
                report.add(
                    f"{name}{backbone}, configured {full['epochs']} epochs (extrapolated): T IGBv2",
                    text,
                    "IGBv2 <= 1.10",
                    **full,
                )


if __name__ == "__main__":
    main()
