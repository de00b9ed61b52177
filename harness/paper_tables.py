"""The hypernetwork paper's Table 2 layout for tabular results: rows are methods, columns
dataset x setting, each cell the test MSE in the data's units (mean over test samples, as the
paper's code computes it), mean +- standard error over seeds, then the paper's number where
Table 2 has one. The paper's "STL" (one network given the task as metadata or a one-hot
code) is ``stl_task_info`` here; ``stl`` is one network per task.

Two readings of the paper's selection ("repeated across 50 seeds for each combination of
hyperparameters", validation "used for hyperparameter selection"): ``per_seed``, each run's
own grid search (its ``final`` metrics), and ``across_seeds``, one grid point per dataset,
setting and method, the one with the lowest validation loss averaged over the seeds, scored
by the test error every run recorded for each of its fits.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from os import PathLike
from typing import Any

from harness.compare import markdown_table, summarize
from harness.results import load_results
from mtl_envs.errors import ConfigError

# Table 2 of 000_6f85eb44aaf9e6f8.txt (Cubic and Robot Arm columns; MSE despite the caption,
# as its code computes it and the Cubic noise floor of 0.01 shows). Its Robot Arm column
# without metadata lists 8 values for 9 rows; the improvement column (MaxRoam -0.004 against
# 0.589 with metadata) shows MaxRoam's is the one left out (its cell stays empty here), so
# MRN's is 0.565 (0.575 - 0.010), Cross-stitch's 0.624 and Sluice's 0.540.
PAPER = {
    ("LossWeighting-Cubic-v1", "no_metadata"): {
        "stl_naive": "0.624 +- 0.001",
        "stl_task_info": "0.132 +- 0.007",
        "hard_sharing": "0.040 +- 0.002",
        "mrn": "0.053 +- 0.003",
        "maxroam": "0.036 +- 0.002",
        "cross_stitch": "0.057 +- 0.005",
        "sluice": "0.064 +- 0.007",
        "dmtrl": "0.038 +- 0.001",
        "hypernet": "0.122 +- 0.008",
    },
    ("LossWeighting-Cubic-v1", "metadata"): {
        "stl_task_info": "0.030 +- 0.001",
        "hard_sharing": "0.034 +- 0.001",
        "mrn": "0.041 +- 0.003",
        "maxroam": "0.036 +- 0.001",
        "cross_stitch": "0.032 +- 0.001",
        "sluice": "0.038 +- 0.003",
        "dmtrl": "0.034 +- 0.001",
        "hypernet": "0.023 +- 0.000",
    },
    ("LossWeighting-RobotArm-v1", "no_metadata"): {
        "stl_naive": "0.559 +- 0.001",
        "stl_task_info": "0.547 +- 0.002",
        "hard_sharing": "0.596 +- 0.004",
        "mrn": "0.565 +- 0.004",
        "cross_stitch": "0.624 +- 0.001",
        "sluice": "0.540 +- 0.003",
        "dmtrl": "0.625 +- 0.001",
        "hypernet": "0.485 +- 0.002",
    },
    ("LossWeighting-RobotArm-v1", "metadata"): {
        "stl_task_info": "0.469 +- 0.002",
        "hard_sharing": "0.598 +- 0.004",
        "mrn": "0.575 +- 0.005",
        "maxroam": "0.589 +- 0.003",
        "cross_stitch": "0.624 +- 0.001",
        "sluice": "0.546 +- 0.005",
        "dmtrl": "0.630 +- 0.001",
        "hypernet": "0.467 +- 0.001",
    },
}
METHODS = (
    "stl_naive",
    "stl",
    "stl_task_info",
    "hard_sharing",
    "mrn",
    "maxroam",
    "cross_stitch",
    "sluice",
    "dmtrl",
    "hypernet",
)


def cell(mean: float, sem: float) -> str:
    """``mean +- sem`` with three decimals, two where the values are in the tens or more."""
    digits = 3 if abs(mean) < 10 else 2
    return f"{mean:.{digits}f} +- {sem:.{digits}f}"


SELECTIONS = ("per_seed", "across_seeds")


def select_across_seeds(
    results: Iterable[dict[str, Any]], metric: str = "test/raw_mse"
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """One grid point per (env id, setting, method): the one whose best validation loss,
    averaged over the seeds, is lowest (grid order breaks ties), among the points every seed
    fitted. Returns its ``params``, the seeds and each seed's recorded ``metric`` there."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        groups[(result["env_id"], result.get("setting"), result["method"])].append(result)
    chosen = {}
    for key, runs in groups.items():
        fits: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for run in runs:
            if not run.get("fits") or not all("recorded" in fit for fit in run["fits"]):
                raise ConfigError(
                    f"{key[2]} seed {run['seed']} on {key[0]} ({key[1]}) keeps no test error "
                    "per grid point (`fits[*].recorded`); a selection across seeds needs runs "
                    "made since the tabular protocol records it. Run it again."
                )
            for fit in run["fits"]:
                fits[json.dumps(fit["params"], sort_keys=True)][run["seed"]] = fit
        seeds = sorted(run["seed"] for run in runs)
        if len(set(seeds)) < len(seeds):
            raise ConfigError(
                f"{key[2]} on {key[0]} ({key[1]}) has two results of one seed ({seeds}); give "
                "each run's folder once."
            )
        complete = [point for point, by_seed in fits.items() if sorted(by_seed) == seeds]
        if not complete:
            raise ConfigError(
                f"{key[2]} on {key[0]} ({key[1]}): no grid point was fitted by every seed "
                f"{seeds}; its points: {sorted(fits)}. Select across runs of one grid."
            )
        best = min(complete, key=lambda p: sum(f["best_val"] for f in fits[p].values()))
        recorded = fits[best][seeds[0]]["recorded"]
        if metric not in recorded:
            raise ConfigError(
                f"`metric` {metric!r} is not recorded per grid point; recorded: {sorted(recorded)}."
            )
        values = [fits[best][seed]["recorded"][metric] for seed in seeds]
        chosen[key] = {"params": json.loads(best), "seeds": seeds, "values": values}
    return chosen


