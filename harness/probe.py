"""Policy-sensitivity probe: does the choice of policy change the outcome of an env id?

    mtl-envs probe ENV_ID [--seeds 5] [--policies random human ...] [--episodes 10]
                   [--jobs 1] [--out FILE.json] [--extend] [--data-root DIR] [key=value ...]

Runs reference policies (``mtl_envs.envs.policies``) or any importable policy
(``package.module:Class``, built as ``Class(env, seed)``) for whole episodes through the env's
own ``step()`` and reports, per policy, the final primary test metric (mean, std, 95%
t-interval; interquartile mean with its 95% bootstrap interval), the episode return, the
*headroom* (best reference policy minus the random one, over their pooled seed std; also
without the oracle policies, which read test data), the probability that a run of the best
policy beats one of random (with its 95% bootstrap interval) and Spearman's rho
between episode return and final test metric over all distinct (policy, seed) runs: whether
the reward ranks policies as the test metric does.

One *run* per (policy, seed):

* AuxLabel: ``episodes`` epochs in ``train_agent`` mode with ``restore="none"``, i.e. one
  training run of the main network on the policy's labels with every reward computed; the
  return is the sum over the run.
* LossWeighting: one episode (the whole training run).
* TaskGrouping: one episode (the whole selection); the test metric is the selection's total
  gain on the test gains (``env.evaluate("test")``), the return its total on the reward split.

``best_fixed`` (LossWeighting) runs each constant weight vector of
:data:`~mtl_envs.envs.policies.BEST_FIXED_SCALES` and keeps, per seed, the one with the best
validation metric.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import mtl_envs  # noqa: F401  (registers the ids)
from harness.compare import (
    MIN_INTERVAL_SEEDS,
    improvement_probability,
    interval_estimates,
    same_seed_text,
    same_seed_wins,
)
from harness.results import platform_record, portable_kwargs
from mtl_envs.envs.policies import (
    BEST_FIXED_SCALES,
    REFERENCE_POLICIES,
    FixedWeights,
    ReferencePolicy,
    make_policy,
)
from mtl_envs.errors import ConfigError
from mtl_envs.families import EnvFamily, family_of, higher_is_better
from mtl_envs.io import atomic_write_json, read_json
from mtl_envs.utils import check_int, check_seeds


@dataclass
class ProbeRun:
    """One policy's whole run on one seed."""

    policy: str
    seed: int
    episode_return: float
    test: float
    val: float
    seconds: float
    oracle: bool = False
    detail: str | None = None


class _NotAPolicy(ConfigError):
    """An import-path policy built something that is no policy (not: cannot run here)."""


def policy_factory(name: str) -> Any:
    """The class (or factory) an import-path policy ``package.module:Class`` names; a
    ``ConfigError`` naming ``name`` unless it imports and is callable as ``Class(env, seed)``."""
    module, attr = name.split(":", 1)
    hint = "A custom policy is given as package.module:Class, built as Class(env, seed)."
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:  # ValueError: an empty module
        raise ConfigError(f"Policy {name!r}: {err}. {hint}") from None
    if not callable(factory):
        raise ConfigError(
            f"Policy {name!r} is of type {type(factory).__name__}, not a class. {hint}"
        )
    try:
        inspect.signature(factory).bind(None, 0)
    except TypeError:
        raise ConfigError(
            f"Policy {name!r} cannot be called as {attr}(env, seed). {hint}"
        ) from None
    except ValueError:  # no signature to read: a builtin, not a policy written in Python
        raise ConfigError(f"Policy {name!r} is a builtin, not a policy class. {hint}") from None
    return factory


def build_policy(name: str, env: Any, seed: int) -> ReferencePolicy:
    """A reference policy by name, or ``package.module:Class`` built as ``Class(env, seed)``."""
    if ":" not in name:
        return make_policy(name, env, seed)
    policy = policy_factory(name)(env, seed)
    if not callable(policy) or not callable(getattr(policy, "reset", None)):
        raise _NotAPolicy(
            f"Policy {name!r} built an object of type {type(policy).__name__}, not a policy: "
            "a policy is called on an observation for its action and has reset() (as "
            "mtl_envs.envs.policies.ReferencePolicy)."
        )
    return policy


