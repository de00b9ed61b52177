"""Benchmark reports: what a script in ``benchmarks/`` measured, kept as JSON, and the
markdown table ``docs/`` shows from the kept files.

A benchmark builds a :class:`BenchReport`, adds one row per case as it measures it (the text
shown in the docs beside the raw numbers it was formatted from) and, given ``--out FILE``,
writes the report atomically after every row, so an interrupted run keeps its finished
cases::

    report = BenchReport.from_args("vector_throughput", args)
    report.add("Cubic, K = 32", f"{ratio:.2f}", target=">= 8", ratio=ratio, iqr=[low, high])

``scripts/docs_tables.py render`` fills every ``<!-- bench: FILE [FILE ...] -->`` block of
``docs/*.md`` with :func:`format_bench_table` of the named files (paths below
``docs/results/``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.config import (  # noqa: F401  (the scripts' argparse types)
    float_at_least,
    int_at_least,
    positive_int,
)
from harness.results import platform_record
from mtl_envs.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--out FILE`` option every benchmark shares."""
    parser.add_argument(
        "--out", default=None, help="write the measured rows to this JSON file (atomically)"
    )


def command_line(argv: list[str]) -> str:
    """``argv`` as a command to rerun, with the data folder (a machine's path) as ``DIR``."""
    words = [f"benchmarks/{os.path.basename(argv[0])}"]
    for word in argv[1:]:
        if words[-1] == "--data-root":
            word = "DIR"
        elif word.startswith("--data-root="):
            word = "--data-root=DIR"
        words.append(word)
    return " ".join(words)


def machine() -> dict[str, Any]:
    """What a timing depends on: the interpreter, torch's build and threads, the CPUs."""
    return {
        **platform_record(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _portable(value: Any) -> Any:
    """A path inside the project as its path from the project's root (a config the
    benchmark read); other values as they are."""
    if isinstance(value, os.PathLike):
        path = Path(value).resolve()
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(value)
    return value


@dataclass
class BenchReport:
    """The rows one benchmark run measured, with the command and machine that produced them."""

    benchmark: str
    args: dict[str, Any] = field(default_factory=dict)
    out: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def from_args(cls, benchmark: str, args: argparse.Namespace) -> BenchReport:
        options = {k: _portable(v) for k, v in vars(args).items() if k not in ("out", "data_root")}
        return cls(benchmark, options, getattr(args, "out", None))

    def add(self, case: str, measured: str, target: str = "", **values: Any) -> None:
        """One measured case: ``measured`` is the text the docs show, ``values`` the raw
        numbers it was formatted from. Saved at once when the report has a file."""
        if not case or not measured:
            raise ValueError(f"a row needs a case and a measured text, got {case!r}, {measured!r}")
        self.rows.append({"case": case, "measured": measured, "target": target, "values": values})
        self.save()

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "command": command_line(sys.argv),
            "args": self.args,
            "date": datetime.date.today().isoformat(),
            "seconds": round(time.perf_counter() - self.started, 1),
            "machine": machine(),
            "rows": self.rows,
        }

    def save(self) -> None:
        if self.out is not None:
            atomic_write_json(self.out, self.to_dict())


def format_bench_table(reports: list[dict[str, Any]]) -> str:
    """The rows of kept benchmark reports as one markdown table, a benchmark's name on its
    first row, and under it one line per run: its command, date, machine and duration."""

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| benchmark | case | measured | target |", "|---|---|---|---|"]
    runs = []
    for report in reports:
        name = f"`{report['benchmark']}.py`"
        for i, row in enumerate(report["rows"]):
            first = name if i == 0 else ""
            lines.append(
                f"| {first} | {cell(row['case'])} | {cell(row['measured'])} | "
                f"{cell(row['target'])} |"
            )
        m = report["machine"]
        cpu = m.get("cpu") or "CPU model not recorded"
        where = f"{cpu}, {m['cpus']} CPUs, torch threads {m['torch_threads']}"
        if m.get("cuda"):
            where += f", {m['cuda']}"
        runs.append(
            f"* `{report['command']}`: {report['date']}, {where}, {report['seconds']:.0f} s"
        )
    return "\n".join(lines) + "\n\n" + "\n".join(runs) + "\n"