def results_across_seeds(
    results: Iterable[dict[str, Any]], metric: str = "test/raw_mse"
) -> list[dict[str, Any]]:
    """The runs as if each had trained the grid point chosen across seeds (``metric`` must be
    recorded): copies whose ``final`` is that point's recorded metrics and ``selected`` that
    point, for tables and comparisons (``harness.compare.format_pairs``) under this selection."""
    results = list(results)
    chosen = select_across_seeds(results, metric)
    out = []
    for run in results:
        params = chosen[(run["env_id"], run.get("setting"), run["method"])]["params"]
        (fit,) = [f for f in run["fits"] if f["params"] == params]
        out.append({**run, "final": dict(fit["recorded"]), "selected": params})
    return out


def _grid_value(text: str) -> Any:
    """A grid value written in a sub-grid spec: a number where it reads as one, else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _sub_grid_condition(spec: str) -> tuple[str, str, str, str]:
    """``"METHOD:KEY=VALUE"`` (or ``<=``, ``>=``) split into method, key, operator and the
    value's text."""
    method, sep, condition = spec.partition(":")
    match = re.fullmatch(r"([^<>=]+)(<=|>=|=)(.+)", condition)
    if not (sep and method and match):
        raise ConfigError(
            f"A sub-grid is written METHOD:KEY=VALUE (mrn:prior_weight=0), or with <= or >= "
            f"(mrn:prior_weight<=0.01); got {spec!r}."
        )
    key, op, text = match.groups()
    return method, key, op, text


def _in_sub_grid(point: Any, op: str, value: Any) -> bool:
    if op == "=":
        return point == value
    if not isinstance(point, (int, float)) or not isinstance(value, (int, float)):
        return False  # an order reads numbers only
    return point <= value if op == "<=" else point >= value


