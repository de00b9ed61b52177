"""Env steps per second of the batched LossWeighting vector form against ``SyncVectorEnv``.

    python benchmarks/vector_throughput.py [--steps 30] [--rounds 9] [--num-envs 1 8 32]
        [--out FILE]

For each id and K, both forms are reset (warm-up epochs not timed), stepped a few times to
warm up, then timed in alternating rounds of ``--steps`` vector steps with random in-range
actions. Printed: the median env steps per second (K per vector step) of each, and the
median of the per-round ratios with their interquartile range, measured in this one run (on a
shared 2-core machine single rounds move by 30% and more; the IQR shows how far).
Target: ratio >= 8 at K = 32 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

import mtl_envs  # noqa: F401  (registers the ids)
from harness.bench import BenchReport, add_out_argument, positive_int

IDS = ("LossWeighting-Cubic-v1", "LossWeighting-Digits10-v1")


class Stepper:
    """A vector env reset once and stepped with random in-range actions."""

    def __init__(self, env: gym.vector.VectorEnv, seed: int = 0):
        self.env, self.rng = env, np.random.default_rng(seed)
        env.reset(seed=seed)
        self.rate(3)  # warm-up steps, not counted

    def rate(self, steps: int) -> float:
        """Env steps per second (``num_envs`` per vector step) over ``steps`` vector steps."""
        shape = self.env.action_space.shape
        actions = self.rng.uniform(-0.9, 0.9, (steps, *shape)).astype(np.float32)
        start = time.perf_counter()
        for action in actions:
            self.env.step(action)
        return self.env.num_envs * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=positive_int, default=30, help="vector steps per round")
    parser.add_argument("--rounds", type=positive_int, default=9)
    parser.add_argument("--num-envs", type=positive_int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--ids", nargs="+", default=list(IDS))
    add_out_argument(parser)
    args = parser.parse_args()
    for env_id in args.ids:
        # Episodes long enough that no timed step resets a run (whose warm-up epochs would
        # land in a round): the warm-up steps and every round fit in one episode.
        env = gym.make(env_id).unwrapped
        episode = (env.epochs - env.warmup_epochs) * env.learner.num_batches
        env.close()
        if 3 + args.rounds * args.steps > episode:
            parser.error(
                f"--rounds x --steps: {args.rounds} x {args.steps} steps (and 3 of warm-up) "
                f"outrun an episode of {env_id} ({episode} steps); take fewer"
            )
    report = BenchReport.from_args("vector_throughput", args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = f"{'id':28s} {'K':>3s} {'sync steps/s':>13s} {'batched steps/s':>16s}"
    print(f"{header} {'ratio':>6s} {'IQR':>13s}")
    for env_id in args.ids:
        cases = []
        for k in args.num_envs:
            # The two forms alternate in rounds so that the machine's load hits both alike
            # (medians are printed).
            sync = Stepper(gym.make_vec(env_id, num_envs=k, vectorization_mode="sync"))
            batched = Stepper(
                gym.make_vec(env_id, num_envs=k, vectorization_mode="vector_entry_point")
            )
            rates = [(sync.rate(args.steps), batched.rate(args.steps)) for _ in range(args.rounds)]
            s = statistics.median(r[0] for r in rates)
            b = statistics.median(r[1] for r in rates)
            ratios = [r[1] / r[0] for r in rates]
            low, ratio, high = (
                statistics.quantiles(ratios, n=4, method="inclusive")
                if len(ratios) > 1
                else ratios * 3
            )
            sync.env.close()
            batched.env.close()
            iqr = f"[{low:.2f}, {high:.2f}]"
            print(f"{env_id:28s} {k:3d} {s:13.0f} {b:16.0f} {ratio:6.2f} {iqr:>13s}", flush=True)
            cases.append({"k": k, "sync": s, "batched": b, "ratio": ratio, "iqr": [low, high]})
        ks = ", ".join(str(c["k"]) for c in cases)
        ratios = ", ".join("{:.2f} [{:.2f}, {:.2f}]".format(c["ratio"], *c["iqr"]) for c in cases)
        last = cases[-1]
        report.add(
            f"{env_id}, batched / sync env steps per second, K = {ks}: "
            f"median of {args.rounds} rounds [IQR]",
            f"{ratios} ({last['batched']:,.0f} against {last['sync']:,.0f} env steps/s "
            f"at K = {last['k']})",
            ">= 8 at K = 32" if 32 in args.num_envs else "report (the target is at K = 32)",
            cases=cases,
        )


if __name__ == "__main__":
    main()
