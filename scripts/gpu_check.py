"""GPU readiness in minutes: the device, every id stepped on it, the paper-scale timings.

    python scripts/gpu_check.py --data-root DIR [--subset N] [--epochs 2] [--out gpu.json]

1. torch, CUDA and the device (bfloat16 support, memory);
2. every registered id built with ``device="auto"`` and stepped a few times with random
   actions (ids whose data is missing are reported, not failed), and the LossWeighting
   batched vector form (K = 8) stepped on the device;
3. one epoch of ``stl`` on AuxLabel-CIFAR100-v0 (VGG16, the paper's main network) and one
   cycle of RL-AUX's alternating PPO protocol (a train-agent and a train-main epoch), timed;
4. ``amp`` (bfloat16 autocast) and ``channels_last``: ``stl`` for ``--epochs`` epochs in
   each of the four combinations from the same seed, with test accuracy and time per epoch.

On a machine without CUDA it says so and runs everything on the CPU on ``--subset`` images
(default 500 there, the whole training set on a GPU) with the small CNN (VGG16's evaluation
of 15,000 images alone takes minutes on a CPU), so the script itself is checked anywhere.
The output goes to the terminal and, with ``--out``, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import gymnasium as gym
import torch

import mtl_envs
from harness.registry import run_quietly
from mtl_envs.families import family_of


def device_report() -> dict[str, Any]:
    report: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if report["cuda"]:
        props = torch.cuda.get_device_properties(0)
        report.update(
            device=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            bf16=torch.cuda.is_bf16_supported(),
            cuda_version=torch.version.cuda,
        )
    return report


def step_every_id(data_root: str | None, cuda: bool) -> dict[str, str]:
    """Each registered id on ``device="auto"``: reset and three random steps. Without CUDA,
    ids whose construction trains networks (ETAP's fitted gains: an affinity run and ten
    group runs on CIFAR-100) are reported as skipped."""
    from gymnasium import spec

    outcome = {}
    for env_id in mtl_envs.registered_ids():
        kwargs: dict[str, Any] = {"data_root": data_root} if data_root else {}
        family = family_of(env_id).name
        if not cuda and spec(env_id).kwargs.get("gains") == "etap":
            outcome[env_id] = "skipped on CPU: building it trains the ETAP protocol's networks"
            continue
        if family == "LossWeighting":
            kwargs.update(warmup_epochs=1, epochs=3)
        start = time.perf_counter()
        try:
            env = gym.make(env_id, **kwargs)
            env.reset(seed=0)
            for _ in range(3):
                env.step(env.action_space.sample())
            learner = getattr(env.unwrapped, "learner", None)
            where = str(next(learner.net.parameters()).device) if learner else "table"
            outcome[env_id] = f"ok on {where} ({time.perf_counter() - start:.1f} s)"
            env.close()
        except FileNotFoundError as err:
            outcome[env_id] = f"skipped: {str(err).splitlines()[0][:90]}"
    return outcome


def step_batched_vector_envs() -> dict[str, str]:
    """The LossWeighting batched vector form (torch.func) on ``device="auto"``: K = 8 runs of
    Cubic and Digits10 reset and stepped, with env steps per second."""
    outcome = {}
    for env_id in ("LossWeighting-Cubic-v1", "LossWeighting-Digits10-v1"):
        env = gym.make_vec(
            env_id,
            num_envs=8,
            vectorization_mode="vector_entry_point",
            device="auto",
            warmup_epochs=1,
            epochs=3,
        )
        env.reset(seed=0)
        start = time.perf_counter()
        for _ in range(5):
            env.step(env.action_space.sample())
        rate = 8 * 5 / (time.perf_counter() - start)
        where = env.unwrapped.learner.flat.device
        outcome[env_id] = f"ok on {where}, {rate:.0f} env steps/s (K = 8)"
        env.close()
    return outcome


def timed_run(method: str, env_kwargs: dict[str, Any], epochs: int, out: str) -> dict[str, Any]:
    start = time.perf_counter()
    result = run_quietly(
        method, "AuxLabel-CIFAR100-v0", env_kwargs=env_kwargs, epochs=epochs, output_dir=out
    )
    return {
        "seconds": time.perf_counter() - start,
        "train_seconds": result["train_time_s"],
        "test_accuracy": result["final"]["test/accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None, help="folder with cifar-100-python/")
    parser.add_argument("--subset", type=int, default=None, help="training images to use")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the AMP comparison")
    parser.add_argument(
        "--backbone", default=None, help="main network (default: vgg16 on a GPU, small_cnn on CPU)"
    )
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args()
    report: dict[str, Any] = {"device": device_report()}
    print(json.dumps(report["device"], indent=2))
    if not report["device"]["cuda"]:
        print("No CUDA device: the checks below run on the CPU, on a small subset.")
    cuda = report["device"]["cuda"]
    subset = args.subset or (None if cuda else 500)
    backbone = args.backbone or ("vgg16" if cuda else "small_cnn")

    report["ids"] = step_every_id(args.data_root, cuda)
    for env_id, status in report["ids"].items():
        print(f"{env_id:34s} {status}")

    report["batched_vector"] = step_batched_vector_envs()
    for env_id, status in report["batched_vector"].items():
        print(f"{env_id + ' (batched)':34s} {status}")

    base = {"backbone": backbone, "device": "auto", "train_subset": subset}
    if args.data_root:
        base["data_root"] = args.data_root
    with tempfile.TemporaryDirectory() as out:
        try:
            report["stl_epoch"] = timed_run("stl", base, 1, out)
            print(f"stl, one {backbone} epoch ({subset or 'all'} images): {report['stl_epoch']}")
            report["ppo_cycle"] = timed_run("ppo", base, 1, out + "/ppo")
            print(f"ppo, one alternating cycle: {report['ppo_cycle']}")
            report["precision"] = {}
            for amp in (False, True):
                for channels_last in (False, True):
                    name = f"amp={amp} channels_last={channels_last}"
                    kwargs = {**base, "amp": amp, "channels_last": channels_last}
                    run = timed_run("stl", kwargs, args.epochs, f"{out}/{name}")
                    run["seconds_per_epoch"] = run["train_seconds"] / args.epochs
                    report["precision"][name] = run
                    print(
                        f"{name:32s} test accuracy {run['test_accuracy']:.4f}, "
                        f"{run['seconds_per_epoch']:.1f} s per training epoch"
                    )
        except FileNotFoundError as err:
            print(f"CIFAR-100 timings skipped: {str(err).splitlines()[0]}")
    if args.out:
        from mtl_envs.io import atomic_write_json

        atomic_write_json(args.out, report)
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
