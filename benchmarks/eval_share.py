"""Share of a CPU CIFAR-100 run spent evaluating, with every epoch evaluated and with the
config's ``eval_every``, in one run.

    python benchmarks/eval_share.py --data-root DIR [--config FILE] [--every 1 5] [--out FILE]

Trains ``stl`` (the main task alone, the cheapest method, so evaluation weighs the most) with
the CPU comparison config (``configs/compare_auxlabel_cifar100_cpu.yaml``: small_cnn on a
5,000-image training subset, 10 epochs, validation on 5,000 images) once per value of
``--every``, with one torch thread, and prints the seconds spent evaluating (validation
during training, test on the final and on the best-validation network) against the whole run,
and the final test accuracy, which ``eval_every`` must not change. Target: at most a third
of the run with the config's default.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

import mtl_envs  # noqa: F401  (registers the ids)
from harness.bench import BenchReport, add_out_argument, positive_int
from harness.config import RunConfig
from harness.registry import run_quietly

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "compare_auxlabel_cifar100_cpu.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("MTL_ENVS_DATA"))
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--every", type=positive_int, nargs="+", default=[1, 5])
    add_out_argument(parser)
    args = parser.parse_args()
    if args.data_root is None:
        parser.error("--data-root (or MTL_ENVS_DATA) must name the folder with cifar-100-python")
    report = BenchReport.from_args("eval_share", args)
    torch.set_num_threads(1)
    config = RunConfig.from_file(args.config)
    env_kwargs = {**config.env_kwargs, "data_root": args.data_root}
    print(f"{config.env_id} stl, {config.epochs} epochs, config eval_every {config.eval_every}")
    print(f"{'eval_every':>10} {'eval (s)':>9} {'run (s)':>8} {'share':>6} {'test acc':>9}")
    for every in args.every:
        with tempfile.TemporaryDirectory() as out:
            result = run_quietly(
                "stl",
                config.env_id,
                env_kwargs=env_kwargs,
                epochs=config.epochs,
                eval_every=every,
                output_dir=out,
            )
        evaluating, wall = result["eval_time_s"], result["wall_time_s"]
        accuracy = result["final"]["test/accuracy"]
        share = evaluating / wall
        print(f"{every:10d} {evaluating:9.1f} {wall:8.1f} {share:6.0%} {accuracy:9.2%}", flush=True)
        default = " (the config's)" if every == config.eval_every else ""
        report.add(
            f"{config.env_id} `stl` ({args.config.name}, one thread), `eval_every` = "
            f"{every}{default}: share of the run spent evaluating",
            f"{share:.0%} ({evaluating:.1f} of {wall:.1f} s); final test accuracy {accuracy:.2%}",
            "<= 33% with the default" if default else "",
            eval_every=every,
            eval_time_s=evaluating,
            train_time_s=result["train_time_s"],
            wall_time_s=wall,
            share=share,
            test_accuracy=accuracy,
        )


if __name__ == "__main__":
    main()
