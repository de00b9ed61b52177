"""Comparisons of results: per-method tables over seeds (mean +- std, IQM with 95% bootstrap
intervals and the probability of improvement from rliable, normalised scores, Δm and T for
multi-task results) and plots."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.results import default_metric, portable_kwargs
from mtl_envs.errors import ConfigError
from mtl_envs.families import higher_is_better
from mtl_envs.io import atomic_save
from mtl_envs.utils import suggest

# Bootstrap resamples of the intervals: rliable's default for its interval estimates.
BOOTSTRAP_REPS = 50_000
CONFIDENCE = 0.95
# The fewest runs a side for a bootstrap interval (an IQM's, a probability of improvement's).
# A percentile bootstrap of a few runs covers less than it says: its "95%" interval holds the
# true IQM of a normal population in 76% of samples of 3 runs, 90% of 5 and 93% of 10
# (scripts/bootstrap_coverage.py, 1,000 samples each). Below this, tables give the mean +-
# std (and seed-paired wins, whose exact interval holds at any n), not an interval.
MIN_INTERVAL_SEEDS = 5


@contextlib.contextmanager
def _numpy_seed(seed: int):
    """Seed NumPy's global generator for a block and put its state back afterwards:
    rliable's stratified bootstrap draws its resampling indices from ``np.random``
    whatever ``random_state`` it is given, so this is the stream its intervals come from."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def iqm(scores: np.ndarray) -> float:
    """The interquartile mean over all runs and tasks: rliable's ``aggregate_iqm``, scipy's
    ``trim_mean`` cutting 25% at each end, computed the same way (the same partition, so the
    same float result) without scipy's per-call argument handling, which dominates a
    bootstrap of a few runs. A NaN score gives NaN, as scipy's does."""
    return float(_iqm_rows(np.ravel(np.asarray(scores, dtype=float))[None, :])[0])


def _iqm_rows(rows: np.ndarray) -> np.ndarray:
    """:func:`iqm` of each row of a 2-d array."""
    size = rows.shape[1]
    cut = int(0.25 * size)
    kept = np.partition(rows, (cut, size - cut - 1), axis=1)[:, cut : size - cut]
    return np.where(np.isnan(rows).any(axis=1), np.nan, kept.mean(axis=1))


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 per task, averaged over tasks: rliable's
    ``probability_of_improvement``, the Mann-Whitney U of X over Y divided by
    ``n_x * n_y``, counted over all pairs of runs instead of from scipy's rank sums (the
    same half-integer count, so the same float result). A task with a NaN score gives NaN,
    as scipy's test does."""
    x, y = np.asarray(scores_x, dtype=float), np.asarray(scores_y, dtype=float)
    greater = (x[:, None, :] > y[None, :, :]).sum(axis=(0, 1))
    ties = (x[:, None, :] == y[None, :, :]).sum(axis=(0, 1))
    per_task = (greater + 0.5 * ties) / (x.shape[0] * y.shape[0])
    per_task = np.where(np.isnan(x).any(axis=0) | np.isnan(y).any(axis=0), np.nan, per_task)
    return float(np.mean(per_task))


@functools.lru_cache(maxsize=8)
def _resample_indices(sizes: tuple[int, ...], reps: int, seed: int) -> list[np.ndarray]:
    """The run indices of ``reps`` bootstrap resamples of inputs with ``sizes`` runs, one
    ``(reps, n)`` array per input, drawn as rliable's stratified bootstrap draws them after
    ``np.random.seed(seed)``: for each resample, each input's runs in turn with
    ``np.random.choice(n, n)`` (``randint(0, n, n)``). Inputs of one size share the draws'
    bound, so one ``randint`` call gives the same stream; inputs of several sizes are
    replayed from the generator's raw stream by :func:`_replay_bounded_draws`.

    A table's rows share sizes, reps and seed, so the draws are kept for the next call (read
    only: callers index with them)."""
    with _numpy_seed(seed):
        if len(set(sizes)) == 1:
            drawn = np.random.randint(0, sizes[0], size=(reps, sizes[0] * len(sizes)))
            indices = np.split(drawn, len(sizes), axis=1)
        else:
            indices = _replay_bounded_draws(list(sizes), reps)
    for index in indices:
        index.flags.writeable = False
    return indices


