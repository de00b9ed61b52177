"""The ``mtl-envs`` command: list what the suite offers, run experiments, compare results.

mtl-envs list
mtl-envs run CONFIG.yaml [key=value ...] [--data-root DIR]
mtl-envs sweep SWEEP.yaml [key=value ...] [--data-root DIR]
mtl-envs probe ENV_ID [key=value ...] [--seeds 5] [--policies ...] [--episodes 10] [--jobs 1]
               [--out FILE.json] [--extend]
mtl-envs compare RESULT.json|DIR ... [--metric test/accuracy] [--which best] [--spread sem]
                 [--baseline random] [--pairs igbv2:ew ...] [--plot out.png]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from harness.compare import (
    by_metric,
    check_baseline,
    check_pairs,
    format_pairs,
    format_table,
    format_value,
    natural_key,
    on_reference_protocol,
    pair_spec,
    plot_summary,
    protocol_differences,
    summarize,
    timing_differences,
)
from harness.config import RunConfig, apply_overrides, file_in_the_way, positive_int
from harness.registry import ORACLES, check_run, file_methods, methods_for, resolve
from harness.results import default_metric, load_results, portable_kwargs
from harness.workers import Terminated
from mtl_envs.errors import ConfigError
from mtl_envs.io import read_json


def cmd_list(args: argparse.Namespace) -> None:
    import mtl_envs
    from mtl_envs.data import DATASETS
    from mtl_envs.data.multitask import MULTITASK_DATASETS
    from mtl_envs.models import BACKBONES

    print("environments (reference scores: random -> best reference policy, test metric):")
    for env_id in mtl_envs.registered_ids():
        line = f"  {env_id}"
        if env_id in mtl_envs.reference_ids():
            ref = mtl_envs.reference_scores(env_id)
            low = ref["policies"][ref["random"]]["mean"]
            best = ref["policies"][ref["best"]]
            oracle = " [oracle]" if best["oracle"] else ""
            errors = mtl_envs.scale_errors(env_id)
            line += (
                f"  {ref['metric']}: random {low:.4f} -> {ref['best']}{oracle} "
                f"{best['mean']:.4f} ({best['n']} seeds; the ends' standard errors "
                "{:.2f} and {:.2f} normalised)".format(*errors)
            )
        print(line)
    print("datasets:  " + ", ".join(DATASETS))
    print("multi-task datasets: " + ", ".join(MULTITASK_DATASETS))
    print("backbones: " + ", ".join(BACKBONES))
    from mtl_envs.families import FAMILIES

    print("methods ([oracle]: reads test data):")
    for family in FAMILIES:
        names = [m + (" [oracle]" if (family, m) in ORACLES else "") for m in methods_for(family)]
        print(f"  {family}: " + ", ".join(names))


def cmd_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    overrides = list(args.overrides)
    if args.data_root is not None:
        overrides.append(f"env_kwargs.data_root={args.data_root}")
    config = RunConfig.from_file(args.config, overrides)
    # Fail fast on a bad method name or a setting no method reads. The methods the file
    # names read its sections too: `method=[ew,dwa]` over a config written for IGBv2 and its
    # baselines runs those two without rewriting IGBv2's `agent` or `method_kwargs`.
    check_run(config, siblings=file_methods(args.config, config.env_id))
    runners = {m: resolve(config.env_id, m) for m in config.methods}
    results = []
    for method, runner in runners.items():
        for seed in config.seeds:
            for result in _written(config, method, seed, runner(config, seed)):
                results.append(result)
                metric = default_metric([result])
                value = result["final"][metric]
                normalized = _normalized(config.env_id, metric, value, result)
                setting = f" {result['setting']}" if result.get("setting") else ""
                print(
                    f"{method}{setting} seed {seed}: {metric} {format_value(metric, value)}"
                    f"{normalized} "
                    f"({result['wall_time_s']:.0f} s)",
                    flush=True,
                )
    print()
    print(format_table(summarize(results)))
    return results


def _written(
    config: RunConfig, method: str, seed: int, returned: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every result the run of ``method`` and ``seed`` wrote with this config: a search
    (grouping budgets, grid searches with and without metadata) writes one per setting and
    returns the last."""
    from harness.lifecycle import made_with

    base = Path(config.output_dir) / config.env_id / method
    # <setting>/<variant>/seed<k>, either level optional (run_dir); another variant's runs
    # lie in the same tree, so each result's own variant is compared too.
    files = [*base.glob(f"seed{seed}/result.json"), *base.glob(f"*/seed{seed}/result.json")]
    files += base.glob(f"*/*/seed{seed}/result.json")
    files.sort(key=lambda path: natural_key(str(path)))
    written = [
        r
        for r in map(read_json, files)
        if r.get("variant") == config.variant and made_with(config, r.get("config"))
    ]
    return written or [returned]


