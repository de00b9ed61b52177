"""Overhead of the AuxLabel MDP over plain auxiliary training, measured in one run.

    python benchmarks/aux_label_overhead.py [--data-root DIR] [--repeats 3] [--min-seconds 20]
        [--out FILE]

For Digits and (when ``--data-root`` holds it) CIFAR-100 with ``small_cnn``, it times

* env:   one train-agent episode of the vector env with a random agent (reset + one epoch of
         vector steps: observations to the host, labels to targets, SGD step, reward);
* plain: one epoch of ``AuxLearner.train_epoch`` with fixed auxiliary labels, plus the same
         evaluation forwards the reward needs (one B_R batch per SGD step),

and prints the ratio of the medians env / plain with the interquartile range of the
per-repeat ratios (target <= 1.15).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

import mtl_envs  # noqa: F401
from harness.bench import BenchReport, add_out_argument, float_at_least, positive_int


def time_env_episode(vec, rng: np.random.Generator) -> float:
    start = time.perf_counter()
    vec.reset(options={"mode": "train_agent"})
    terminated = np.zeros(1, dtype=bool)
    while not terminated.all():
        actions = rng.integers(0, vec.single_action_space.n, vec.num_envs)
        _, _, terminated, _, _ = vec.step(actions)
    return time.perf_counter() - start


def time_plain_epoch(learner, aux: torch.Tensor) -> float:
    def labeller(idx, inputs):
        return F.one_hot(aux[idx], learner.num_aux).float(), None

    start = time.perf_counter()
    learner.train_epoch(labeller)
    for _ in range(learner.num_batches):
        float(learner.primary_loss(learner.sample_eval_indices()))
    return time.perf_counter() - start


def measure(env_id: str, repeats: int, min_seconds: float = 20.0, **kwargs) -> dict[str, Any]:
    vec = gym.make_vec(env_id, num_envs=100, vectorization_mode="vector_entry_point", **kwargs)
    vec.reset(seed=0)
    learner = vec.unwrapped.learner
    psi = learner.config.hierarchy_factor
    g = torch.Generator(device=learner.device).manual_seed(0)
    labels = learner.data.train.labels
    fixed = psi * labels + torch.randint(0, psi, labels.shape, generator=g, device=learner.device)
    rng = np.random.default_rng(0)
    warm = time_env_episode(vec, rng)
    # Short epochs (Digits) are timed over several episodes so each sample lasts >= 1 s, and
    # repeated until the case has had about `min_seconds`, so that its median is as steady
    # as a long case's.
    inner = max(1, int(np.ceil(1.0 / warm)))
    repeats = max(repeats, min(15, int(np.ceil(min_seconds / (2 * inner * warm)))))
    env_times, plain_times = [], []
    for _ in range(repeats):  # interleaved so drifts in machine load hit both alike
        env_times.append(sum(time_env_episode(vec, rng) for _ in range(inner)) / inner)
        snap = learner.snapshot()
        plain_times.append(sum(time_plain_epoch(learner, fixed) for _ in range(inner)) / inner)
        learner.restore(snap)
    env_s, plain_s = statistics.median(env_times), statistics.median(plain_times)
    ratios = [e / p for e, p in zip(env_times, plain_times)]
    iqr = (
        statistics.quantiles(ratios, n=4, method="inclusive")[::2]
        if len(ratios) > 1
        else ratios * 2
    )
    return {
        "env_s": env_s,
        "plain_s": plain_s,
        "ratio": env_s / plain_s,
        "repeats": repeats,
        "iqr": iqr,
        "batches": learner.num_batches,
        "backbone": learner.config.backbone,
        "device": str(learner.device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None, help="folder with cifar-100-python")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument(
        "--min-seconds",
        type=float_at_least(0),
        default=20.0,
        help="short cases repeat until they have been timed this long in all",
    )
    parser.add_argument("--device", default="auto")
    add_out_argument(parser)
    args = parser.parse_args()
    report = BenchReport.from_args("aux_label_overhead", args)
    torch.manual_seed(0)
    cases = [("AuxLabel-Digits-v1", {})]
    if args.data_root is not None:
        cases.append(
            ("AuxLabel-CIFAR100-v1", {"data_root": args.data_root, "backbone": "small_cnn"})
        )
    else:
        print("(pass --data-root to include CIFAR-100)")
    header = f"{'env':24} {'device':6} {'batches':>7} {'env (s)':>9} {'plain (s)':>9}"
    print(f"{header} {'ratio':>6} {'IQR':>15}")
    for env_id, kwargs in cases:
        r = measure(env_id, args.repeats, args.min_seconds, device=args.device, **kwargs)
        print(
            f"{env_id:24} {r['device']:6} {r['batches']:7d} {r['env_s']:9.3f} "
            f"{r['plain_s']:9.3f} {r['ratio']:6.3f} [{r['iqr'][0]:.3f}, {r['iqr'][1]:.3f}]",
            flush=True,
        )
        report.add(
            f"{env_id}, {r['backbone']}, {r['batches']} batches: vector env / plain epoch",
            f"{r['ratio']:.3f} ({r['env_s']:.2f} s / {r['plain_s']:.2f} s); per-repeat ratios "
            f"[{r['iqr'][0]:.3f}, {r['iqr'][1]:.3f}] (IQR of {r['repeats']})",
            "<= 1.15",
            **r,
        )


if __name__ == "__main__":
    main()