def _replay_bounded_draws(
    sizes: list[int], reps: int, pool_size: int | None = None
) -> list[np.ndarray]:
    """What ``[[np.random.randint(0, n, size=n) for n in sizes] for _ in range(reps)]``
    draws, stacked per input, without a Python call per draw (which took seconds at
    rliable's 50,000 resamples).

    NumPy's legacy ``randint(0, n)`` draws ``u & mask`` from 32-bit outputs ``u`` of the
    Mersenne Twister, ``mask`` the smallest all-ones number >= ``n - 1``, and rejects values
    above ``n - 1``; ``n = 1`` consumes nothing. So a block of ``n`` draws starting at
    output ``p`` is the next ``n`` accepted outputs of ``n``'s bound, and where it ends is a
    function of ``p`` computed for every ``p`` at once. Composing those functions over the
    inputs gives one resample's step; only the resamples' start positions are walked one at
    a time. ``pool_size`` (outputs drawn at first) defaults to what the draws are expected to
    use and a margin; the pool doubles while the draws need more. A test checks the result
    against the per-call draws."""
    drawn = [n for n in sizes if n > 1]
    if pool_size is None:  # (mask + 1) / n outputs per draw are expected
        expected = reps * sum((1 << (n - 1).bit_length()) for n in drawn)
        pool_size = expected + expected // 50 + 64
    pool = np.random.randint(0, 2**32, size=pool_size, dtype=np.uint32)
    while True:
        end = pool.size
        # Per size: accepted outputs before output p (an index into ``values``) and the
        # output after n draws starting at p (``end`` where the pool runs out).
        first, after, values = {}, {}, {}
        for n in set(drawn):
            masked = pool & np.uint32((1 << (n - 1).bit_length()) - 1)
            accepted = masked <= n - 1
            first[n] = np.concatenate([[0], np.cumsum(accepted)])
            where = np.concatenate([np.flatnonzero(accepted), np.full(n, end)])
            after[n] = np.minimum(where[first[n] + n - 1] + 1, end)
            values[n] = masked[accepted].astype(np.int64)
        step = np.arange(end + 1)
        for n in drawn:
            step = after[n][step]
        walk, position, starts = step.tolist(), 0, []
        for _ in range(reps):
            starts.append(position)
            position = walk[position]
        if position < end:  # the last resample's draws lie inside the pool
            break
        pool = np.concatenate([pool, np.random.randint(0, 2**32, size=end, dtype=np.uint32)])
    out, position = [], np.asarray(starts)
    for n in sizes:
        if n == 1:
            out.append(np.zeros((reps, 1), dtype=np.int64))
            continue
        out.append(values[n][first[n][position][:, None] + np.arange(n)])
        position = after[n][position]
    return out