def applicable_policies(env: Any, names: Sequence[str], defaults: bool) -> list[str]:
    """``names`` whose policy can be built on ``env`` (the human labels need CIFAR-100's fine
    labels, the optima a gain table). A default policy that cannot is left out with a
    warning; a policy the user named is a ``ConfigError`` before anything runs."""
    keep = []
    for name in names:
        if name == "best_fixed":  # the probe's own grid of constant policies: always runs
            keep.append(name)
            continue
        try:
            build_policy(name, env, 0)
        except _NotAPolicy:
            raise
        except ValueError as err:  # ConfigError included
            if not defaults:
                raise ConfigError(f"Policy {name!r} cannot run on this env: {err}") from None
            warnings.warn(f"Left out the {name} policy: {err}", stacklevel=3)
            continue
        keep.append(name)
    return keep


def run_policy(
    env_id: str,
    env_kwargs: dict[str, Any],
    policy: str,
    seed: int,
    episodes: int = 10,
    policy_kwargs: dict[str, Any] | None = None,
) -> ProbeRun:
    """Run ``policy`` through ``gym.make(env_id, **env_kwargs)`` for one whole run."""
    start = time.perf_counter()
    family = family_of(env_id)
    env = gym.make(env_id, **{**env_kwargs, **family.probe_env_kwargs})
    agent = (
        build_policy(policy, env, seed)
        if policy_kwargs is None
        else make_policy(policy, env, seed, **policy_kwargs)
    )
    total = 0.0
    for episode in range(1 if family.episode_is_run else episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        agent.reset()
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent(obs))
            total += float(reward)
            done = terminated or truncated
    unwrapped = env.unwrapped
    test, val = unwrapped.evaluate("test"), unwrapped.evaluate("val")
    metric = family.headline(test)
    env.close()
    return ProbeRun(
        policy=policy,
        seed=seed,
        episode_return=total,
        test=float(test[metric]),
        val=float(val[metric]),
        seconds=time.perf_counter() - start,
        oracle=bool(getattr(agent, "oracle", False)),
    )


def run_best_fixed(
    env_id: str, env_kwargs: dict[str, Any], seed: int, higher: bool, scales=BEST_FIXED_SCALES
) -> ProbeRun:
    """The constant weight vector ``L_base^-s`` of the grid with the best validation metric."""
    runs = [
        run_policy(env_id, env_kwargs, FixedWeights.name, seed, policy_kwargs={"scale": s})
        for s in scales
    ]
    sign = 1.0 if higher else -1.0
    best = max(range(len(runs)), key=lambda i: sign * runs[i].val)
    chosen = runs[best]
    return ProbeRun(
        policy="best_fixed",
        seed=seed,
        episode_return=chosen.episode_return,
        test=chosen.test,
        val=chosen.val,
        seconds=sum(r.seconds for r in runs),
        detail=f"scale={scales[best]}",
    )


def _interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Mean, std (ddof 1) and the 95% t-interval of the mean; one value has no spread, so
    its std and interval are NaN rather than a zero width that would claim certainty."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(x) - 1) * std / math.sqrt(len(x)))
    return mean, std, mean - half, mean + half


def _headroom_value(gap: float, pooled: float) -> float:
    """The gap in pooled standard deviations: 0 for a tie without spread, +-inf for a gap
    without spread, NaN where either is undefined (one seed, a diverged run)."""
    if math.isnan(gap) or math.isnan(pooled):
        return math.nan
    if pooled > 0:
        return gap / pooled
    return 0.0 if gap == 0 else math.copysign(math.inf, gap)