def _normalized(env_id: str, metric: str, value: float, result: dict[str, Any]) -> str:
    """`` (normalized 0.73)`` where the id has reference scores for ``metric`` and the run
    trained under their protocol, else ``""``."""
    import mtl_envs

    if env_id not in mtl_envs.reference_ids():
        return ""
    if mtl_envs.reference_scores(env_id)["metric"] != metric:
        return ""
    if not on_reference_protocol(result):
        return " (not normalized: trained under another protocol than the reference scores)"
    return f" (normalized {mtl_envs.normalized_score(env_id, value):.2f})"


def cmd_sweep(args: argparse.Namespace) -> dict[str, list[str]]:
    from harness.sweep import SweepConfig, run_sweep

    overrides = list(args.overrides)
    if args.data_root is not None:
        overrides.append(f"base.env_kwargs.data_root={args.data_root}")
    run_overrides = [o[len("base.") :] for o in overrides if o.startswith("base.")]
    sweep = SweepConfig.from_file(args.config, [o for o in overrides if not o.startswith("base.")])
    if run_overrides:
        sweep.base = apply_overrides(sweep.base_values(), run_overrides)
    outcome = run_sweep(sweep, progress=True)
    print(
        f"sweep: {len(outcome['done'])} run, {len(outcome['skipped'])} already finished, "
        f"{len(outcome['failed'])} failed -> {sweep.output_dir}"
    )
    for key in outcome["failed"]:
        print(f"  failed: {key} (see {sweep.output_dir}/.sweep/{key}.failed.json)")
    return outcome


def cmd_probe(args: argparse.Namespace) -> dict[str, Any]:
    from harness.probe import format_probe, probe
    from mtl_envs.io import atomic_write_json

    env_kwargs = apply_overrides({}, args.overrides)
    if args.data_root is not None:
        env_kwargs["data_root"] = args.data_root
    episodes = args.episodes
    if episodes is None:  # an id's reference protocol, else 10 epochs
        from mtl_envs.scores import reference_ids, reference_scores

        known = args.env_id in reference_ids()
        episodes = reference_scores(args.env_id)["protocol"]["episodes"] if known else 10
    out = Path(args.out or f"results/probe/{args.env_id}.json")
    _check_out(out, args.env_id)  # before the probe runs: its result must have somewhere to go
    # Each run is kept here as it ends: a probe stopped part way resumes from it.
    partial = out.with_name(out.name + ".partial")
    summary = probe(
        args.env_id,
        env_kwargs,
        args.policies,
        seeds=range(args.seeds),
        episodes=episodes,
        progress=True,
        jobs=args.jobs,
        checkpoint=partial,
        extend=out if args.extend else None,
    )
    atomic_write_json(out, {**summary, "env_kwargs": portable_kwargs(summary["env_kwargs"])})
    partial.unlink(missing_ok=True)
    print(format_probe(summary))
    print(f"written: {out}")
    return summary


def _check_out(out: Path, env_id: str) -> None:
    """``ConfigError`` unless the JSON file ``out`` (and its ``.partial`` checkpoint beside it)
    can be written: neither is a folder, and no part of the path above them is a file."""
    if out.is_dir():
        raise ConfigError(
            f"`--out` {str(out)!r} is a folder; give the JSON file to write, e.g. "
            f"{str(out / f'{env_id}.json')!r}."
        )
    partial = out.with_name(out.name + ".partial")
    if partial.is_dir():
        raise ConfigError(
            f"`--out` {str(out)!r}: the probe keeps its runs in {str(partial)!r}, which is a "
            "folder; move it away or choose another --out."
        )
    blocker = file_in_the_way(out.parent)
    if blocker is not None:
        raise ConfigError(
            f"`--out` {str(out)!r} lies under {str(blocker)!r}, which is a file, not a folder."
        )


