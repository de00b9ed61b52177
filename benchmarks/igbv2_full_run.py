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
the test split is not read) and IGBv2's without the EW epochs run inside it. The per-epoch
ratios (IGBv2's epoch against the EW epoch right after it) show the spread, and their
median in the epochs before SAC's first update and in those after it, where its rounds
run. Target on CIFAR100MTL: IGBv2 <= 1.10. About 70 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import gymnasium as gym
import numpy as np

import mtl_envs  # noqa: F401  (registers the ids)
from agents.sac_lossweighting import SCHEDULE_DEFAULTS
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

    Installed as a wrapper of :meth:`EpochRecorder.record` (which IGBv2's run calls once per
    epoch, after the epoch's last env step and before evaluating): the time since the last
    call returned is IGBv2's training, then EW trains to the same epoch.
    """

    def __init__(self, learner) -> None:
        self.learner = learner
        self.igbv2_s: list[float] = []
        self.ew_s: list[float] = []
        self.epochs: list[int] = []  # the learner's epoch count after each block
        self._last: float | None = None

    def start(self) -> None:
        self._last = time.perf_counter()

    def close_epoch(self, epochs: int) -> None:
        """IGBv2 has trained ``epochs`` epochs (warm-up included): time its block, then EW's."""
        tick = time.perf_counter()
        self.igbv2_s.append(tick - self._last)
        while self.learner.epoch < epochs:
            self.learner.train_epoch()
        self.ew_s.append(time.perf_counter() - tick)
        self.epochs.append(epochs)

    def resume(self) -> None:
        self._last = time.perf_counter()

    def install(self):
        original = EpochRecorder.record
        lockstep = self

        def record(recorder, epoch, train_metrics):
            lockstep.close_epoch(epoch + 1)
            try:
                return original(recorder, epoch, train_metrics)
            finally:
                lockstep.resume()

        EpochRecorder.record = record
        return original


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
    ew = build_learner(config, 0, weighting=EW())
    lockstep = Lockstep(ew)
    original = lockstep.install()
    try:
        lockstep.start()
        result = run_igbv2(config, 0)
    finally:
        EpochRecorder.record = original
    ew_s = float(sum(lockstep.ew_s))
    # The recorder's training time holds the EW epochs trained inside it.
    igbv2_s = result["train_time_s"] - ew_s
    if ew.epoch != epochs:
        raise RuntimeError(f"EW trained {ew.epoch} epochs in lockstep, not {epochs}")
    ratios = np.array(lockstep.igbv2_s) / np.array(lockstep.ew_s)
    # Blocks that close an epoch before SAC's first round (update_epoch, 1-indexed) and
    # blocks after it; the first block holds the warm-up epochs as well.
    closed = np.array(lockstep.epochs)
    before = ratios[closed < SCHEDULE_DEFAULTS["update_epoch"]]
    after = ratios[closed >= SCHEDULE_DEFAULTS["update_epoch"]]
    return {
        "t_igbv2": igbv2_s / ew_s,
        "igbv2_train_s": igbv2_s,
        "ew_train_s": ew_s,
        "epochs": epochs,
        "network_steps_per_epoch": ew.num_batches,
        "block_ratios": ratios.tolist(),
        "block_epochs": closed.tolist(),
        "block_igbv2_s": lockstep.igbv2_s,
        "block_ew_s": lockstep.ew_s,
        "ratio_median_before_sac": float(np.median(before)) if before.size else None,
        "ratio_median_with_sac": float(np.median(after)) if after.size else None,
        "ratio_iqr_with_sac": np.percentile(after, [25, 75]).tolist() if after.size else None,
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
    low, high = t["ratio_iqr_with_sac"]
    text = (
        f"{t['t_igbv2']:.3f} ({t['igbv2_train_s']:.0f} s / {t['ew_train_s']:.0f} s); per "
        f"epoch: {t['ratio_median_before_sac']:.3f} before SAC's updates, "
        f"{t['ratio_median_with_sac']:.3f} [{low:.3f}, {high:.3f}] with them (median [IQR])"
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
