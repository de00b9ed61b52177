"""IGBv2's training-time ratio T (IGB section 4.1) over a whole configured run, measured.

    python benchmarks/igbv2_full_run.py --data-root DIR [--env-id ID] [--epochs N] [--out FILE]

Trains the id's configured run (default ``LossWeighting-CIFAR100MTL-v1``: small_cnn, 50
epochs, 450 batches each; SAC learns from epoch 4 and acts from epoch 6, its update rounds
growing with the replay buffer) with IGBv2 as ``agents/sac_lossweighting.py`` runs it, and
the same run with EW, in one process and in lockstep: whenever IGBv2's run closes an epoch,
EW trains up to the same epoch. Two runs made one after the other differ by the machine's
drift (several percent over minutes here, as much as the effect measured); in lockstep each
EW epoch runs within a minute of IGBv2's, so the drift falls on both.

T = IGBv2's training time / EW's, both without evaluation (validation runs only at the end;
the test split is not read) and IGBv2's without the EW epochs run inside it. An untimed
epoch of a third learner comes first, so the process's first-call costs land on neither.
The first block holds the warm-up epochs and the first env epoch (SAC has not updated yet);
every later block is one epoch, IGBv2's against the EW epoch right after it: their T, and
their ratios' median and quartiles, show the spread. Target on CIFAR100MTL: IGBv2 <= 1.10.
About 85 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

import mtl_envs  # noqa: F401  (registers the ids)
from agents.sac_lossweighting import run as run_igbv2
from baselines.ew import EW
from baselines.loss_weighting import build_learner
from harness.bench import BenchReport, add_out_argument, int_at_least
from harness.config import RunConfig
from harness.recording import EpochRecorder
from mtl_envs.families import family_of


class Lockstep:
    """EW's learner, trained epoch by epoch as IGBv2's run closes its epochs, and the
    seconds of each side per closed epoch.

    Installed around :class:`EpochRecorder` (IGBv2's run builds one just before training
    and calls its ``record`` once per epoch, after the epoch's last env step and before
    evaluating): IGBv2's block is the time from the recorder's start, or from the last
    ``record`` call's return, to the next call; then EW trains to the same epoch.
    """

    def __init__(self, learner) -> None:
        self.learner = learner
        self.igbv2_s: list[float] = []
        self.ew_s: list[float] = []
        self.epochs: list[int] = []  # the learner's epoch count after each block
        self._last = time.perf_counter()

    def resume(self) -> None:
        """IGBv2 trains from now on."""
        self._last = time.perf_counter()

    def close_epoch(self, epochs: int) -> None:
        """IGBv2 has trained ``epochs`` epochs (warm-up included): time its block, then EW's."""
        tick = time.perf_counter()
        self.igbv2_s.append(tick - self._last)
        while self.learner.epoch < epochs:
            self.learner.train_epoch()
        self.ew_s.append(time.perf_counter() - tick)
        self.epochs.append(epochs)

    def install(self) -> Callable[[], None]:
        """Wrap the recorder's ``__init__`` and ``record``; returns what puts them back."""
        init, record = EpochRecorder.__init__, EpochRecorder.record
        lockstep = self

        def started(recorder, *args, **kwargs):
            init(recorder, *args, **kwargs)
            lockstep.resume()

        def recorded(recorder, epoch, train_metrics):
            lockstep.close_epoch(epoch + 1)
            try:
                return record(recorder, epoch, train_metrics)
            finally:
                lockstep.resume()

        EpochRecorder.__init__, EpochRecorder.record = started, recorded

        def restore() -> None:
            EpochRecorder.__init__, EpochRecorder.record = init, record

        return restore


