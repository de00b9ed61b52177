"""Cost of one cycle of RL-AUX's alternating PPO protocol against two plain epochs.

    python benchmarks/ppo_cycle.py [--data-root DIR] [--env-id ID] [--n-epochs 10 1] [--out FILE]

A cycle (``agents/ppo_auxlabel.py``) is one train-agent epoch (PPO labels every batch of a
copy of the main network and learns from the rewards) and one train-main epoch (the
deterministic policy labels every batch of the main network itself). The plain reference
is the ``random`` baseline: the same learner, network and loss with auxiliary labels drawn
without an agent.
Both are run through the harness for real (``mtl-envs run``), one cycle against two
epochs, with evaluation and checkpoint writes excluded (``train_time_s``), after an untimed
plain epoch that takes the process's one-off costs (data caches, kernel initialisation). The
cycle's time includes the seeded reset that builds its network and the agent and main
network it saves at the end of the cycle (the protocol's own files, not the harness's
checkpoint).

The cycle's time is split by wrapping SB3's ``PPO.learn`` and ``PPO.train``:

* ppo updates: ``PPO.train``, the ``n_epochs`` gradient epochs over each batch's rollout;
* rollout:     the rest of the train-agent epoch (policy forwards, env steps, rewards);
* train-main:  the train-main epoch (policy forwards, main-network steps, saving the agent).

The protocol's ``n_epochs`` is 10 (SB3's default, which RL-AUX's agent keeps); each value in
``--n-epochs`` is one row, so the rows show how the ratio scales with the agent's gradient
work. ``floor`` is the ratio the protocol's network passes alone would give, counting a
forward over one sample as 1 and a training step as 3 (forward and a backward of about
twice its cost), with the agent's backbone the size of the main network (appendix C.2):

    cycle:  2 main steps (3 B_T each) + the reward's forwards
            + 2 policy forwards (B_T each) + n_epochs PPO steps (3 B_T each)
    plain:  2 main steps (3 B_T each)

where the reward's forwards are one batch of B_R (Eq. 3, ``reward="paper"``) or, with the
validation reward (``reward="val"``, the CIFAR100Small ids), two passes over the validation
split per episode (its start and end), spread over the episode's batches.

Target: ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import gymnasium as gym
import torch
from stable_baselines3 import PPO

import mtl_envs  # noqa: F401  (registers the ids)
from harness.bench import BenchReport, add_out_argument, positive_int
from harness.registry import run_quietly
from harness.timing import TIMERS, reset_timers, time_method
from mtl_envs.families import require_family


def train_seconds(method: str, env_id: str, env_kwargs: dict, epochs: int, agent: dict) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = run_quietly(
            method,
            env_id,
            env_kwargs=env_kwargs,
            epochs=epochs,
            eval_every=epochs,
            output_dir=out,
            agent=agent,
        )
        return result["train_time_s"]


def pass_floor(batch: int, reward_forwards: float, n_epochs: int) -> float:
    """The cycle / two-plain-epochs ratio from the network passes per batch alone."""
    plain = 2 * 3 * batch
    return (plain + reward_forwards + 2 * batch + n_epochs * 3 * batch) / plain


def reward_forwards(env_id: str, env_kwargs: dict) -> float:
    """Forwards over one image that the reward costs per batch of a train-agent episode."""
    env = gym.make(env_id, **env_kwargs).unwrapped
    task, learner = env.task, env.learner
    if task.reward == "val":
        forwards = 2 * len(learner.data.val) / learner.num_batches
    else:
        forwards = float(learner.config.eval_batch_size)
    env.close()
    return forwards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("MTL_ENVS_DATA"))
    parser.add_argument(
        "--env-id",
        default=None,
        help="AuxLabel id (default: AuxLabel-CIFAR100Small-v1 with --data-root, else Digits)",
    )
    parser.add_argument("--n-epochs", type=positive_int, nargs="+", default=[10, 1])
    add_out_argument(parser)
    args = parser.parse_args()
    report = BenchReport.from_args("ppo_cycle", args)
    env_id = args.env_id or (
        "AuxLabel-CIFAR100Small-v1" if args.data_root else "AuxLabel-Digits-v1"
    )
    env_kwargs = {"data_root": args.data_root} if args.data_root else {}
    print(f"{env_id}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    learner = require_family(env_id, "AuxLabel").learner_config(env_id, env_kwargs)
    batch, reward = learner.train_batch_size, reward_forwards(env_id, env_kwargs)
    time_method(PPO, "learn", "learn")
    time_method(PPO, "train", "ppo_updates")

    train_seconds("random", env_id, env_kwargs, 1, {})  # untimed: one-off costs
    plain = train_seconds("random", env_id, env_kwargs, 2, {}) / 2
    print(f"plain epoch (random labels): {plain:.1f} s")
    header = f"{'n_epochs':>8s} {'cycle (s)':>10s} {'ppo updates':>12s} {'rollout':>8s}"
    print(f"{header} {'train-main':>11s} {'ratio':>6s} {'floor':>6s}")
    for n_epochs in args.n_epochs:
        reset_timers()
        cycle = train_seconds("ppo", env_id, env_kwargs, 1, {"n_epochs": n_epochs})
        learn, update = TIMERS["learn"], TIMERS["ppo_updates"]
        ratio, floor = cycle / (2 * plain), pass_floor(batch, reward, n_epochs)
        print(
            f"{n_epochs:8d} {cycle:10.1f} {update:12.1f} {learn - update:8.1f} "
            f"{cycle - learn:11.1f} {ratio:6.2f} {floor:6.2f}",
            flush=True,
        )
        report.add(
            f"{env_id}, one alternating cycle / two plain epochs (`random` labels), "
            f"PPO's `n_epochs` = {n_epochs}",
            f"{ratio:.2f} ({cycle:.1f} s: PPO updates {update:.1f} s, rollout "
            f"{learn - update:.1f} s, train-main {cycle - learn:.1f} s; plain epoch "
            f"{plain:.1f} s); the network passes alone give {floor:.2f}",
            "<= 1.5",
            n_epochs=n_epochs,
            cycle_s=cycle,
            ppo_updates_s=update,
            rollout_s=learn - update,
            train_main_s=cycle - learn,
            plain_epoch_s=plain,
            ratio=ratio,
            pass_floor=floor,
        )


if __name__ == "__main__":
    main()