def cmd_compare(args: argparse.Namespace) -> None:
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise ConfigError(
            f"`--plot` names the PNG file to write: end it in .png; got {args.plot!r}."
        )
    results = load_results(args.results)
    for line in [*protocol_differences(results), *timing_differences(results)]:
        print(f"warning: {line}", file=sys.stderr)
    pairs = list(args.pairs or ())
    check_pairs(results, pairs)
    check_baseline(results, args.baseline)
    # One table per metric: ids of different families (accuracy, MSE) side by side in a
    # sweep's results read each their own headline metric unless --metric names one.
    groups = by_metric(results, args.metric, args.which)
    blocks, unpaired = [], set(pairs)
    for metric, group in groups.items():  # every table computed before anything is printed
        present = {r["method"] for r in group}
        if args.baseline is None or args.baseline in present:
            rows = summarize(group, metric, args.which, args.baseline)
        else:  # the named baseline is another table's: no P(> baseline) column here
            rows = summarize(group, metric, args.which)
            for row in rows:
                for key in ("p_improve", "p_low", "p_high", "baseline"):
                    row.pop(key, None)
        own = [p for p in pairs if {pair_spec(m)[0] for m in p.split(":")} <= present]
        unpaired -= set(own)
        blocks.append((metric, rows, format_pairs(group, own, metric, args.which) if own else ""))
    if unpaired:
        print(f"No env id holds both methods of {sorted(unpaired)}.", file=sys.stderr)
    for i, (_, rows, table_pairs) in enumerate(blocks):
        if i:
            print()
        print(format_table(rows, args.spread))
        if table_pairs:
            print()
            print(table_pairs, end="")
    if args.plot:
        for metric, rows, _ in blocks:
            path = Path(args.plot)
            if len(blocks) > 1:  # one figure per metric: its panels share one scale
                path = path.with_name(f"{path.stem}_{metric.replace('/', '_')}{path.suffix}")
            print(f"plot: {plot_summary(rows, path)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtl-envs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered env ids, datasets, backbones and methods")
    run = sub.add_parser("run", help="run the methods and seeds of a YAML config")
    run.add_argument("config")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=3 seeds=[0,1]")
    run.add_argument("--data-root", default=None, help="dataset folder (sets env_kwargs.data_root)")
    sweep = sub.add_parser("sweep", help="run a grid of runs locally (process pool) or on Ray")
    sweep.add_argument("config")
    sweep.add_argument(
        "overrides", nargs="*", help="key=value overrides of the sweep (base.x=... for the runs)"
    )
    sweep.add_argument("--data-root", default=None, help="dataset folder for every run")
    probe = sub.add_parser(
        "probe", help="run reference policies on an env id: headroom and reward-metric rho"
    )
    probe.add_argument("env_id")
    probe.add_argument("overrides", nargs="*", help="env kwargs as key=value, e.g. epochs=10")
    probe.add_argument("--seeds", type=positive_int, default=5, help="seeds 0..N-1 per policy")
    probe.add_argument("--policies", nargs="+", default=None, help="default: the family's set")
    probe.add_argument(
        "--episodes",
        type=int,
        default=None,
        help="AuxLabel: epochs per run (default: the id's reference protocol, else 10)",
    )
    probe.add_argument(
        "--jobs", type=int, default=1, help="worker processes of one thread each (default 1)"
    )
    probe.add_argument("--out", default=None, help="JSON output (results/probe/ENV_ID.json)")
    probe.add_argument(
        "--extend",
        action="store_true",
        help="reuse the runs of an existing --out file of the same protocol: more seeds or "
        "policies run only what is new, and its other runs stay in the result",
    )
    probe.add_argument("--data-root", default=None, help="dataset folder")
    compare = sub.add_parser("compare", help="table (and plot) of result files")
    compare.add_argument("results", nargs="+", help="result.json files or folders holding them")
    compare.add_argument(
        "--metric",
        default=None,
        help="default: each env id's headline metric (the first of its family's metrics "
        "the results hold: test/accuracy, test/mean_nmse, test/total_gain, ...); ids with "
        "different ones get a table each",
    )
    compare.add_argument(
        "--which",
        default="final",
        choices=["final", "best"],
        help="the last epoch (default), or the epoch with the best validation metric",
    )
    compare.add_argument(
        "--spread",
        default="std",
        choices=["std", "sem"],
        help="after +-: standard deviation over seeds, or standard error of the mean",
    )
    compare.add_argument(
        "--baseline",
        default=None,
        help="method the probability of improvement compares against (default: random, else stl)",
    )
    compare.add_argument(
        "--pairs",
        nargs="+",
        default=None,
        metavar="X:Y",
        help="also P(a run of X beats one of Y) with its 95%% interval and X's wins seed by "
        "seed, per pair; X@A:Y@B compares runs of settings or variants A and B",
    )
    compare.add_argument("--plot", default=None, help="write a PNG bar chart here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    # key=value overrides may also follow an option such as --data-root.
    overrides_only = all("=" in e and not e.startswith("-") for e in extra)
    if extra and args.command in ("run", "sweep", "probe") and overrides_only:
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        commands = {
            "list": cmd_list,
            "run": cmd_run,
            "sweep": cmd_sweep,
            "probe": cmd_probe,
            "compare": cmd_compare,
        }
        outcome = commands[args.command](args)
    except Terminated:
        # The cleanup has run (workers stopped, files closed): end as SIGTERM would have,
        # so that a parent process sees the signal rather than an exit status.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        raise
    except ConfigError as err:
        # Bad input (a name, a value, a key, a missing file: PathNotFoundError) is one line;
        # anything else is a bug and keeps its traceback.
        print(f"mtl-envs {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C is the user's choice, not a failure: one line, and how to go on.
        hint = {
            "run": "the same command with resume=true continues from the last checkpoint",
            "sweep": "the same command runs what is left",
            "probe": "the same command runs only the runs it lacks",
        }.get(args.command)
        print(
            f"\nmtl-envs {args.command}: interrupted" + (f"; {hint}." if hint else "."),
            file=sys.stderr,
        )
        return 130
    if args.command == "sweep" and outcome["failed"]:
        return 1  # the sweep went on past its failed runs; the exit status still tells
    return 0


if __name__ == "__main__":
    sys.exit(main())
