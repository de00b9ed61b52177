"""Cost of collecting task affinities, and the speed of the TaskGrouping env, in one run.

    python benchmarks/affinity_cost.py [--epochs 5] [--repeats 3]

On Digits10 with the shipped table's protocol it times an all-task MTL run that collects
ETAP's affinity scores (eq. 5-6, at every step and at every 10th step) and one with TAG's
lookahead, each divided by the plain run (targets: ETAP <= 1.15; TAG several times costlier),
then steps the TaskGrouping env in table mode with random actions (target >= 10,000 steps/s).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import mtl_envs  # noqa: F401
from mtl_envs.training.affinity import collect_affinities
from mtl_envs.training.group_trainer import GroupProtocol, load_gain_table
from mtl_envs.training.multitask_learner import MultiTaskLearner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    protocol = GroupProtocol(**load_gain_table("digits10")["protocol"])
    config = protocol.learner_config(None, "cpu")
    data = MultiTaskLearner(config, seed=0).data
    variants = {
        "plain": {"etap": False},
        "etap": {},
        "etap_every10": {"every": 10},
        "tag": {"etap": False, "tag": True},
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for repeat in range(args.repeats):  # interleaved so machine load hits all variants alike
        for name, kwargs in variants.items():
            learner = MultiTaskLearner(config, seed=repeat, dataset=data)
            times[name].append(collect_affinities(learner, args.epochs, **kwargs).seconds)
    plain = statistics.median(times["plain"])
    print(f"all-task run on digits10, {args.epochs} epochs: plain {plain:.2f} s")
    for name in ("etap", "etap_every10", "tag"):
        print(f"  {name:13} {statistics.median(times[name]) / plain:6.2f} x plain")

    env = gym.make("TaskGrouping-Digits10-v1").unwrapped
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=(20_000, env.num_tasks), dtype=np.int8)
    env.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, _, _ = env.step(action)
        if terminated:
            env.reset()
    rate = len(actions) / (time.perf_counter() - start)
    print(f"TaskGrouping-Digits10-v1 (table): {rate:,.0f} steps/s")


if __name__ == "__main__":
    main()