def _nan_last(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def _iqm_entry(estimate: tuple[float, float, float], n: int) -> list[float | None]:
    """``[iqm, low, high]``, the interval ``None`` below :data:`MIN_INTERVAL_SEEDS` runs."""
    value, low, high = estimate
    return [value, low, high] if n >= MIN_INTERVAL_SEEDS else [value, None, None]


def summarize_probe(runs: Sequence[ProbeRun], metric: str, random: str = "random") -> dict:
    """Per-policy statistics, the headroom over ``random`` and Spearman's rho.

    Per policy, beside the mean, std and t-interval, ``iqm`` is the interquartile mean with
    its 95% percentile-bootstrap interval (``[iqm, low, high]``, rliable, as ``mtl-envs
    compare`` reports methods). Beside each headroom (the best policy's mean minus random's,
    over their pooled std), ``p_improvement`` is the probability that a run of the best
    policy beats a run of random, ties counting one half, and ``p_improvement_ci`` its 95%
    bootstrap interval (:func:`harness.compare.improvement_probability`, as ``rliable``
    counts it). Both intervals are None below :data:`~harness.compare.MIN_INTERVAL_SEEDS`
    runs (a side), where a bootstrap covers far less than 95%; the t-interval and the exact
    seed-paired one hold at any n. P is a rank statistic, so one run far out in random's
    tail moves it by at most 1 / n, where it can halve the headroom. Runs of one seed share
    the env's seed (on LossWeighting and AuxLabel ids the network's initialisation and the
    data order; a TaskGrouping episode holds no randomness, only the random policy's draws
    vary), so ``same_seed`` compares the best policy with random seed by seed
    (:func:`harness.compare.same_seed_wins`), ``same_seed_vs`` with each other policy. The
    best policy is the one with the best mean on these same runs, so with several policies
    both comparisons lean in its favour.
    """
    from scipy.stats import spearmanr

    higher = higher_is_better(metric)
    sign = 1.0 if higher else -1.0
    tests = {
        name: [r.test for r in runs if r.policy == name]
        for name in dict.fromkeys(r.policy for r in runs)
    }
    estimates = interval_estimates(tests)
    policies: dict[str, dict[str, Any]] = {}
    for name in tests:
        mine = [r for r in runs if r.policy == name]
        mean, std, low, high = _interval([r.test for r in mine])
        ret_mean, ret_std, _, _ = _interval([r.episode_return for r in mine])
        policies[name] = {
            "mean": mean,
            "std": std,
            "ci95": [low, high],
            "n": len(mine),
            "iqm": _iqm_entry(estimates[name], len(mine)),
            "return_mean": ret_mean,
            "return_std": ret_std,
            "seconds_mean": float(np.mean([r.seconds for r in mine])),
            "oracle": any(r.oracle for r in mine),
        }
    summary: dict[str, Any] = {"metric": metric, "higher_is_better": higher, "policies": policies}
    others = {k: v for k, v in policies.items() if k != random}
    fair = {k: v for k, v in others.items() if not v["oracle"]}
    for key, pool in (("headroom", others), ("headroom_fair", fair)):
        if random not in policies or not pool:
            continue
        # A policy whose mean is NaN (a diverged run) is never the best one: max() would keep
        # it whenever it came first, since nothing compares greater than NaN.
        best = max(pool, key=lambda k: _nan_last(sign * pool[k]["mean"]))
        pooled = math.sqrt((policies[best]["std"] ** 2 + policies[random]["std"] ** 2) / 2)
        gap = sign * (policies[best]["mean"] - policies[random]["mean"])
        p, low, high = improvement_probability(tests[best], tests[random], higher)
        by_seed = [{r.seed: r.test for r in runs if r.policy == name} for name in (best, random)]
        summary[key] = {
            "best": best,
            "best_is_oracle": policies[best]["oracle"],
            "gap": gap,
            "pooled_std": pooled,
            "value": _headroom_value(gap, pooled),
            "p_improvement": p,
            # None below MIN_INTERVAL_SEEDS runs a side: a bootstrap of so few undercovers.
            "p_improvement_ci": (
                [low, high]
                if min(map(len, (tests[best], tests[random]))) >= MIN_INTERVAL_SEEDS
                else None
            ),
            "same_seed": same_seed_wins(*by_seed, higher),
            # The best policy against each other one, seed by seed: whether it leads every
            # policy or only the meaningless ones.
            "same_seed_vs": {
                name: same_seed_wins(
                    by_seed[0], {r.seed: r.test for r in runs if r.policy == name}, higher
                )
                for name in policies
                if name not in (best, random)
            },
        }
    # best_fixed repeats one of its grid's runs per seed: counting it again would weigh that
    # run twice, so rho is over the distinct runs.
    distinct = [r for r in runs if r.policy != "best_fixed"]
    returns = [r.episode_return for r in distinct]
    scores = [sign * r.test for r in distinct]
    if len(set(returns)) > 1 and len(set(scores)) > 1:
        summary["spearman_rho"] = float(spearmanr(returns, scores).statistic)
    return summary


def probe(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    policies: Sequence[str] | None = None,
    seeds: Sequence[int] = range(5),
    episodes: int = 10,
    progress: bool = True,
    jobs: int = 1,
    checkpoint: str | Path | None = None,
    extend: str | Path | None = None,
) -> dict[str, Any]:
    """Run every policy on every seed; return the runs and their summary.

    ``jobs`` > 1 runs them in that many worker processes of one torch thread each (on a
    small CPU, two one-thread runs finish sooner than two two-thread runs in turn); each run
    is seeded alike either way, and the runs keep the order of the serial probe. SIGTERM or
    Ctrl-C stops the workers with the probe.

    ``checkpoint``: a JSON file that each run is added to as it finishes. A probe started
    with the checkpoint of one that was stopped runs only the (policy, seed) runs it lacks,
    provided the checkpoint was written for the same id, env kwargs (the data folder aside),
    episodes and platform (:func:`~harness.results.platform_record`: per-seed numbers repeat
    only on the same kernels and thread count); otherwise it is started afresh. The caller
    removes the checkpoint once the probe's result is written.

    ``extend``: a finished probe result whose runs of the same protocol are taken as done,
    so that a probe with more seeds or policies runs only what is new.
    """
    from tqdm.auto import tqdm

    check_int("jobs", jobs)
    check_int("episodes", episodes)
    seeds = check_seeds("seeds", seeds)
    if policies is not None:
        repeated = [name for name, count in Counter(policies).items() if count > 1]
        if repeated:  # as check_seeds: one run counted twice in every mean and interval
            raise ConfigError(
                f"`policies` must name each policy once; {repeated[0]!r} is repeated in "
                f"{list(policies)!r}."
            )

    env_kwargs = dict(env_kwargs or {})
    family = family_of(env_id)  # an unregistered id is a ConfigError with a suggestion
    names = list(policies or family.probe_policies)
    valid = list(dict.fromkeys([*REFERENCE_POLICIES[family.name], *family.probe_policies]))
    for name in names:
        if ":" in name:
            policy_factory(name)  # imports and takes (env, seed): before any run
        elif name not in valid:
            from mtl_envs.utils import suggest

            raise ConfigError(
                f"Unknown {family.name} policy {name!r}.{suggest(name, valid)} Valid: {valid}, "
                "or package.module:Class."
            )
    env = gym.make(env_id, **env_kwargs)
    metric = _headline(env, family)
    try:
        probe_env = gym.make(env_id, **{**env_kwargs, **family.probe_env_kwargs})
        names = applicable_policies(probe_env.unwrapped, names, defaults=not policies)
        probe_env.close()
    finally:
        env.close()
    tasks = [
        (env_id, env_kwargs, name, seed, episodes, higher_is_better(metric), jobs > 1)
        for name in names
        for seed in seeds
    ]
    run_episodes = 1 if family.episode_is_run else episodes
    platform = platform_record(torch_threads=1 if jobs > 1 else None)
    book = _Checkpoint(checkpoint, env_id, env_kwargs, run_episodes, platform)
    if extend is not None and Path(extend).is_file():
        book.extend_from(extend)
    runs: list[ProbeRun | None] = [book.finished.get((task[2], task[3])) for task in tasks]
    todo = [i for i, run in enumerate(runs) if run is None]
    if progress and book.finished:
        print(f"{len(tasks) - len(todo)} of {len(tasks)} runs done already (kept runs reused)")
    bar = tqdm(
        total=len(tasks),
        initial=len(tasks) - len(todo),
        desc=f"probe {env_id}",
        disable=not progress,
    )

    def done(index: int, run: ProbeRun) -> None:
        runs[index] = run
        book.add(run)
        bar.update(1)
        bar.set_postfix({run.policy: f"{run.test:.4f}"})

    try:
        if jobs == 1:
            for i in todo:
                done(i, _probe_run(*tasks[i]))
        elif todo:
            from concurrent.futures import as_completed

            from harness.workers import process_pool

            with process_pool(min(jobs, len(todo))) as pool:
                futures = {pool.submit(_probe_run, *tasks[i]): i for i in todo}
                for future in as_completed(futures):
                    done(futures[future], future.result())
    finally:
        bar.close()
    # Runs of the same protocol that this probe did not ask for (a kept result extended with
    # fewer policies or seeds) stay in its result.
    requested = {(task[2], task[3]) for task in tasks}
    kept = [run for key, run in book.finished.items() if key not in requested]
    finished = [run for run in runs if run is not None] + kept
    all_seeds = sorted({*seeds, *(run.seed for run in kept)})
    return {
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "protocol": {"seeds": all_seeds, "episodes": run_episodes, "family": family.name},
        "runs": [asdict(r) for r in finished],
        "platform": platform,
        **summarize_probe(finished, metric),
    }


class _Checkpoint:
    """The finished runs of a probe, kept in a JSON file rewritten (atomically) after each.

    ``finished`` maps (policy, seed) to the runs a stopped probe of the same protocol left
    there; a file of another protocol is ignored, and replaced by the first run that ends.
    """

    def __init__(
        self,
        path: str | Path | None,
        env_id: str,
        env_kwargs: dict[str, Any],
        episodes: int,
        platform: dict[str, Any],
    ) -> None:
        self.path = None if path is None else Path(path)
        self.protocol = json.loads(
            json.dumps(
                {
                    "env_id": env_id,
                    "env_kwargs": portable_kwargs(env_kwargs),
                    "episodes": episodes,
                    "platform": platform,
                },
                default=str,
            )
        )
        self.runs: list[dict[str, Any]] = []
        self.finished: dict[tuple[str, int], ProbeRun] = {}
        if self.path is not None and self.path.is_file():
            self._take(self.path, lambda kept: kept, "the probe starts afresh")

    def extend_from(self, result_path: str | Path) -> None:
        """Take the runs of a finished probe result (``mtl-envs probe --out``) of the same
        protocol, where the checkpoint has none for their (policy, seed)."""

        def protocol_of(result: dict[str, Any]) -> dict[str, Any]:
            kwargs, episodes = portable_kwargs(result["env_kwargs"]), result["protocol"]["episodes"]
            return {**result, "env_kwargs": kwargs, "episodes": episodes}

        self._take(Path(result_path), protocol_of, "its runs are not reused")

    def _take(self, path: Path, as_checkpoint, fallback: str) -> None:
        try:
            kept = as_checkpoint(read_json(path))
            if {k: kept.get(k) for k in self.protocol} != self.protocol:
                raise ValueError("another protocol")
            runs = [r for r in kept["runs"] if (r["policy"], r["seed"]) not in self.finished]
            finished = {(r["policy"], r["seed"]): ProbeRun(**r) for r in runs}
        except (ConfigError, AttributeError, KeyError, TypeError, ValueError):
            # Corrupt, edited, of another layout or of another protocol: nothing in it is used.
            warnings.warn(
                f"{path} is unreadable or holds runs of another protocol (id, env kwargs, "
                f"episodes or platform); {fallback}.",
                stacklevel=4,
            )
            return
        self.runs += runs
        self.finished.update(finished)

    def add(self, run: ProbeRun) -> None:
        if self.path is None:
            return
        self.runs.append(asdict(run))
        atomic_write_json(self.path, {**self.protocol, "runs": self.runs})


def _probe_run(
    env_id: str,
    env_kwargs: dict[str, Any],
    name: str,
    seed: int,
    episodes: int,
    higher: bool,
    one_thread: bool,
) -> ProbeRun:
    """One (policy, seed) run of :func:`probe`, in this process or a worker's."""
    if one_thread:
        import torch

        torch.set_num_threads(1)
    if name == "best_fixed":
        return run_best_fixed(env_id, env_kwargs, seed, higher)
    return run_policy(env_id, env_kwargs, name, seed, episodes)


def _headline(env: Any, family: EnvFamily) -> str:
    """The headline metric an env's ``evaluate`` reports: the family's own where it has one,
    else the first of its metrics that a validation pass of the fresh env gives."""
    if len(family.metrics) == 1:
        return family.metrics[0].split("/", 1)[1]
    return family.headline(env.unwrapped.evaluate("val"))


def format_probe(summary: dict[str, Any]) -> str:
    """A plain-text table of a probe's summary."""
    metric = summary["metric"]
    labels = {
        name: f"{name} [oracle]" if p["oracle"] else name for name, p in summary["policies"].items()
    }
    width = max(14, *(len(label) + 1 for label in labels.values()))
    lines = [
        f"{summary['env_id']}: test {metric} "
        f"({'higher' if summary['higher_is_better'] else 'lower'} is better), "
        f"{len(summary['protocol']['seeds'])} seeds",
        f"{'policy':<{width}}{'mean':>10}{'std':>10}{'95% t-interval':>22}"
        f"{'IQM [95% bootstrap CI]':>30}{'return':>12}{'s/run':>8}",
    ]
    for name, p in summary["policies"].items():
        ci = f"[{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}]"
        value, low, high = p["iqm"]
        iqm = f"{value:.4f} " + (
            f"[{low:.4f}, {high:.4f}]" if low is not None else f"[{MIN_INTERVAL_SEEDS}+ seeds]"
        )
        lines.append(
            f"{labels[name]:<{width}}{p['mean']:>10.4f}{p['std']:>10.4f}{ci:>22}{iqm:>30}"
            f"{p['return_mean']:>12.3f}{p['seconds_mean']:>8.1f}"
        )
    for key, label in (("headroom", "headroom"), ("headroom_fair", "headroom without oracles")):
        head = summary.get(key)
        if head and (key == "headroom" or head["best"] != summary["headroom"]["best"]):
            oracle = " (an oracle)" if head["best_is_oracle"] else ""
            lines.append(
                f"{label}: {head['value']:.2f} ({head['best']}{oracle} - random = "
                f"{head['gap']:.4f}, pooled std {head['pooled_std']:.4f}); "
                f"P({head['best']} beats random) {probability_text(head)}"
                + (
                    f"; on the same seed {same_seed_text(head['same_seed'])}"
                    if "same_seed" in head
                    else ""
                )
            )
    for key, label in (("headroom", ""), ("headroom_fair", " (best without oracles)")):
        head = summary.get(key)
        if not head or not head.get("same_seed_vs"):
            continue
        if key == "headroom_fair" and head["best"] == summary["headroom"]["best"]:
            continue
        against = ", ".join(
            f"{name}{' [oracle]' if summary['policies'][name]['oracle'] else ''} "
            f"{same_seed_text(wins)}"
            for name, wins in head["same_seed_vs"].items()
        )
        best = best_label(head)
        lines.append(f"{best}{label} against the others on the same seed: {against}")
    if "spearman_rho" in summary:
        lines.append(f"Spearman rho(return, test {metric}): {summary['spearman_rho']:.3f}")
    return "\n".join(lines)


# An id is a good RL benchmark at CPU scale when the policy it is given decides the outcome
# (headroom without oracles), the reward ranks runs as the test metric does (rho), and a
# reference-policy episode is short.
QUALIFY = {"headroom": 3.0, "rho": 0.8, "episode_s": 120.0}


def episode_seconds(summary: dict[str, Any]) -> tuple[float, float]:
    """Fewest and most seconds of one episode over a probe's runs (an AuxLabel run is
    ``protocol["episodes"]`` episodes, one epoch each; a ``best_fixed`` run is one episode
    per constant weight vector it tries)."""
    per_run = summary["protocol"].get("episodes", 1)
    seconds = [
        run["seconds"] / (len(BEST_FIXED_SCALES) if run["policy"] == "best_fixed" else per_run)
        for run in summary["runs"]
    ]
    return min(seconds), max(seconds)


def probability_text(head: dict[str, Any]) -> str:
    """``P [low, high]`` of a headroom entry; ``P [5+ seeds]`` where either side has fewer
    runs than an interval needs, and the bare P for a probe kept before the interval was
    recorded."""
    p = f"{head['p_improvement']:.2f}"
    if "p_improvement_ci" not in head:
        return p
    ci = head["p_improvement_ci"]
    return p + (" [{:.2f}, {:.2f}]".format(*ci) if ci else f" [{MIN_INTERVAL_SEEDS}+ seeds]")


def best_label(headroom: dict[str, Any]) -> str:
    """The best policy's name, marked ``[oracle]`` where it reads test data."""
    return f"{headroom['best']} [oracle]" if headroom.get("best_is_oracle") else headroom["best"]


def format_headroom_table(summaries: Sequence[dict[str, Any]]) -> str:
    """One markdown row per kept probe: its seeds, the CPU kernels it ran on (torch's
    ``cpu_capability``; per-seed numbers repeat only on the same ones), headroom (without
    oracles), the probability that the best policy without oracles beats random, rho,
    seconds per episode and whether the id qualifies by :data:`QUALIFY`, judged on the
    headroom without oracles."""
    lines = [
        "| family | id | seeds | CPU kernels | headroom, best policy (without oracles) "
        "| P(best without oracles beats random) [95% CI] "
        "| same seed: it beats random [exact 95% CI] | rho | s per episode | qualifies |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        # Judged without oracles: with no such policy the id does not qualify, whatever an
        # oracle's headroom.
        # Undefined numbers (NaN: one seed, a diverged run; a missing rho: every return or
        # score equal) fail their test: `not x >= bar` where `x < bar` would pass NaN.
        head, fair = s.get("headroom"), s.get("headroom_fair")
        rho = s.get("spearman_rho", math.nan)
        low, high = episode_seconds(s)
        misses = [
            reason
            for reason, failed in (
                ("no random policy", head is None),
                ("no policy without oracles", head is not None and fair is None),
                (
                    f"headroom < {QUALIFY['headroom']:g}",
                    fair is not None and not fair["value"] >= QUALIFY["headroom"],
                ),
                (f"rho < {QUALIFY['rho']:g}", not rho >= QUALIFY["rho"]),
                (f"episodes > {QUALIFY['episode_s']:g} s", high > QUALIFY["episode_s"]),
            )
            if failed
        ]
        verdict = "no: " + ", ".join(misses) if misses else "yes"
        kernels = s.get("platform", {}).get("cpu_capability", "not recorded")
        paired = same_seed_text(fair["same_seed"]) if fair and "same_seed" in fair else "-"
        fair_value = f"({fair['value']:.2f})" if fair else "(-)"
        head_text = f"{head['value']:.2f} {best_label(head)}" if head else "-"
        lines.append(
            f"| {family_of(s['env_id']).name} | `{s['env_id']}` | {len(s['protocol']['seeds'])} "
            f"| {kernels} | {head_text} {fair_value} "
            f"| {probability_text(fair) if fair else '-'} | {paired} "
            f"| {rho:.2f} | {low:.1f}-{high:.1f} | {verdict} |"
        )
    return "\n".join(lines) + "\n"
