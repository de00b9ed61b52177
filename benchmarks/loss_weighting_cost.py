"""Training-time ratio T (IGB section 4.1) of IGBv2 (SAC) and IGBv1 against EW, one run.

    python benchmarks/loss_weighting_cost.py [--data-root DIR] [--epochs 30] [--out FILE]

For Digits10 (30 epochs, the paper's SAC schedule) and, with ``--data-root``, CIFAR100MTL
with ``small_cnn`` (4 epochs of 450 batches; SAC learns and acts from epoch 3 so both happen
within them), it trains EW, IGBv1 and IGBv2 for the same epochs in one process, takes each
run's training time (evaluation excluded) and prints T = time / time(EW) (target on
CIFAR100MTL: IGBv2 <= 1.10). For IGBv2 it also splits the time into SAC updates, action
selection and the rest (env steps and the env's warm-up epochs = network training), and
divides the SAC updates and the rest by the number of SAC gradient steps and of network
updates: the milliseconds of one SAC update against one network step.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch

import mtl_envs  # noqa: F401
from agents.sac_lossweighting import ScheduledSAC
from agents.sac_lossweighting import run as run_igbv2
from harness.bench import BenchReport, add_out_argument
from harness.config import RunConfig
from harness.registry import run_method
from harness.timing import CALLS, TIMERS, reset_timers, time_method
from mtl_envs.training.multitask_learner import MultiTaskLearner


def count_gradient_steps(train):
    """SAC's ``train`` that adds its ``gradient_steps`` to ``CALLS["sac_gradient_steps"]``."""

    def wrapper(self, gradient_steps: int, *args, **kwargs):
        CALLS["sac_gradient_steps"] += gradient_steps
        return train(self, gradient_steps, *args, **kwargs)

    return wrapper


# Instrument the agent (gradient updates, action selection) and count the network's updates
# (the env's warm-up epochs included, which its reset trains).
ScheduledSAC.train = count_gradient_steps(ScheduledSAC.train)
time_method(ScheduledSAC, "train", "sac_updates")
time_method(ScheduledSAC, "_sample_action", "action_selection")
time_method(MultiTaskLearner, "update", "network_step")


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
        times[method] = run_method(config(method), method, 0)["train_time_s"]
    reset_timers()
    result = run_igbv2(config("igbv2"), 0)
    times["igbv2"] = result["train_time_s"]
    times["sac_updates"] = TIMERS["sac_updates"]
    times["action_selection"] = TIMERS["action_selection"]
    times["env_network"] = times["igbv2"] - times["sac_updates"] - times["action_selection"]
    times["sac_gradient_steps"] = CALLS["sac_gradient_steps"]
    times["network_steps"] = CALLS["network_step"]
    times["ms_per_update"] = 1e3 * times["sac_updates"] / max(1, CALLS["sac_gradient_steps"])
    times["ms_per_network_step"] = 1e3 * times["env_network"] / max(1, CALLS["network_step"])
    times["t_igbv1"] = times["igbv1"] / times["ew"]
    times["t_igbv2"] = times["igbv2"] / times["ew"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--epochs", type=int, default=30, help="Digits10 epochs (SAC learns from epoch 4)"
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
            t = measure(env_id, epochs, kwargs, schedule, out)
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
            target = "IGBv2 <= 1.10" if "CIFAR" in env_id else "report"
            report.add(
                f"{name}{backbone}, {epochs} epochs: T IGBv1 / T IGBv2",
                f"{t['t_igbv1']:.3f} / {t['t_igbv2']:.3f}",
                target,
                **t,
            )
            report.add(f"IGBv2's time split on {name}", split)


if __name__ == "__main__":
    main()
