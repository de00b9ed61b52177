"""Build the table of ground-truth MTL gains of every task group (ETAP eq. 1).

    python scripts/build_gain_table.py [--dataset digits10] [--seeds 0 1] [--epochs 5]
        [--cache DIR] [--out mtl_envs/tables/digits10_gains.json]

Trains all 2^n - 1 groups under one ``GroupProtocol`` for each seed (cached per group, so an
interrupted build resumes), collects ETAP and TAG affinities from one all-task run per seed,
and writes the per-task test losses, the gains averaged over seeds, the affinities and the
protocol to one JSON file, which the TaskGrouping env reads in table mode.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mtl_envs.training.affinity import collect_affinities
from mtl_envs.training.group_trainer import GroupProtocol, GroupTrainer, all_groups, group_name
from mtl_envs.training.multitask_learner import MultiTaskLearner
from mtl_envs.utils import atomic_write_json, default_data_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits10")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=GroupProtocol.epochs)
    parser.add_argument("--cache", default=str(default_data_root() / "group_cache"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    protocol = GroupProtocol(dataset=args.dataset, epochs=args.epochs)
    trainer = GroupTrainer(protocol, cache_dir=args.cache, device="cpu")
    groups = all_groups(trainer.num_tasks)
    start = time.perf_counter()
    losses: dict[str, dict[str, list[float]]] = {}
    for group in tqdm(
        groups, desc=f"{args.dataset}: {len(groups)} groups x {len(args.seeds)} seeds"
    ):
        per_seed = [trainer.task_losses(group, seed) for seed in args.seeds]
        losses[group_name(group)] = {str(t): [s[t] for s in per_seed] for t in group}
    gains = {}
    for group in groups:
        key = group_name(group)
        gains[key] = {}
        for t in group:
            stl = losses[str(t)][str(t)]
            mine = losses[key][str(t)]
            gains[key][str(t)] = sum((a - b) / a for a, b in zip(stl, mine)) / len(stl)
    # Affinities of one all-task run per seed, same protocol (ETAP eq. 6; TAG lookahead).
    etap, tag = 0.0, 0.0
    for seed in args.seeds:
        config = protocol.learner_config(None, "cpu")
        learner = MultiTaskLearner(config, seed=seed, dataset=trainer.data)
        scores = collect_affinities(learner, protocol.epochs, tag=True)
        etap, tag = etap + scores.etap / len(args.seeds), tag + scores.tag / len(args.seeds)
    out = Path(
        args.out or Path(__file__).parents[1] / "mtl_envs" / "tables" / f"{args.dataset}_gains.json"
    )
    atomic_write_json(
        out,
        {
            "dataset": args.dataset,
            "task_names": trainer.data.task_names,
            "protocol": asdict(protocol),
            "protocol_key": protocol.key(),
            "seeds": args.seeds,
            "losses": losses,
            "gains": gains,
            "affinity": {"etap": etap.tolist(), "tag": tag.tolist()},
        },
    )
    print(f"wrote {out} ({len(groups)} groups, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