def results_within(results: Iterable[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    """Each run of one method re-read within a sub-grid: ``spec`` ``"METHOD:KEY=VALUE"``
    keeps the grid points whose ``KEY`` is ``VALUE`` (``KEY<=VALUE`` and ``KEY>=VALUE`` keep
    a numeric range) and picks, per run, the one with the lowest validation loss among them,
    as the run's own search picks over the whole grid (validation alone picks; the fits'
    recorded test errors give the cells). The copies are named ``METHOD[KEY=VALUE]``, a row
    of their own: MRN at prior weight 0 is hard sharing with MRN's start, a share of 1 is
    be MaxRoam without roaming, and ``mrn:prior_weight<=0.01`` reads a run of a widened
    grid within the reference grid's weights."""
    method, key, op, text = _sub_grid_condition(spec)
    value = _grid_value(text)
    results = list(results)
    runs = [r for r in results if r["method"] == method]
    if not runs:
        present = sorted({r["method"] for r in results})
        raise ConfigError(f"Sub-grid {spec!r}: no result of method {method!r}; methods: {present}.")
    out = []
    for run in runs:
        fits = [
            f
            for f in run.get("fits", [])
            if key in f["params"] and _in_sub_grid(f["params"][key], op, value)
        ]
        if not fits or not all("recorded" in f for f in fits):
            keys = sorted({k for f in run.get("fits", []) for k in f["params"]})
            if key not in keys:
                raise ConfigError(
                    f"Sub-grid {spec!r}: {method}'s grid has no key {key!r}; its keys: {keys}."
                )
            points = sorted({json.dumps(f["params"].get(key)) for f in run.get("fits", [])})
            raise ConfigError(
                f"Sub-grid {spec!r}: {method} seed {run['seed']} on {run['env_id']} has no "
                f"fit with {key}{op}{text} that records its test error; its {key} values: "
                f"{points}."
            )
        best = min(fits, key=lambda f: f["best_val"])
        named = f"{method}[{key}{op}{text}]"
        out.append(
            {**run, "method": named, "final": dict(best["recorded"]), "selected": best["params"]}
        )
    return out


def _point(params: dict[str, Any]) -> str:
    """A grid point in a table cell: ``lr 1e-3.5, l_h 1``."""
    parts = [f"lr 1e{math.log10(params['lr']):.3g}"]
    if "extractor_layers" in params:
        parts.append(f"l_h {params['extractor_layers']}")
    if "factorisation" in params:
        parts.append(f"{params['factorisation']} rank {params['rank']}")
    if "prior_weight" in params:
        parts.append(f"prior {params['prior_weight']:g}, k {params['feature_k']:g}")
    if "sharing_ratio" in params:
        parts.append(f"share {params['sharing_ratio']:g}, every {params['update_every']}")
    return ", ".join(parts)


def format_table2(
    paths: Iterable[str | PathLike],
    metric: str = "test/raw_mse",
    selection: str = "per_seed",
    within: Iterable[str] = (),
) -> str:
    """The markdown table of the tabular results below ``paths``; with ``selection=
    "across_seeds"`` (:func:`select_across_seeds`) a second table gives each cell's point.
    Each spec of ``within`` adds a row of one method's runs read within a sub-grid
    (:func:`results_within`, per run), below the method's own row."""
    if selection not in SELECTIONS:
        raise ConfigError(f"`selection` must be one of {list(SELECTIONS)}; got {selection!r}.")
    results = load_results(paths)
    untabular = sorted({r["env_id"] for r in results if r.get("setting") is None})
    if untabular:
        raise ConfigError(
            f"Table 2 reads the tabular protocol's results (`method_kwargs: {{protocol: "
            f"tabular}}`, one row per metadata setting); {untabular} have no setting."
        )
    variants_by_cell: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for r in results:
        variants_by_cell[(r["env_id"], r["setting"], r["method"])].add(str(r.get("variant")))
    for (env_id, setting, method), variants in sorted(variants_by_cell.items()):
        if len(variants) > 1:
            raise ConfigError(
                f"Table 2 has one cell per method and setting, and {method}'s {setting} "
                f"results on {env_id} come from {len(variants)} sweep variants "
                f"({', '.join(sorted(variants))}), whose runs would share it: give the folder "
                f"of one variant."
            )
    within = list(within)
    if within and selection == "across_seeds":
        raise ConfigError(
            "A sub-grid row (`within`) picks per run; it cannot join a table whose points are "
            "picked across seeds (`selection='across_seeds'`)."
        )
    if selection == "across_seeds":
        results = results_across_seeds(results, metric)
    extra = [run for spec in within for run in results_within(results, spec)]
    results = results + extra
    order = list(METHODS)
    for name in dict.fromkeys(run["method"] for run in extra):
        base = name.split("[")[0]
        order.insert(order.index(base) + 1 if base in order else len(order), name)
    rows_by_column: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in summarize(results, metric):
        rows_by_column[tuple(row["env_id"].split(" ")[:2])].append(row)
    # A column's header gives its largest number of seeds; a cell over fewer says its own.
    seeds = {column: max(r["n"] for r in rows) for column, rows in rows_by_column.items()}
    cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for column, column_rows in rows_by_column.items():
        for row in column_rows:
            own = f" (n={row['n']})" if row["n"] < seeds[column] else ""
            cells[column][row["method"]] = cell(row["mean"], row["sem"]) + own
    columns = sorted(cells, key=lambda c: (c[0], c[1] != "no_metadata"))
    header = ["method"]
    for env_id, setting in columns:
        name = env_id.split("-")[1]
        header.append(f"{name} {setting.replace('_', ' ')} (n={seeds[(env_id, setting)]})")
        if (env_id, setting) in PAPER:
            header.append("paper")
    rows = []
    for method in order:
        line = [method]
        for column in columns:
            line.append(cells[column].get(method, ""))
            if column in PAPER:
                line.append(PAPER[column].get(method, ""))
        if any(line[1:]):  # a method neither run nor in the paper's columns has no row
            rows.append(line)
    table = "\n".join(markdown_table(header, rows)) + "\n"
    if selection == "per_seed":
        return table
    point_header = ["grid point chosen across seeds"] + [
        f"{env_id.split('-')[1]} {setting.replace('_', ' ')}" for env_id, setting in columns
    ]
    points = {(r["env_id"], r["setting"], r["method"]): _point(r["selected"]) for r in results}
    point_rows = [[m] + [points.get((*c, m), "") for c in columns] for m in order]
    point_rows = [row for row in point_rows if any(row[1:])]
    return table + "\n" + "\n".join(markdown_table(point_header, point_rows)) + "\n"