def measure(env_id: str, env_kwargs: dict[str, Any], epochs: int, out: str) -> dict[str, Any]:
    config = RunConfig(
        method="igbv2",
        env_id=env_id,
        env_kwargs=env_kwargs,
        epochs=epochs,
        eval_every=epochs,  # validation once, at the end: T leaves evaluation out anyway
        output_dir=out,
        progress=True,
        tensorboard=False,
    )
    build_learner(config, 1, weighting=EW()).train_epoch()  # untimed: first-call costs
    ew = build_learner(config, 0, weighting=EW())
    lockstep = Lockstep(ew)
    restore = lockstep.install()
    try:
        result = run_igbv2(config, 0)
    finally:
        restore()
    ew_s = float(sum(lockstep.ew_s))
    # The recorder's training time holds the EW epochs trained inside it.
    igbv2_s = result["train_time_s"] - ew_s
    if ew.epoch != epochs:
        raise RuntimeError(f"EW trained {ew.epoch} epochs in lockstep, not {epochs}")
    igbv2_blocks, ew_blocks = np.array(lockstep.igbv2_s), np.array(lockstep.ew_s)
    ratios = igbv2_blocks / ew_blocks
    return {
        "t_igbv2": igbv2_s / ew_s,
        "igbv2_train_s": igbv2_s,
        "ew_train_s": ew_s,
        "epochs": epochs,
        "network_steps_per_epoch": ew.num_batches,
        "block_ratios": ratios.tolist(),
        "block_epochs": lockstep.epochs,
        "block_igbv2_s": lockstep.igbv2_s,
        "block_ew_s": lockstep.ew_s,
        "first_block_ratio": float(ratios[0]),
        # The blocks of one epoch each, after the first.
        "t_after_first_block": float(igbv2_blocks[1:].sum() / ew_blocks[1:].sum()),
        "ratio_median_after_first_block": float(np.median(ratios[1:])),
        "ratio_iqr_after_first_block": np.percentile(ratios[1:], [25, 75]).tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("MTL_ENVS_DATA"))
    parser.add_argument("--env-id", default="LossWeighting-CIFAR100MTL-v1")
    parser.add_argument(
        "--epochs",
        type=int_at_least(7),
        default=None,
        help="epochs (default: the id's configured number; 7 or more, so SAC acts)",
    )
    parser.add_argument("--device", default="auto")
    add_out_argument(parser)
    args = parser.parse_args()
    if family_of(args.env_id).name != "LossWeighting":
        parser.error(f"--env-id: {args.env_id!r} is not a LossWeighting id")
    spec = gym.spec(args.env_id)
    if spec.kwargs.get("dataset", "").startswith("cifar") and args.data_root is None:
        parser.error(f"--data-root (or MTL_ENVS_DATA) must name the folder {args.env_id} reads")
    epochs = args.epochs or spec.kwargs["epochs"]
    env_kwargs: dict[str, Any] = {"device": args.device}
    if args.data_root is not None:
        env_kwargs["data_root"] = args.data_root
    report = BenchReport.from_args("igbv2_full_run", args)
    configured = "configured" if args.epochs is None else "cut to"
    with tempfile.TemporaryDirectory() as out:
        t = measure(args.env_id, env_kwargs, epochs, out)
    name = args.env_id.removeprefix("LossWeighting-")
    low, high = t["ratio_iqr_after_first_block"]
    text = (
        f"{t['t_igbv2']:.3f} ({t['igbv2_train_s']:.0f} s / {t['ew_train_s']:.0f} s); the "
        f"first block (warm-up and first env epoch) {t['first_block_ratio']:.3f}; the later "
        f"epochs {t['t_after_first_block']:.3f}, one by one "
        f"{t['ratio_median_after_first_block']:.3f} [{low:.3f}, {high:.3f}] (median [IQR])"
    )
    print(f"{name}, {epochs} epochs, EW in lockstep: T IGBv2 {text}")
    report.add(
        f"{name}, {configured} {epochs} epochs x {t['network_steps_per_epoch']} batches, "
        "EW trained in lockstep: T IGBv2",
        text,
        "IGBv2 <= 1.10",
        **t,
    )


if __name__ == "__main__":
    main()
