"""Resident memory of envs used for many episodes, in one run.

    python benchmarks/memory_episodes.py [--episodes 50] [--out FILE]

For each env, with short episodes (the kwargs in ``ENVS``, named in each row), it plays a few
warm-up episodes with random actions, reads the process's
resident set size (RSS, from /proc/self/statm), plays ``--episodes`` more and prints the
growth ratio (target: below 1.10, i.e. flat).
"""

from __future__ import annotations

import argparse
import os

import gymnasium as gym

import mtl_envs  # noqa: F401
from harness.bench import BenchReport, add_out_argument, int_at_least, positive_int

ENVS = {
    "LossWeighting-Cubic-v1": {"warmup_epochs": 1, "epochs": 2},
    "AuxLabel-Digits-v1": {"train_batch_size": 20, "eval_batch_size": 32, "max_batches": 2},
    "TaskGrouping-Digits10-v1": {},
}


def settings(kwargs: dict) -> str:
    """`` (a=1, b=2)``: the kwargs that cut an id's episodes short, for the row's label."""
    return " (" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")" if kwargs else ""


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def play(env: gym.Env, seed: int) -> None:
    env.reset(seed=seed)
    while True:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=positive_int, default=50)
    parser.add_argument("--warmup", type=int_at_least(0), default=5)
    add_out_argument(parser)
    args = parser.parse_args()
    report = BenchReport.from_args("memory_episodes", args)
    for env_id, kwargs in ENVS.items():
        env = gym.make(env_id, **kwargs)
        env.action_space.seed(0)
        for seed in range(args.warmup):
            play(env, seed)
        before = rss_mib()
        for seed in range(args.episodes):
            play(env, args.warmup + seed)
        after = rss_mib()
        print(
            f"{env_id}: RSS {before:.1f} MiB -> {after:.1f} MiB after {args.episodes} "
            f"episodes, ratio {after / before:.3f} (target < 1.10)"
        )
        report.add(
            f"{env_id}{settings(ENVS[env_id])}: resident memory over {args.episodes} episodes",
            f"{before:.0f} MiB -> {after:.0f} MiB, ratio {after / before:.3f}",
            "< 1.10",
            before_mib=before,
            after_mib=after,
            ratio=after / before,
        )
        env.close()


if __name__ == "__main__":
    main()
