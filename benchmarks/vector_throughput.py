"""Env steps per second of the batched LossWeighting vector form against ``SyncVectorEnv``.

    python benchmarks/vector_throughput.py [--steps 40] [--num-envs 1 8 32]

For each id and K, both forms are reset (warm-up epochs not timed), stepped a few times to
warm up, then timed over ``--steps`` vector steps with random in-range actions. Printed:
env steps per second (K per vector step) of each and their ratio, measured in this one run.
Target: ratio >= 8 at K = 32 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import mtl_envs  # noqa: F401  (registers the ids)

IDS = ("LossWeighting-Cubic-v1", "LossWeighting-Digits10-v1")


def steps_per_second(env: gym.vector.VectorEnv, steps: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    shape = env.action_space.shape

    def act():
        return rng.uniform(-0.9, 0.9, shape).astype(np.float32)

    for _ in range(3):
        env.step(act())
    start = time.perf_counter()
    for _ in range(steps):
        env.step(act())
    return env.num_envs * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--ids", nargs="+", default=list(IDS))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'id':28s} {'K':>3s} {'sync steps/s':>13s} {'batched steps/s':>16s} {'ratio':>6s}")
    for env_id in args.ids:
        for k in args.num_envs:
            # Episodes long enough that no timed step resets a run.
            sync = gym.make_vec(env_id, num_envs=k, vectorization_mode="sync")
            batched = gym.make_vec(env_id, num_envs=k, vectorization_mode="vector_entry_point")
            s = steps_per_second(sync, args.steps)
            b = steps_per_second(batched, args.steps)
            sync.close()
            batched.close()
            print(f"{env_id:28s} {k:3d} {s:13.0f} {b:16.0f} {b / s:6.2f}", flush=True)


if __name__ == "__main__":
    main()
