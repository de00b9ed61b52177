"""Cost of collecting task affinities, and the speed of the TaskGrouping env, in one run.

    python benchmarks/affinity_cost.py [--epochs 30] [--repeats 9] [--out FILE]

On Digits10 with the shipped table's protocol it times an all-task MTL run that collects
ETAP's affinity scores (eq. 5-6: exact at every step, exact at every 10th step, and from the
shared representation's gradients at every step) and one with TAG's lookahead, each divided
by the plain run of the same seed (target for every-step scores: <= 1.30; TAG several times
costlier), prints
how well the two cheaper scores agree with the exact ones (Pearson and Spearman over the
off-diagonal pairs), then steps the TaskGrouping env in table mode with random actions
(target >= 10,000 steps/s). A run lasts about a second and this machine's speed moves by a
tenth or more between seconds, so each variant's time is divided by the plain run made just
before it (same seed), and the median of those ratios is reported with their interquartile
range.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
from scipy.stats import spearmanr

import mtl_envs  # noqa: F401
from harness.bench import BenchReport, add_out_argument, positive_int
from mtl_envs.training.affinity import collect_affinities
from mtl_envs.training.group_trainer import GroupProtocol, load_gain_table
from mtl_envs.training.multitask_learner import MultiTaskLearner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=positive_int, default=30)
    parser.add_argument("--repeats", type=positive_int, default=9)
    add_out_argument(parser)
    args = parser.parse_args()
    report = BenchReport.from_args("affinity_cost", args)
    protocol = GroupProtocol(**load_gain_table("digits10")["protocol"])
    config = protocol.learner_config(None, "cpu")
    data = MultiTaskLearner(config, seed=0).data
    variants = {
        "plain": {"etap": False},
        "etap": {},
        "etap_every10": {"every": 10},
        "etap_representation": {"gradients": "representation"},
        "tag": {"etap": False, "tag": True},
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    scores: dict[str, list[np.ndarray]] = {k: [] for k in variants}
    for repeat in range(args.repeats):  # interleaved so machine load hits all variants alike
        for name, kwargs in variants.items():
            learner = MultiTaskLearner(config, seed=repeat, dataset=data)
            result = collect_affinities(learner, args.epochs, **kwargs)
            times[name].append(result.seconds)
            scores[name].append(result.etap_no_momentum)
    plain = statistics.median(times["plain"])
    print(f"all-task run on digits10, {args.epochs} epochs: plain {plain:.2f} s")
    ratio, iqr = {}, {}
    for name in ("etap", "etap_every10", "etap_representation", "tag"):
        paired = [t / p for t, p in zip(times[name], times["plain"])]
        ratio[name] = float(np.median(paired))
        iqr[name] = np.percentile(paired, [25, 75]).tolist()
        low, high = iqr[name]
        print(f"  {name:20} {ratio[name]:6.2f} x plain (IQR {low:.2f}-{high:.2f})")
    # How well the cheap scores agree with the exact ones of the same seed's run (the
    # momentum-free score; off-diagonal pairs, which decide the groups).
    off = ~np.eye(len(scores["etap"][0]), dtype=bool)
    agreement = {}
    for name in ("etap_every10", "etap_representation"):
        pearson, spearman = [], []
        for exact, approx in zip(scores["etap"], scores[name]):
            pearson.append(np.corrcoef(exact[off], approx[off])[0, 1])
            spearman.append(spearmanr(exact[off], approx[off]).statistic)
        agreement[name] = {"pearson": float(np.mean(pearson)), "spearman": float(np.mean(spearman))}
        print(
            f"  {name} against exact: Pearson {np.mean(pearson):.3f}, "
            f"Spearman {np.mean(spearman):.3f} (mean over {len(pearson)} seeds)"
        )
    run = f"Digits10 all-task run, {args.epochs} epochs, {args.repeats} seeds"
    report.add(
        f"{run}: exact ETAP affinities every step / every 10th step against the plain run "
        "of the same seed, median [IQR]",
        f"{ratio['etap']:.2f} [{iqr['etap'][0]:.2f}, {iqr['etap'][1]:.2f}] x / "
        f"{ratio['etap_every10']:.2f} [{iqr['etap_every10'][0]:.2f}, "
        f"{iqr['etap_every10'][1]:.2f}] x plain ({plain:.2f} s)",
        "<= 1.30 every step",
        plain_s=plain,
        seconds={k: statistics.median(v) for k, v in times.items()},
        repeats_seconds=times,
        every_step=ratio["etap"],
        every_step_iqr=iqr["etap"],
        every_10th=ratio["etap_every10"],
        every_10th_iqr=iqr["etap_every10"],
    )
    rep = agreement["etap_representation"]
    report.add(
        "ETAP from the shared representation's gradients, every step",
        f"{ratio['etap_representation']:.2f} x plain; Pearson {rep['pearson']:.2f}, "
        f"Spearman {rep['spearman']:.2f} with the exact scores",
        "",
        ratio=ratio["etap_representation"],
        iqr=iqr["etap_representation"],
        **{f"{k}_against_exact": v for k, v in agreement.items()},
    )
    report.add(
        "TAG's lookahead affinities",
        f"{ratio['tag']:.2f} x plain",
        "",
        ratio=ratio["tag"],
        iqr=iqr["tag"],
    )

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
    report.add(
        "TaskGrouping-Digits10-v1, table mode", f"{rate:,.0f} steps/s", ">= 10,000", rate=rate
    )


if __name__ == "__main__":
    main()
