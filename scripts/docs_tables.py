"""Keep result files in the repository and regenerate the tables in ``docs/`` from them.

    python scripts/docs_tables.py keep results/lossweighting_digits10 lossweighting_digits10
    python scripts/docs_tables.py render [--check]

``keep`` copies every ``result.json`` below a results folder into
``docs/results/<name>/`` in compact form: everything ``mtl-envs compare`` reads (method, env
id, seed, setting, final and best metrics, times, config, status, oracle) and, per epoch, only
the headline metrics and training loss, so the files stay small. ``render`` rewrites every
block of a markdown file in ``docs/`` that reads

    <!-- table: NAME [--metric M] [--which best] [--spread sem] [--baseline B] -->
    ...
    <!-- /table -->

with the ``mtl-envs compare`` table of ``docs/results/NAME`` (and ``--plot`` writes the
block's PNG when the opening line names one: ``--plot docs/x.png``), and every block
``<!-- probe: FILE -->`` ... ``<!-- /probe -->`` with the kept probe result
``docs/results/FILE`` as ``mtl-envs probe`` prints it, and every block ``<!-- gpu: FILE -->``
... ``<!-- /gpu -->`` with the tables of a kept ``scripts/gpu_check.py`` report, and every
block ``<!-- bench: FILE [FILE ...] -->`` ... ``<!-- /bench -->`` with the rows of kept
benchmark reports (``benchmarks/run_all.py`` writes them) as one table, and every block
``<!-- headroom: FILE [FILE ...] -->`` ... ``<!-- /headroom -->`` with one row per kept probe
result: its seeds, CPU kernels, headroom, P(best without oracles beats random), rho,
seconds per episode and whether the id qualifies, and every block
``<!-- table2: DIR [DIR ...] [--selection across_seeds] [--within M:KEY=VALUE] -->`` ...
``<!-- /table2 -->`` with the tabular results kept in ``docs/results/DIR`` in the hypernetwork
paper's Table 2 layout (grid points picked per run, or once across seeds; ``--within`` adds a
row of one method's runs read within a sub-grid: ``KEY=VALUE``, or a numeric range
``KEY<=VALUE`` or ``KEY>=VALUE``), and every block
``<!-- pairs: NAME [--metric M] [--which best] [--selection across_seeds] [--within ...]
X:Y [X:Y ...] -->``
... ``<!-- /pairs -->`` with the probability that a run of X beats one of Y, per env id of
``docs/results/NAME``,
and every block ``<!-- refscores: ID [ID ...] -->`` ... ``<!-- /refscores -->`` with the
ids' random and best reference scores from ``mtl_envs/reference_scores.json``.
``render`` also rewrites the statistics kept in each probe result under
``docs/results/probe*/`` as its runs give them now. ``--check`` fails when a block or a
kept probe is out of date instead of writing it.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from harness.compare import format_pairs, format_table, plot_summary, summarize
from harness.results import default_metric, load_results, portable_kwargs
from mtl_envs.io import atomic_write_json, atomic_write_text, read_json

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
KEPT = DOCS / "results"
BLOCK = re.compile(r"(<!-- table: (?P<args>[^>]*?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
PROBE = re.compile(r"(<!-- probe: (?P<file>[^>]*?) -->\n)(?P<body>.*?)(<!-- /probe -->)", re.S)
GPU = re.compile(r"(<!-- gpu: (?P<file>[^>]*?) -->\n)(?P<body>.*?)(<!-- /gpu -->)", re.S)
HEADROOM = re.compile(
    r"(<!-- headroom: (?P<file>[^>]*?) -->\n)(?P<body>.*?)(<!-- /headroom -->)", re.S
)
TABLE2 = re.compile(r"(<!-- table2: (?P<file>[^>]*?) -->\n)(?P<body>.*?)(<!-- /table2 -->)", re.S)
PAIRS = re.compile(r"(<!-- pairs: (?P<args>[^>]*?) -->\n)(?P<body>.*?)(<!-- /pairs -->)", re.S)
REFSCORES = re.compile(
    r"(<!-- refscores: (?P<file>[^>]*?) -->\n)(?P<body>.*?)(<!-- /refscores -->)", re.S
)
BENCH = re.compile(r"(<!-- bench: (?P<file>[^>]*?) -->\n)(?P<body>.*?)(<!-- /bench -->)", re.S)
EPOCH_KEYS = ("epoch", "train/loss", "agent/reward", "agent/mean_weight")


def compact(result: dict[str, Any]) -> dict[str, Any]:
    """The fields comparisons read, with a per-epoch history of the headline metrics only."""
    keep = {k: v for k, v in result.items() if k != "epochs"}
    headline = {default_metric([result]), default_metric([result]).replace("test/", "val/", 1)}
    keep["epochs"] = [
        {k: v for k, v in epoch.items() if k in EPOCH_KEYS or k in headline}
        for epoch in result.get("epochs", [])
    ]
    # Where a machine read its data and wrote the run says nothing about the result (the kept
    # copy's own folder names it).
    config = {k: v for k, v in keep.get("config", {}).items() if k != "output_dir"}
    if "env_kwargs" in config:
        config["env_kwargs"] = portable_kwargs(config["env_kwargs"])
    keep["config"] = config
    return keep


def cmd_keep(source: Path, name: str) -> None:
    files = sorted(source.rglob("result.json"))
    if not files:
        raise SystemExit(f"No result.json below {source}.")
    for path in files:
        target = KEPT / name / path.relative_to(source)
        atomic_write_json(target, compact(read_json(path)))
    print(f"kept {len(files)} results in {KEPT / name}")


def table_for(args: str, plot: bool = True) -> str:
    parser = argparse.ArgumentParser(prog="table")
    parser.add_argument("name")
    parser.add_argument("--metric", default=None)
    parser.add_argument("--which", default="final")
    parser.add_argument("--spread", default="std")
    parser.add_argument("--baseline", default=None)
    parser.add_argument("--plot", default=None)
    opts = parser.parse_args(shlex.split(args))
    rows = summarize(load_results([KEPT / opts.name]), opts.metric, opts.which, opts.baseline)
    if opts.plot and plot:
        plot_summary(rows, ROOT / opts.plot)
    return "```\n" + format_table(rows, opts.spread) + "\n```\n"


def pairs_for(args: str) -> str:
    parser = argparse.ArgumentParser(prog="pairs")
    parser.add_argument("name")
    parser.add_argument("pairs", nargs="+")
    parser.add_argument("--metric", default=None)
    parser.add_argument("--which", default="final", choices=("final", "best"))
    parser.add_argument("--selection", default="per_seed", choices=("per_seed", "across_seeds"))
    parser.add_argument("--within", action="append", default=[])
    opts = parser.parse_args(shlex.split(args))
    if opts.within and opts.selection == "across_seeds":
        raise SystemExit(f"pairs block {args!r}: --within picks per run, not across seeds.")
    results = load_results([KEPT / opts.name])
    if opts.selection == "across_seeds":  # tabular runs, one grid point across seeds
        from harness.paper_tables import results_across_seeds

        results = results_across_seeds(results)
    if opts.within:  # tabular runs read within a sub-grid, as rows of their own
        from harness.paper_tables import results_within

        results = results + [run for spec in opts.within for run in results_within(results, spec)]
    return format_pairs(results, opts.pairs, opts.metric, opts.which)


def kept_probe(file: str, kept: Path = KEPT) -> dict[str, Any]:
    """A kept probe result (``mtl-envs probe ... --out``), its statistics computed afresh
    from its runs."""
    from harness.probe import ProbeRun, summarize_probe

    probe = read_json(kept / file.strip())
    runs = [ProbeRun(**run) for run in probe["runs"]]
    probe.update(summarize_probe(runs, probe["metric"]))
    return probe


def probe_for(file: str) -> str:
    """A kept probe result as the probe prints it."""
    from harness.probe import format_probe

    return "```\n" + format_probe(kept_probe(file)) + "\n```\n"


def gpu_for(file: str) -> str:
    """A kept ``scripts/gpu_check.py`` report as its tables."""
    from harness.gpu_report import format_gpu_report

    return format_gpu_report(read_json(KEPT / file.strip()))


def bench_for(files: str) -> str:
    """Kept benchmark reports (``benchmarks/*.py --out``) as one markdown table."""
    from harness.bench import format_bench_table

    return format_bench_table([read_json(KEPT / file) for file in files.split()])


def headroom_for(files: str) -> str:
    """Kept probe results as the qualification table, one row per probe."""
    from harness.probe import format_headroom_table

    return format_headroom_table([kept_probe(file) for file in files.split()])


def table2_for(args: str) -> str:
    """Kept tabular results in the hypernetwork paper's Table 2 layout."""
    from harness.paper_tables import SELECTIONS, format_table2

    parser = argparse.ArgumentParser(prog="table2")
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--selection", default="per_seed", choices=SELECTIONS)
    parser.add_argument("--within", action="append", default=[])
    opts = parser.parse_args(shlex.split(args))
    folders = [KEPT / f for f in opts.folders]
    return format_table2(folders, selection=opts.selection, within=opts.within)


def refscores_for(env_ids: str) -> str:
    """The random and the best reference policy's mean test metric of each id."""
    from mtl_envs import reference_scores

    rows = [
        "| id | metric | random | best reference policy |",
        "|---|---|---|---|",
    ]
    for env_id in env_ids.split():
        scores = reference_scores(env_id)
        policies = scores["policies"]
        best = policies[scores["best"]]
        name = scores["best"] + (" [oracle]" if best["oracle"] else "")
        better = "higher" if scores["higher_is_better"] else "lower"
        rows.append(
            f"| `{env_id}` | {scores['metric']} ({better} is better) | "
            f"{policies[scores['random']]['mean']:.4f} | {name} {best['mean']:.4f} |"
        )
    return "\n".join(rows) + "\n"


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON text: NaN statistics (a tie on every seed) equal NaN, where ``==``
    between two NaN floats is false."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def stale_probes(kept: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The kept probes under ``kept`` whose statistics, computed afresh from their runs,
    differ from the kept ones, each with its fresh form."""
    stale = []
    for path in sorted(kept.glob("probe*/*.json")):
        fresh = kept_probe(str(path.relative_to(kept)), kept)
        if not same_json(fresh, read_json(path)):
            stale.append((path, fresh))
    return stale


def cmd_render(check: bool) -> int:
    stale = []
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text()
        new = BLOCK.sub(
            lambda m: m.group(1) + table_for(m.group("args"), not check) + m.group(4), text
        )
        new = PAIRS.sub(lambda m: m.group(1) + pairs_for(m.group("args")) + m.group(4), new)
        new = PROBE.sub(lambda m: m.group(1) + probe_for(m.group("file")) + m.group(4), new)
        new = GPU.sub(lambda m: m.group(1) + gpu_for(m.group("file")) + m.group(4), new)
        new = HEADROOM.sub(lambda m: m.group(1) + headroom_for(m.group("file")) + m.group(4), new)
        new = TABLE2.sub(lambda m: m.group(1) + table2_for(m.group("file")) + m.group(4), new)
        new = BENCH.sub(lambda m: m.group(1) + bench_for(m.group("file")) + m.group(4), new)
        new = REFSCORES.sub(lambda m: m.group(1) + refscores_for(m.group("file")) + m.group(4), new)
        if new != text:
            stale.append(doc)
            if not check:
                atomic_write_text(doc, new)
    for path, fresh in stale_probes(KEPT):
        stale.append(path)
        if not check:
            atomic_write_json(path, fresh)
    verb = "out of date" if check else "rewritten"
    for doc in stale:
        print(f"{verb}: {doc.relative_to(ROOT)}")
    return 1 if check and stale else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    keep = sub.add_parser("keep", help="copy compact results into docs/results/NAME")
    keep.add_argument("source", type=Path)
    keep.add_argument("name")
    render = sub.add_parser("render", help="regenerate the tables in docs/*.md")
    render.add_argument("--check", action="store_true", help="fail if a table is out of date")
    args = parser.parse_args()
    if args.command == "keep":
        cmd_keep(args.source, args.name)
        return 0
    return cmd_render(args.check)


if __name__ == "__main__":
    sys.exit(main())
