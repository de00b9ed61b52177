"""Run every benchmark one after another and keep what each measured, for ``docs/``.

    python benchmarks/run_all.py --data-root DIR [--only NAME ...] [--out-dir DIR]

Each benchmark runs in its own process with its documented arguments and writes its rows to
``OUT_DIR/<name>.json`` (default ``docs/results/benchmarks``), replacing the kept report only
when it succeeds; ``scripts/docs_tables.py
render`` then rebuilds the benchmark tables of ``docs/results.md`` from those files. They run
in turn, never side by side: their ratios are timings on a shared machine. About 125
minutes on 2 CPU cores, 85 of them ``igbv2_full_run`` (``--only`` picks some).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the package beside it

from mtl_envs.io import atomic_write_json, read_json  # noqa: E402

# name -> arguments beyond --out (and --data-root, for those that read CIFAR-100).
BENCHMARKS: dict[str, list[str]] = {
    "aux_label_overhead": [],
    "loss_weighting_cost": [],
    "igbv2_full_run": [],
    "vector_throughput": [],
    "ppo_cycle": [],
    "affinity_cost": [],
    "eval_share": [],
    "etap_prediction": ["--draws", "5"],
    "memory_episodes": [],
}
NEEDS_DATA = {
    "aux_label_overhead",
    "loss_weighting_cost",
    "igbv2_full_run",
    "ppo_cycle",
    "eval_share",
}


def keep_report(partial: Path, final: Path) -> None:
    """Move a finished benchmark's report from its partial file to ``final``, its recorded
    command naming the file it is kept as."""
    report = read_json(partial)
    report["command"] = report["command"].replace(
        os.path.relpath(partial, ROOT), os.path.relpath(final, ROOT)
    )
    atomic_write_json(final, report)
    partial.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("MTL_ENVS_DATA"))
    parser.add_argument("--only", nargs="+", default=list(BENCHMARKS), metavar="NAME")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "results" / "benchmarks")
    args = parser.parse_args()
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    if args.data_root is None and NEEDS_DATA & set(args.only):
        parser.error(
            "--data-root (or MTL_ENVS_DATA) must name the folder with cifar-100-python: "
            f"{sorted(NEEDS_DATA & set(args.only))} measure CIFAR-100 runs"
        )
    if NEEDS_DATA & set(args.only) and not (Path(args.data_root) / "cifar-100-python").is_dir():
        parser.error(
            f"--data-root: {args.data_root!r} holds no cifar-100-python folder, which "
            f"{sorted(NEEDS_DATA & set(args.only))} read"
        )
    failed = []
    for name in args.only:
        # The rows go to a partial file, which replaces the kept report only when the whole
        # benchmark succeeded: a failure part-way never leaves a report of some cases.
        partial = args.out_dir / f".{name}.partial.json"
        command = [sys.executable, str(HERE / f"{name}.py"), *BENCHMARKS[name]]
        if name in NEEDS_DATA:
            command += ["--data-root", args.data_root]
        command += ["--out", os.path.relpath(partial, ROOT)]
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(command, cwd=ROOT)
        print(f"== {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code == 0 and partial.is_file():
            keep_report(partial, args.out_dir / f"{name}.json")
        else:
            failed.append(name)
    if failed:
        print(f"failed (their kept reports are unchanged): {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