def _percentile_interval(values: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap estimates, as arch's ``conf_int`` computes
    it for rliable (``method="percentile"``)."""
    alpha = (1.0 - CONFIDENCE) / 2
    low, high = np.percentile(values, [100 * alpha, 100 * (1.0 - alpha)])
    return float(low), float(high)


def interval_estimates(
    scores: dict[str, list[float]], reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Interquartile mean over runs with a 95% percentile-bootstrap interval (Agarwal et al.
    2021), per method: ``{method: (iqm, low, high)}``.

    One task, so rliable's stratified bootstrap resamples runs. The numbers are those of
    ``rliable.library.get_interval_estimates(..., reps=reps)`` called on the method alone
    after ``np.random.seed(seed)`` (a test checks them against rliable), drawn at once instead
    of one Python call per resample, which made 50,000 resamples too slow to render the
    docs. Every method's resamples start from ``seed``, so its interval is a function of its
    own scores: the same runs give the same interval in any table."""
    out = {}
    for method, values in scores.items():
        runs = np.asarray(values, dtype=float).ravel()
        (index,) = _resample_indices((runs.size,), reps, seed)
        out[method] = (iqm(runs), *_percentile_interval(_iqm_rows(runs[index])))
    return out


def normalized_interval(
    values: list[float],
    random_values: list[float],
    best_values: list[float],
    reps: int = BOOTSTRAP_REPS,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the normalised IQM
    ``(IQM(values) - mean(random)) / (mean(best) - mean(random))`` with the scale's two ends
    resampled beside the method's runs: each resample draws the method's runs, the random
    reference policy's and the best one's, independently and with replacement, as a
    stratified bootstrap draws several inputs. The interval of :func:`interval_estimates`
    mapped onto the scale holds the method's seeds only; this one holds the ends' seeds too,
    which matters where the reference policies lie close together (the ends are means of a
    few seeds each)."""
    runs, low, high = (
        np.asarray(v, dtype=float).ravel() for v in (values, random_values, best_values)
    )
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, a.size, size=(reps, a.size)) for a in (runs, low, high)]
    ends = [a[index].mean(axis=1) for a, index in zip((low, high), draws[1:])]
    return _percentile_interval((_iqm_rows(runs[draws[0]]) - ends[0]) / (ends[1] - ends[0]))


@functools.lru_cache(maxsize=8)
def _resample_counts(sizes: tuple[int, ...], reps: int, seed: int) -> list[np.ndarray]:
    """How often each run is drawn in each resample of :func:`_resample_indices`: one
    ``(reps, n)`` float array per input (read only, kept for the next call)."""
    counts = []
    for index, n in zip(_resample_indices(sizes, reps, seed), sizes):
        rows = np.arange(reps)[:, None] * n
        drawn = np.bincount((index + rows).ravel(), minlength=reps * n).reshape(reps, n) * 1.0
        drawn.flags.writeable = False
        counts.append(drawn)
    return counts


def improvement_probability(
    x: list[float], y: list[float], higher: bool = True, reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> tuple[float, float, float]:
    """P(X > Y) (Mann-Whitney; ties count half) of a run of X beating one of Y, with a 95%
    bootstrap interval; ``higher=False`` compares ``-x`` with ``-y``.

    The numbers of rliable's ``get_interval_estimates`` with ``probability_of_improvement``
    (X and Y resampled independently) after ``np.random.seed(seed)``, drawn at once as in
    :func:`interval_estimates` (a test checks them against rliable)."""
    sign = 1.0 if higher else -1.0
    xs, ys = sign * np.asarray(x, dtype=float).ravel(), sign * np.asarray(y, dtype=float).ravel()
    # A resample's count of pairs won (ties half) is c_x' W c_y: W[i, j] scores run i of X
    # against run j of Y, c_x and c_y count how often the resample drew each run. The counts
    # are half-integers, exact in floating point, so this equals counting pair by pair.
    wins = (xs[:, None] > ys[None, :]) + 0.5 * (xs[:, None] == ys[None, :])
    drawn_x, drawn_y = _resample_counts((xs.size, ys.size), reps, seed)
    values = ((drawn_x @ wins) * drawn_y).sum(axis=1) / (xs.size * ys.size)
    if np.isnan(xs).any() or np.isnan(ys).any():
        values[:] = np.nan
    point = probability_of_improvement(xs[:, None], ys[:, None])
    return (point, *_percentile_interval(values))


def same_seed_wins(
    x: dict[int, float], y: dict[int, float], higher: bool = True
) -> dict[str, Any] | None:
    """The seed-paired comparison of X and Y: on the seeds both ran, how often X beats Y.

    Where runs of one seed share what the seed sets (the data split and order, the initial
    network), comparing seed by seed removes that shared part of the noise, which the
    unpaired :func:`improvement_probability` keeps. Returns ``wins``, ``ties``, ``nan`` (seeds
    where either score is NaN, a diverged run's: left out, as neither side's win) and
    ``seeds`` (counts), ``p``: the share of the decided seeds where X wins, with ``ci``, its exact
    (Clopper-Pearson) 95% interval, and ``sign_test_p``, the two-sided sign test of
    ``p = 1/2``; ``None`` without a common seed. Unlike a bootstrap interval, which is
    [1, 1] whenever X wins every seed, the exact interval says how many seeds that took
    (10 of 10: [0.69, 1])."""
    from scipy.stats import binomtest

    seeds = sorted(set(x) & set(y))
    if not seeds:
        return None
    sign = 1.0 if higher else -1.0
    diffs = [sign * (float(x[s]) - float(y[s])) for s in seeds]
    nan = sum(math.isnan(d) for d in diffs)
    wins, ties = sum(d > 0 for d in diffs), sum(d == 0 for d in diffs)
    decided = len(seeds) - ties - nan
    p, low, high, pvalue = math.nan, math.nan, math.nan, math.nan
    if decided:
        test = binomtest(wins, decided)
        interval = test.proportion_ci(0.95, method="exact")
        p, low, high = wins / decided, float(interval.low), float(interval.high)
        pvalue = float(test.pvalue)
    return {
        "wins": wins,
        "ties": ties,
        "nan": nan,
        "seeds": len(seeds),
        "p": p,
        "ci": [low, high],
        "sign_test_p": pvalue,
    }


def same_seed_text(paired: dict[str, Any] | None) -> str:
    """``9/10 [0.55, 1.00]``: X's wins of the decided common seeds (ties and NaN scores named
    apart) and the exact 95% interval of its share."""
    if paired is None:
        return "- (no common seed)"
    nan = paired.get("nan", 0)
    decided = paired["seeds"] - paired["ties"] - nan
    apart = [f"{paired['ties']} tied"] * bool(paired["ties"]) + [f"{nan} NaN"] * bool(nan)
    note = f" ({', '.join(apart)})" if apart else ""
    if not decided:
        return f"0/0{note}"
    low, high = paired["ci"]
    return f"{paired['wins']}/{decided}{note} [{low:.2f}, {high:.2f}]"


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std; one value has no std (NaN, which tables print as ``n/a``)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines: the header, its rule and one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def natural_key(text: str) -> list[Any]:
    """Sort key that orders the numbers in ``text`` by value: ``B=2`` before ``B=10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _row_env(result: dict[str, Any]) -> str:
    """A result's row name: its env id, split by its "setting" (a grouping budget, with or
    without metadata) and "variant" (a sweep's overrides)."""
    parts = (result["env_id"], result.get("setting"), result.get("variant"))
    return " ".join(str(x) for x in parts if x)


def _time_reference(result: dict[str, Any]) -> tuple[Any, ...]:
    """What the EW run that T divides by shares with ``result``: the seed, env id, setting,
    epochs and env kwargs, except the gradient aggregator, which IGB counts as part of the
    method (Table 1 gives MGDA's T and IGBv1 + MGDA's against plain EW)."""
    config = result.get("config", {})
    kwargs = portable_kwargs(config.get("env_kwargs", {}))
    kwargs.pop("aggregator", None)
    return (
        result["seed"],
        result["env_id"],
        result.get("setting"),
        config.get("epochs"),
        json.dumps(kwargs, sort_keys=True, default=str),
    )


def _plain_ew(results: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The plain EW runs (no gradient aggregator) by :func:`_time_reference`: T's divisors."""
    return {
        _time_reference(r): r
        for r in results
        if r["method"] == "ew" and not r.get("config", {}).get("env_kwargs", {}).get("aggregator")
    }


def pair_spec(spec: str) -> tuple[str, str | None]:
    """``"hypernet@metadata"`` -> ``("hypernet", "metadata")``: a method and, optionally, the
    setting or sweep variant its runs come from (``"ew"`` -> ``("ew", None)``)."""
    method, _, where = spec.partition("@")
    return method, where or None


def check_pairs(results: list[dict[str, Any]], pairs: list[str]) -> None:
    """``ConfigError`` for a ``pairs`` entry that is not ``"X:Y"`` with X and Y methods of
    ``results``, naming the closest method. ``"X@A:Y@B"`` compares runs of setting or
    variant A with runs of B (the hypernetwork with and without metadata); both sides then
    name one."""
    everywhere = {r["method"] for r in results}
    for pair in pairs:
        x, _, y = pair.partition(":")
        (xm, xw), (ym, yw) = pair_spec(x), pair_spec(y)
        if not xm or not ym or xm not in everywhere or ym not in everywhere:
            unknown = next((m for m in (xm, ym) if m and m not in everywhere), "")
            raise ConfigError(
                f"`pairs` entry {pair!r} must be 'X:Y' with X and Y methods of these results."
                f"{suggest(unknown, sorted(everywhere)) if unknown else ''} "
                f"Methods: {sorted(everywhere)}."
            )
        if (xw is None) != (yw is None):
            raise ConfigError(
                f"`pairs` entry {pair!r} names a setting on one side only: write 'X@A:Y@B' to "
                "compare runs of two settings or variants, or 'X:Y' within each."
            )
        for method, where in ((xm, xw), (ym, yw)):
            labels = sorted(
                {
                    str(r.get(k))
                    for r in results
                    if r["method"] == method
                    for k in ("setting", "variant")
                    if r.get(k)
                }
            )
            if where is not None and where not in labels:
                raise ConfigError(
                    f"`pairs` entry {pair!r}: {method} has no runs of setting or variant "
                    f"{where!r}.{suggest(where, labels)} Its settings and variants: {labels}."
                )


def _pair_groups(
    results: list[dict[str, Any]], pair: str
) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Row name -> (X's runs, Y's runs) for the rows that hold both: within each row (env
    id, setting, variant) for ``"X:Y"``, across one env id's settings for ``"X@A:Y@B"``."""
    x, _, y = pair.partition(":")
    sides = (pair_spec(x), pair_spec(y))
    across = sides[0][1] is not None
    groups: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for r in results:
        for side, (method, where) in enumerate(sides):
            if r["method"] == method and (
                not across or where in (r.get("setting"), r.get("variant"))
            ):
                groups[r["env_id"] if across else _row_env(r)][side].append(r)
    return {row: runs for row, runs in groups.items() if runs[0] and runs[1]}


def by_metric(
    results: list[dict[str, Any]], metric: str | None = None, which: str = "final"
) -> dict[str, list[dict[str, Any]]]:
    """``results`` grouped by the metric their table reads: ``metric`` for all of them, or
    else each env id's headline metric (a sweep over a classification and a regression id
    gives two tables)."""
    if metric is not None:
        return {metric: list(results)}
    by_env: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_env[r["env_id"]].append(r)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for runs in by_env.values():
        groups[default_metric(runs, which)].extend(runs)
    return dict(groups)


def format_pairs(
    results: list[dict[str, Any]],
    pairs: list[str],
    metric: str | None = None,
    which: str = "final",
) -> str:
    """The comparisons a claim names, ``"X:Y"`` each (or ``"X@A:Y@B"``, :func:`check_pairs`):
    per env id that holds both methods,
    the probability that a run of X beats a run of Y (higher or lower ``metric`` as it
    reads) with its 95% bootstrap interval from :data:`MIN_INTERVAL_SEEDS` or more seeds
    each, and X's wins over Y
    seed by seed on their common seeds with the exact interval (:func:`same_seed_wins`), as
    a markdown table. The seeds column counts diverged runs, which keep their scores."""
    metric = metric or default_metric(results, which)
    higher = higher_is_better(metric)
    check_pairs(results, pairs)

    def label(group: list[dict[str, Any]], spec: str) -> str:
        return f"{spec} [oracle]" if any(r.get("oracle") for r in group) else spec

    def count(group: list[dict[str, Any]]) -> str:
        diverged = sum(r.get("status") == "diverged" for r in group)
        return f"{len(group)}" + (f" ({diverged} diverged)" if diverged else "")

    groups = {pair: _pair_groups(results, pair) for pair in pairs}
    rows = []
    for env in sorted({row for g in groups.values() for row in g}, key=natural_key):
        for pair in pairs:
            if env not in groups[pair]:
                continue
            a, b = groups[pair][env]
            if min(len(a), len(b)) < MIN_INTERVAL_SEEDS:
                cell = f"- ({MIN_INTERVAL_SEEDS}+ seeds each)"
            else:
                scores = [[float(r[which][metric]) for r in group] for group in (a, b)]
                p, low, high = improvement_probability(*scores, higher)
                cell = f"{p:.2f} [{low:.2f}, {high:.2f}]"
            seeds = [[r["seed"] for r in group] for group in (a, b)]
            twice = sorted({s for group in seeds for s in group if group.count(s) > 1})
            if twice:  # two result folders with the same seeds: no one pairing
                paired = f"- (seed {twice[0]} twice)"
            else:
                by_seed = [{r["seed"]: float(r[which][metric]) for r in g} for g in (a, b)]
                paired = same_seed_text(same_seed_wins(*by_seed, higher))
            x, _, y = pair.partition(":")
            rows.append(
                [env, f"{label(a, x)} vs {label(b, y)}", cell, paired, f"{count(a)} / {count(b)}"]
            )
    better = "higher" if higher else "lower"
    where = " at the best-validation epoch" if which == "best" else ""
    header = [
        "env_id",
        "X vs Y",
        f"P(X beats Y) [95% CI], {metric}{where} {better} is better",
        "same seed: X wins [exact 95% CI]",
        "seeds",
    ]
    return "\n".join(markdown_table(header, rows)) + "\n"


def summarize(
    results: list[dict[str, Any]],
    metric: str | None = None,
    which: str = "final",
    baseline: str | None = None,
) -> list[dict[str, Any]]:
    """Per (env_id, method): mean and std over seeds of ``metric``, wall time, and for
    multi-task results Δm against ``stl`` on the same seed (IGB eq. 5; its row's STL run, else
    the one with the same env kwargs but for the aggregator) and T, the training time relative
    to plain ``ew`` on the same seed (no gradient aggregator: in a sweep's ``aggregator=...``
    row, T prices the aggregator as well, as IGB's Table 1 does); per-task means when there
    are at most 10 tasks.

    With :data:`MIN_INTERVAL_SEEDS` or more seeds a row also holds the interquartile mean
    with its 95% bootstrap
    interval (``iqm``, ``iqm_low``, ``iqm_high``), and, against ``baseline`` (default:
    ``random`` if present, else ``stl``), the probability that a run of the method beats a
    run of the baseline (``p_improve`` with ``p_low``, ``p_high``). ``oracle`` marks methods
    whose results say they read test data.
    """
    from mtl_envs.training.metrics import delta_m

    if which not in ("final", "best"):
        raise ConfigError(f"`which` must be one of ['final', 'best']; got {which!r}.")
    metric = metric or default_metric(results, which)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(_row_env(r), r["method"])].append(r)
    plain_ew = _plain_ew(results)
    # STL trains one task per network, so no aggregator changes it: a row of a sweep's
    # aggregator (or method-option) variant takes Δm against the STL run of the same seed and
    # env kwargs in another row when its own row has none.
    any_stl = {_time_reference(r): r for r in results if r["method"] == "stl"}
    rows = []
    for (env_id, method), runs in sorted(
        groups.items(), key=lambda item: (natural_key(item[0][0]), item[0][1])
    ):
        available = sorted(runs[0][which])
        if metric not in runs[0][which]:
            raise ConfigError(
                f"Unknown metric {metric!r} for {env_id}'s {method} results."
                f"{suggest(metric, available)} Valid: {available}."
            )
        mean, std = _mean_std([float(r[which][metric]) for r in runs])
        row: dict[str, Any] = {
            "env_id": env_id,
            "method": method,
            "metric": metric,
            "which": which,
            "mean": mean,
            "std": std,
            "sem": std / math.sqrt(len(runs)),
            "n": len(runs),
            "wall_time_s": sum(float(r.get("wall_time_s", 0.0)) for r in runs) / len(runs),
        }
        stl = {r["seed"]: r for r in groups.get((env_id, "stl"), [])}
        deltas = []
        for r in runs:
            reference = stl.get(r["seed"]) or any_stl.get(_time_reference(r))
            if reference is not None:
                try:
                    test_only = {k: v for k, v in reference[which].items() if k.startswith("test/")}
                    deltas.append(delta_m(r[which], test_only))
                except ValueError:
                    break  # single-task results (AuxLabel): no per-task metrics
        if deltas:
            row["delta_m"], row["delta_m_std"] = _mean_std(deltas)
            row["delta_m_n"] = len(deltas)  # the seeds with an STL run of their own
        references = [(r, plain_ew.get(_time_reference(r))) for r in runs]
        ratios = [
            r["train_time_s"] / ew["train_time_s"]
            for r, ew in references
            if ew is not None and r.get("train_time_s") and ew.get("train_time_s")
        ]
        if ratios and method != "stl":
            row["T"] = sum(ratios) / len(ratios)
            row["T_n"] = len(ratios)  # the seeds with a plain EW run of their own
        suffix = metric.rsplit("_", 1)[-1] if metric.split("/")[-1].startswith("mean_") else None
        tasks = sorted(
            {
                k.split("/")[1]
                for k in runs[0][which]
                if suffix and k.count("/") == 2 and k.endswith("/" + suffix)
            }
        )
        if 0 < len(tasks) <= 10:
            row["tasks"] = {
                t: _mean_std([float(r[which][f"test/{t}/{suffix}"]) for r in runs])[0]
                for t in tasks
            }
        row["oracle"] = any(bool(r.get("oracle")) for r in runs)
        # A diverged run keeps its (NaN or poor) score in the row, and the row says so.
        row["diverged"] = sum(r.get("status") == "diverged" for r in runs)
        row["values"] = [float(r[which][metric]) for r in runs]
        row["reference_protocol"] = all(on_reference_protocol(r) for r in runs)
        rows.append(row)
    _add_intervals(rows, baseline)
    return rows


TIMING_FIELDS = ("cpu", "torch_threads")


def _timing_conditions(result: dict[str, Any]) -> dict[str, Any]:
    """What a run's time depends on beyond its work: the processor, torch's threads and
    how many runs shared the machine (``"not recorded"`` for results from before it was)."""
    platform = result.get("platform", {})
    return {
        **{k: platform.get(k, "not recorded") for k in TIMING_FIELDS},
        "concurrent_runs": result.get("concurrent_runs", "not recorded"),
    }


def timing_differences(results: list[dict[str, Any]]) -> list[str]:
    """One line per table row whose T (a mean of per-seed time ratios to plain EW) holds a
    ratio of two runs timed under different conditions (processor, torch threads, runs
    sharing the machine), or of runs that shared the machine with others (a sweep's
    workers, a Ray cluster): another run's load then sits in the ratio."""
    plain_ew = _plain_ew(results)
    unlike: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    shared: dict[str, set[str]] = defaultdict(set)
    for r in results:
        ew = plain_ew.get(_time_reference(r))
        if (
            ew is None
            or ew is r  # EW's own T is 1 by definition
            or r["method"] == "stl"
            or not (r.get("train_time_s") and ew.get("train_time_s"))
        ):
            continue
        row = f"{_row_env(r)} {r['method']}"
        mine, theirs = _timing_conditions(r), _timing_conditions(ew)
        for key in mine:
            if mine[key] != theirs[key]:
                unlike[row][key].add(f"{mine[key]} against {theirs[key]}")
        for conditions in (mine, theirs):
            if conditions["concurrent_runs"] not in (1, "not recorded"):
                shared[row].add(str(conditions["concurrent_runs"]))
    lines = []
    for row in sorted(set(unlike) | set(shared)):
        if row in unlike:
            parts = "; ".join(
                f"{key} {', '.join(sorted(pairs))}" for key, pairs in sorted(unlike[row].items())
            )
            lines.append(
                f"{row}: T divides times measured under other conditions than EW's ({parts})."
            )
        if row in shared:
            lines.append(
                f"{row}: T divides times of runs that shared the machine (concurrent runs "
                f"{', '.join(sorted(shared[row]))}; None: not known): their neighbours' load "
                "is in it."
            )
    return lines


def protocol_differences(results: list[dict[str, Any]]) -> list[str]:
    """One line per table row group (env id, setting, variant) whose runs trained for
    different numbers of epochs or with different env kwargs (the data folder aside): a
    comparison across them mixes protocols. Methods' own options (``agent``,
    ``method_kwargs``) may differ; runs without a kept config are left out."""
    by_row: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in results:
        config = r.get("config")
        if not config:
            continue
        kwargs = portable_kwargs(config.get("env_kwargs", {}))
        protocol = f"epochs {config.get('epochs')}" + (
            f", env_kwargs {json.dumps(kwargs, sort_keys=True)}" if kwargs else ""
        )
        by_row[_row_env(r)][protocol].add(r["method"])
    lines = []
    for row, protocols in sorted(by_row.items()):
        if len(protocols) > 1:
            parts = "; ".join(
                f"{', '.join(sorted(methods))}: {protocol}"
                for protocol, methods in sorted(protocols.items())
            )
            lines.append(f"{row}: runs of different protocols are compared ({parts}).")
    return lines


def on_reference_protocol(result: dict[str, Any]) -> bool:
    """Whether a run trained under the protocol its id's reference scores were measured
    with (env kwargs, a grouping run's budget, and run length: the registered epochs where
    an episode is the run, the probe's episodes where an episode is an epoch), so that its
    normalised score means what the scale says. Runs without a kept config, or without an
    epoch history (whole episodes of the registered length), are taken as matching."""
    from gymnasium import error, spec

    from mtl_envs.families import family_of
    from mtl_envs.scores import reference_ids, reference_scores

    env_id, config = result["env_id"], result.get("config")
    if env_id not in reference_ids() or not config:
        return True
    protocol = reference_scores(env_id).get("protocol", {})
    kwargs = portable_kwargs(config.get("env_kwargs", {}))
    if kwargs != protocol.get("env_kwargs", {}):
        return False
    try:
        family, registered = family_of(env_id), spec(env_id).kwargs.get("epochs")
        budget = {**spec(env_id).kwargs, **protocol.get("env_kwargs", {})}.get("budget")
    except (ConfigError, error.Error):
        return True
    # A grouping method writes one result per budget (setting "B=k"); the references were
    # measured at the id's own budget.
    setting = str(result.get("setting") or "")
    if budget is not None and setting.startswith("B=") and setting != f"B={budget}":
        return False
    if family.episode_is_run:
        # Runs scored from whole episodes (an agent trained over several) keep no epoch
        # history: the config's `epochs` did not set their length, the env's did.
        if registered is None or not result.get("epochs"):
            return True
        return config.get("epochs", registered) == registered
    return config.get("epochs") == protocol.get("episodes", config.get("epochs"))


def _add_normalized(row: dict[str, Any]) -> None:
    """The IQM and its interval on the env id's reference scale (random 0, best 1), where
    the package has reference scores for this id and metric, the runs trained under their
    protocol (:func:`on_reference_protocol`) and the row scores the final network, as the
    references do."""
    from mtl_envs.scores import normalized_score, reference_ids, reference_scores

    env_id = row["env_id"].split(" ")[0]
    if env_id not in reference_ids() or reference_scores(env_id)["metric"] != row["metric"]:
        return
    if not row.get("reference_protocol", True):
        return
    if row.get("which", "final") != "final":  # the references score the final network
        return
    iqm, low, high = (normalized_score(env_id, row[k]) for k in ("iqm", "iqm_low", "iqm_high"))
    row["normalized"] = [iqm, min(low, high), max(low, high)]  # lower-is-better flips them
    scores = reference_scores(env_id)
    ends = [scores["policies"][scores[end]].get("values") for end in ("random", "best")]
    if all(ends):  # reference scores kept with their runs' values
        row["normalized_ends"] = list(normalized_interval(row["values"], *ends))


def check_baseline(results: list[dict[str, Any]], baseline: str | None) -> None:
    """``ConfigError`` when ``baseline`` is named but no result (or row) has that method."""
    methods_present = sorted({r["method"] for r in results})
    if baseline is not None and results and baseline not in methods_present:
        hint = suggest(baseline, methods_present)
        raise ConfigError(
            f"`baseline` {baseline!r} is not a method of these results.{hint} "
            f"Methods: {methods_present}."
        )


def _add_intervals(rows: list[dict[str, Any]], baseline: str | None) -> None:
    """IQM intervals per row and P(improvement) over the env's baseline row, for rows of
    :data:`MIN_INTERVAL_SEEDS` or more seeds."""
    check_baseline(rows, baseline)
    by_env: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_env[row["env_id"]][row["method"]] = row
    for methods in by_env.values():
        enough = {
            m: r["values"] for m, r in methods.items() if len(r["values"]) >= MIN_INTERVAL_SEEDS
        }
        if not enough:
            continue
        for m, (iqm, low, high) in interval_estimates(enough).items():
            methods[m].update(iqm=iqm, iqm_low=low, iqm_high=high)
            _add_normalized(methods[m])
        reference = baseline or next((b for b in ("random", "stl") if b in enough), None)
        if reference not in enough:
            continue
        higher = higher_is_better(methods[reference]["metric"])
        for m, values in enough.items():
            if m == reference:
                continue
            p, low, high = improvement_probability(values, enough[reference], higher)
            methods[m].update(p_improve=p, p_low=low, p_high=high, baseline=reference)


SPREADS = ("std", "sem")


def method_label(row: dict[str, Any]) -> str:
    """The method's name, marked when it read test data."""
    return f"{row['method']} [oracle]" if row.get("oracle") else row["method"]


def is_percent(metric: str) -> bool:
    """Whether tables show ``metric`` (a fraction) in percent: accuracies and the like."""
    return metric.endswith(("accuracy", "precision", "recall", "f1"))


def format_value(metric: str, value: float) -> str:
    """One value of ``metric`` as tables show it: ``"28.53 %"`` or ``"0.1418"``."""
    return f"{100 * value:.2f} %" if is_percent(metric) else f"{value:.4f}"


def format_table(rows: list[dict[str, Any]], spread: str = "std") -> str:
    """A plain-text table: env, method, mean +- spread (standard deviation over seeds, or
    ``"sem"``, the standard error), per-task means, Δm, T, seeds (``"5 (all equal)"`` where
    every seed gave the same value), wall time."""
    if spread not in SPREADS:
        raise ConfigError(f"`spread` must be one of {list(SPREADS)}; got {spread!r}.")
    if not rows:
        return "(no results)"
    metric = rows[0]["metric"]
    percent = is_percent(metric)
    task_names = sorted({t for r in rows for t in r.get("tasks", {})})
    unit = " %" if percent else ""
    where = " at the best-validation epoch" if rows[0].get("which") == "best" else ""
    header = ["env_id", "method", f"{metric}{unit}{where} (mean +- {spread})"]
    if any("iqm" in r for r in rows):
        header.append("IQM [95% CI]")
    if any("normalized" in r for r in rows):
        header.append("normalized IQM [95% CI]")
    if any("normalized_ends" in r for r in rows):
        header.append("95% CI, ends resampled")
    references = sorted({r["baseline"] for r in rows if "p_improve" in r})
    if references:
        # One reference names the column; several (env ids whose baselines differ) name
        # their own in every cell.
        name = references[0] if len(references) == 1 else "reference"
        header.append(f"P(> {name}) [95% CI]")
    header += task_names
    if any("delta_m" in r for r in rows):
        header.append("Δm % (lower better)")
    if any("T" in r for r in rows):
        header.append("T")
    header += ["seeds", "wall time (s)"]

    def fmt(v: float) -> str:
        return f"{100 * v:.2f}" if percent else f"{v:.4f}"

    def spread_text(v: float, digits: Callable[[float], str] = fmt) -> str:
        return "n/a" if math.isnan(v) else digits(v)  # one seed: no spread

    def of_seeds(r: dict[str, Any], key: str) -> str:
        """ " (2 of 5 seeds)" where a figure comes from fewer seeds than the row has."""
        k = r.get(f"{key}_n", r["n"])
        return f" ({k} of {r['n']} seeds)" if k != r["n"] else ""

    short = f"- ({MIN_INTERVAL_SEEDS}+ seeds)"
    body = []
    for r in rows:
        cells = [r["env_id"], method_label(r), f"{fmt(r['mean'])} +- {spread_text(r[spread])}"]
        if "IQM [95% CI]" in header:
            has = "iqm" in r
            cells.append(
                f"{fmt(r['iqm'])} [{fmt(r['iqm_low'])}, {fmt(r['iqm_high'])}]" if has else short
            )
        if "normalized IQM [95% CI]" in header:
            n = r.get("normalized")
            cells.append(f"{n[0]:.2f} [{n[1]:.2f}, {n[2]:.2f}]" if n else "")
        if "95% CI, ends resampled" in header:
            e = r.get("normalized_ends")
            cells.append(f"[{e[0]:.2f}, {e[1]:.2f}]" if e else "")
        if any(h.startswith("P(> ") for h in header):
            has = "p_improve" in r
            against = f" vs {r['baseline']}" if has and len(references) > 1 else ""
            too_few = r["n"] < MIN_INTERVAL_SEEDS and r["method"] not in references
            cells.append(
                f"{r['p_improve']:.2f} [{r['p_low']:.2f}, {r['p_high']:.2f}]{against}"
                if has
                else (short if too_few else "")
            )
        cells += [fmt(r["tasks"][t]) if t in r.get("tasks", {}) else "" for t in task_names]
        if "Δm % (lower better)" in header:
            cells.append(
                f"{r['delta_m']:+.2f} +- {spread_text(r['delta_m_std'], lambda v: f'{v:.2f}')}"
                f"{of_seeds(r, 'delta_m')}"
                if "delta_m" in r
                else ""
            )
        if "T" in header:
            cells.append(f"{r['T']:.2f}{of_seeds(r, 'T')}" if "T" in r else "")
        diverged = f" ({r['diverged']} diverged)" if r.get("diverged") else ""
        # A method the seed does not change (TAG's and the exact optimum's selections from a
        # fixed table) gives one value n times: its zero-width interval measures nothing.
        values = r.get("values", [])
        same = len(values) > 1 and len(set(values)) == 1 and not math.isnan(values[0])
        cells += [f"{r['n']}{' (all equal)' if same else ''}{diverged}", f"{r['wall_time_s']:.1f}"]
        body.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def plot_summary(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Bar chart per env id, saved as PNG: Δm (%, lower is better) with its std over seeds
    where multi-task results have it (the STL reference itself is left out), otherwise the
    headline metric per method: its IQM with the 95% bootstrap interval where there are
    :data:`MIN_INTERVAL_SEEDS` or more seeds, else mean +- std. Oracle methods (which read
    test data) are hatched grey and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env_id"] for r in rows})
    fig, axes = plt.subplots(1, len(envs), figsize=(max(4, 1.3 * len(rows) + 2), 4), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        sub = [r for r in rows if r["env_id"] == env_id]
        with_dm = [r for r in sub if "delta_m" in r and r["method"] != "stl"]
        if with_dm:
            values = [r["delta_m"] for r in with_dm]
            errors = [r["delta_m_std"] for r in with_dm]
            names, label = [method_label(r) for r in with_dm], "Δm % vs STL (lower is better)"
            ax.axhline(0.0, color="black", linewidth=0.8)
        else:
            with_dm = sub
            values = [r.get("iqm", r["mean"]) for r in sub]
            errors = np.array(
                [
                    [r["iqm"] - r["iqm_low"], r["iqm_high"] - r["iqm"]]
                    if "iqm" in r
                    else [r["std"], r["std"]]
                    for r in sub
                ]
            ).T
            names = [method_label(r) for r in sub]
            has_iqm = any("iqm" in r for r in sub)
            label = rows[0]["metric"] + (" (IQM, 95% CI)" if has_iqm else " (mean +- std)")
            # One scale for every panel, so bars of different env ids compare by eye.
            # A diverged run makes its row's numbers NaN: the scale comes from the others.
            ends = [
                v
                for r in rows
                for v in (
                    r.get("iqm_low", r["mean"] - r["std"]),
                    r["mean"],
                    r.get("iqm_high", r["mean"] + r["std"]),
                )
                if math.isfinite(v)
            ] or [0.0, 1.0]
            lo, hi = min(ends), max(ends)
            pad = max(0.01, 0.15 * (hi - lo))
            ax.set_ylim(lo - pad if lo < 0 else max(0.0, lo - pad), hi + pad)
        oracle = [bool(r.get("oracle")) for r in with_dm]
        bars = ax.bar(names, values, yerr=errors, capsize=4, color="tab:blue")
        for bar, is_oracle in zip(bars, oracle):
            if is_oracle:
                bar.set_color("lightgrey")
                bar.set_hatch("//")
                bar.set_edgecolor("dimgrey")
        ax.set_title(env_id)
        ax.set_ylabel(label)
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
    fig.tight_layout()
    try:  # the temporary name ends in .tmp, so the format is given
        return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
