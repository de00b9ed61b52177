"""Build the table of ground-truth MTL gains of every task group (ETAP eq. 1).

    python scripts/build_gain_table.py [--dataset digits10] [--seeds 0 1] [--epochs 5]
        [--dataset-kwargs '{"labels_per_task": 30}'] [--name digits10_scarce]
        [--cache DIR] [--out mtl_envs/tables/NAME_gains.json]
    python scripts/build_gain_table.py --affinities-of mtl_envs/tables/NAME_gains.json

Trains all 2^n - 1 groups under one ``GroupProtocol`` for each seed (cached per group, so an
interrupted build resumes), collects ETAP and TAG affinities from one all-task run per seed,
and writes the per-task validation and test losses, the gains averaged over seeds on each
split, the affinities and the protocol to one JSON file, which the TaskGrouping env reads in
table mode. Methods learn from the validation gains; the test gains score them.
``--affinities-of`` recomputes only the affinities of an existing table, under its own
protocol and seeds (one all-task run per seed), and rewrites that field.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.config import positive_int
from mtl_envs.errors import ConfigError
from mtl_envs.io import atomic_write_json, read_json
from mtl_envs.training.affinity import collect_affinities
from mtl_envs.training.group_trainer import (
    GroupProtocol,
    GroupTrainer,
    all_groups,
    group_name,
    mtl_gain,
)
from mtl_envs.training.multitask_learner import MultiTaskLearner
from mtl_envs.utils import check_seeds, default_data_root


def affinities(protocol: GroupProtocol, seeds: list[int], data) -> dict[str, list]:
    """ETAP (eq. 6) and TAG (lookahead) affinities of one all-task run per seed under
    ``protocol``, averaged over the seeds."""
    etap, tag = 0.0, 0.0
    for seed in seeds:
        config = protocol.learner_config(None, "cpu")
        learner = MultiTaskLearner(config, seed=seed, dataset=data)
        scores = collect_affinities(learner, protocol.epochs, tag=True)
        etap, tag = etap + scores.etap / len(seeds), tag + scores.tag / len(seeds)
    return {"etap": etap.tolist(), "tag": tag.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits10")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=positive_int, default=GroupProtocol.epochs)
    parser.add_argument(
        "--dataset-kwargs", type=json.loads, default={}, help="JSON options of the dataset"
    )
    parser.add_argument("--name", default=None, help="table name (default: the dataset's)")
    parser.add_argument("--cache", default=str(default_data_root() / "group_cache"))
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch threads (1 = one core)"
    )
    parser.add_argument(
        "--affinities-of",
        default=None,
        metavar="TABLE",
        help="recompute only the affinities of this table file (its protocol and seeds)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.affinities_of is not None:
        path = Path(args.affinities_of)
        # The table's own protocol, seeds and file rule: a build option would be ignored.
        ignored = [
            "--" + key.replace("_", "-")
            for key in ("dataset", "seeds", "epochs", "dataset_kwargs", "name", "cache", "out")
            if getattr(args, key) != parser.get_default(key)
        ]
        if ignored:
            parser.error(
                f"--affinities-of rewrites {path} in place under its own protocol and seeds; "
                f"it takes none of {', '.join(ignored)}"
            )
        if not path.is_file():
            parser.error(f"--affinities-of {path}: no such table file")
        table = read_json(path)
        protocol = GroupProtocol(**table["protocol"])
        if protocol.key() != table["protocol_key"]:
            parser.error(f"{path}: its protocol no longer gives its protocol_key.")
        data = GroupTrainer(protocol, cache_dir=None, device="cpu").data
        table["affinity"] = affinities(protocol, table["seeds"], data)
        atomic_write_json(path, table)
        print(f"rewrote the affinities of {path}")
        return
    try:
        check_seeds("--seeds", args.seeds)
        protocol = GroupProtocol(
            dataset=args.dataset, dataset_kwargs=args.dataset_kwargs, epochs=args.epochs
        )
        trainer = GroupTrainer(protocol, cache_dir=args.cache, device="cpu")
    except ConfigError as err:
        parser.error(str(err))
    name = args.name or args.dataset
    groups = all_groups(trainer.num_tasks)
    start = time.perf_counter()
    losses: dict[str, dict[str, dict[str, list[float]]]] = {"val": {}, "test": {}}
    for group in tqdm(
        groups, desc=f"{args.dataset}: {len(groups)} groups x {len(args.seeds)} seeds"
    ):
        for split, table in losses.items():
            per_seed = [trainer.task_losses(group, seed, split) for seed in args.seeds]
            table[group_name(group)] = {str(t): [s[t] for s in per_seed] for t in group}
    gains: dict[str, dict[str, dict[str, float]]] = {"val": {}, "test": {}}
    for split, table in losses.items():
        for group in groups:
            key = group_name(group)
            gains[split][key] = {}
            for t in group:
                stl, mine = table[str(t)][str(t)], table[key][str(t)]
                gains[split][key][str(t)] = sum(mtl_gain(a, b) for a, b in zip(stl, mine)) / len(
                    stl
                )
    out = Path(args.out or Path(__file__).parents[1] / "mtl_envs" / "tables" / f"{name}_gains.json")
    atomic_write_json(
        out,
        {
            "dataset": args.dataset,
            "task_names": trainer.data.task_names,
            "protocol": asdict(protocol),
            "protocol_key": protocol.key(),
            "seeds": args.seeds,
            # Test losses and gains score a selection; validation ones are what methods use.
            "losses": losses["test"],
            "gains": gains["test"],
            "val_losses": losses["val"],
            "val_gains": gains["val"],
            "affinity": affinities(protocol, args.seeds, trainer.data),
        },
    )
    print(f"wrote {out} ({len(groups)} groups, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
