"""A plain-loop agent on the vector AuxLabel env: no RL library, about forty lines of logic.

    python -m agents.custom_agent [--env-id AuxLabel-Digits-v1] [--epochs 10] [--seed 0]

The policy is a table of logits, one row per primary class, over the psi sub-classes
(a per-class softmax, RL-AUX's masked softmax in tabular form). It learns with REINFORCE on
the batch reward against a running-mean baseline of the rewards before it during
train-agent epochs and labels greedily during train-main epochs, the same alternating
protocol as the PPO runner. Each epoch reports the validation accuracy; the test split is
evaluated once, on the final network. Use it as the template for plugging your own
algorithm into the env.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import mtl_envs  # noqa: F401
from harness.config import float_at_least, int_at_least, positive_int
from mtl_envs.families import FAMILIES


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="REINFORCE on the AuxLabel vector env")
    # Ids with one label per action (not the weighted ones) and RL-AUX's per-batch reward:
    # on a validation-reward id only an epoch's last step is rewarded, which this per-batch
    # REINFORCE would credit to that batch's labels alone.
    ids = [
        i
        for i in FAMILIES["AuxLabel"].ids()
        if i.startswith("AuxLabel-") and gym.spec(i).kwargs.get("reward", "paper") == "paper"
    ]
    parser.add_argument(
        "--env-id",
        default="AuxLabel-Digits-v1",
        choices=ids,
        metavar="ENV_ID",
        help=f"an AuxLabel id with one label per action and a per-batch reward: {', '.join(ids)}",
    )
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--lr", type=float_at_least(0), default=0.5, help="policy step size")
    parser.add_argument(
        "--batch-size", type=positive_int, default=100, help="B_T = number of slots"
    )
    args = parser.parse_args(argv)

    envs = gym.make_vec(
        args.env_id,
        num_envs=args.batch_size,
        train_batch_size=args.batch_size,
        vectorization_mode="vector_entry_point",
    )
    num_classes = envs.single_observation_space["primary_label"].n
    psi = envs.single_action_space.n
    logits = np.zeros((num_classes, psi))
    rng = np.random.default_rng(args.seed)
    baseline = None
    envs.reset(seed=args.seed)
    for epoch in range(args.epochs):
        obs, _ = envs.reset(options={"mode": "train_agent"})
        done = False
        while not done:
            y = obs["primary_label"]
            probs = softmax(logits[y])
            actions = (probs.cumsum(axis=1) > rng.random((len(y), 1))).argmax(axis=1)
            obs, rewards, terminated, truncated, _ = envs.step(actions)
            reward = float(rewards[0])  # every slot gets the batch reward
            # The advantage is measured against the rewards before this one (the first
            # batch only sets the baseline).
            advantage = 0.0 if baseline is None else reward - baseline
            baseline = reward if baseline is None else 0.9 * baseline + 0.1 * reward
            grad = -probs
            grad[np.arange(len(y)), actions] += 1.0  # d log pi(a | y) / d logits[y]
            np.add.at(logits, y, args.lr * advantage * grad / len(y))
            done = bool(terminated[0] or truncated[0])
        obs, _ = envs.reset(options={"mode": "train_main"})
        done = False
        while not done:
            greedy = logits[obs["primary_label"]].argmax(axis=1)
            obs, _, terminated, truncated, _ = envs.step(greedy)
            done = bool(terminated[0] or truncated[0])
        val = envs.unwrapped.evaluate("val")
        print(
            f"epoch {epoch + 1}: val accuracy {val['accuracy']:.4f}, reward baseline {baseline:.4f}"
        )
    metrics = envs.unwrapped.evaluate("test")
    print(f"final network: test accuracy {metrics['accuracy']:.4f}")
    envs.close()
    return metrics


if __name__ == "__main__":
    main()
