"""How often the tables' "95%" IQM interval holds the true IQM, by number of seeds.

    python scripts/bootstrap_coverage.py [--seeds 3 4 5 10] [--trials 1000] [--reps 2000]

Draws ``--trials`` samples of n runs from a standard normal population (its IQM, like its
mean and median, is 0), computes each sample's interval as ``mtl-envs compare`` does
(:func:`harness.compare.interval_estimates`, rliable's percentile bootstrap) and prints the
share of intervals that hold 0, with the exact (Clopper-Pearson) 95% interval of that share.
The shortfall at small n is why tables give the interval only from
:data:`harness.compare.MIN_INTERVAL_SEEDS` seeds on.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import binomtest

from harness.compare import MIN_INTERVAL_SEEDS, interval_estimates


def coverage(n: int, trials: int, reps: int, seed: int = 0) -> tuple[int, int]:
    """Intervals of ``trials`` normal samples of ``n`` runs that hold the true IQM (0)."""
    rng = np.random.default_rng(seed)
    held = 0
    for trial in range(trials):
        sample = rng.normal(size=n).tolist()
        _, low, high = interval_estimates({"x": sample}, reps=reps, seed=trial)["x"]
        held += low <= 0.0 <= high
    return held, trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5, 10])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    args = parser.parse_args(argv)
    for name in ("trials", "reps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive int; got {getattr(args, name)}")
    if min(args.seeds) < 2:
        parser.error(f"--seeds must each be 2 or more (an interval needs spread); got {args.seeds}")
    print(f"seeds  held / trials  coverage [exact 95% CI]   (tables need {MIN_INTERVAL_SEEDS}+)")
    for n in args.seeds:
        held, trials = coverage(n, args.trials, args.reps)
        ci = binomtest(held, trials).proportion_ci(0.95)
        print(f"{n:>5}  {held:>5} / {trials:<6}  {held / trials:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
