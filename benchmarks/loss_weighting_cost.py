"""Training-time ratio T (IGB section 4.1) of IGBv2 (SAC) and IGBv1 against EW, one run.

    python benchmarks/loss_weighting_cost.py [--data-root DIR]

For Digits10 (30 epochs, the paper's SAC schedule) and, with ``--data-root``, CIFAR100MTL
with ``small_cnn`` (4 epochs of 450 batches; SAC learns and acts from epoch 3 so both happen
within them), it trains EW, IGBv1 and IGBv2 for the same epochs in one process, takes each
run's training time (evaluation excluded) and prints T = time / time(EW) (target on
CIFAR100MTL: IGBv2 <= 1.10). For IGBv2 it also splits the time into SAC updates, action
selection and the rest (env steps = network training).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

import mtl_envs  # noqa: F401
from agents.sac_lossweighting import ScheduledSAC
from agents.sac_lossweighting import run as run_igbv2
from harness.config import RunConfig
from harness.registry import run_method
from harness.timing import TIMERS, time_method

# Instrument the agent: gradient updates and action selection.
time_method(ScheduledSAC, "train", "sac_updates")
time_method(ScheduledSAC, "_sample_action", "action_selection")


def measure(
    env_id: str, epochs: int, env_kwargs: dict, schedule: dict, out: str
) -> dict[str, float]:
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
    TIMERS.clear()
    result = run_igbv2(config("igbv2"), 0)
    times["igbv2"] = result["train_time_s"]
    times["sac_updates"] = TIMERS["sac_updates"]
    times["action_selection"] = TIMERS["action_selection"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.manual_seed(0)
    paper = {"update_epoch": 4, "use_epoch": 6}
    cases = [("LossWeighting-Digits10-v1", 30, {"device": args.device}, paper)]
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
            rest = t["igbv2"] - t["sac_updates"] - t["action_selection"]
            split = (
                f"SAC updates {t['sac_updates']:.2f}s, actions {t['action_selection']:.2f}s, "
                f"env + network {rest:.2f}s"
            )
            print(
                f"{env_id:30} {t['ew']:8.2f} {t['igbv1'] / t['ew']:8.3f} "
                f"{t['igbv2'] / t['ew']:8.3f}   {split}",
                flush=True,
            )


if __name__ == "__main__":
    main()
