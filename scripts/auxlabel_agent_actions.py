"""What saved RL-AUX agents do: their deterministic labels and sample weights on the training set.

    python scripts/auxlabel_agent_actions.py RUN_DIR [RUN_DIR ...] [--data-root DIR] [--out FILE]

A run folder is one seed of ``mtl-envs run`` with ``method: ppo`` on an AuxLabel id: it holds
``agent.zip`` (the agent after its last cycle) and ``result.json`` (env id and kwargs). The
agent's observation is an image and its primary label, nothing of the main network, so its
deterministic action on every training image is what its train-main epochs apply (on the
stored image: on a v1 id the agent labels each epoch's augmented view of it, which differs
from epoch to epoch). Per run this prints and writes:

* ``label_classes_used``: auxiliary label classes chosen, of the action space's;
* ``top_label_share``: the share of images given the most frequent label;
* on the weighted ids (RL-AUX eq. 8), ``mean_weight``, ``median_weight``,
  ``share_weight_above_1`` and the share of images per weight bin; and, for reference, the
  mean weight of a uniformly random bin (the ``random`` reference policy).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO

import mtl_envs  # noqa: F401  (registers the ids)
from mtl_envs.io import atomic_write_json, read_json
from mtl_envs.training.losses import weight_from_bin


def agent_actions(run: Path, data_root: str | None, chunk: int = 500) -> dict[str, Any]:
    """The deterministic actions of the agent saved in ``run`` on every training image."""
    for name in ("agent.zip", "result.json"):  # a finished run leaves both
        if not (run / name).is_file():
            raise SystemExit(
                f"{run} holds no {name}: give the run folder of a finished AuxLabel `ppo` "
                "run (output_dir/ENV_ID/ppo/seedK)."
            )
    result = read_json(run / "result.json")
    kwargs = dict(result["config"]["env_kwargs"])
    if data_root is not None:
        kwargs["data_root"] = data_root
    env = gym.make(result["env_id"], **kwargs)
    task = env.unwrapped.task
    learner = task.learner
    model = PPO.load(run / "agent.zip", device="cpu")
    labels = learner.data.train.labels
    actions = []
    for start in range(0, len(labels), chunk):
        indices = torch.arange(start, min(start + chunk, len(labels)), device=labels.device)
        obs = {
            "image": learner.data.train.images[indices].cpu().numpy(),
            "primary_label": labels[indices].cpu().numpy().astype(np.int64),
        }
        action, _ = model.predict(obs, deterministic=True)
        actions.append(np.asarray(action).reshape(len(indices), -1))
    env.close()
    actions = np.concatenate(actions)
    counts = np.bincount(actions[:, 0], minlength=task.num_labels)
    out: dict[str, Any] = {
        "env_id": result["env_id"],
        "seed": result["seed"],
        "test_accuracy": result["final"]["test/accuracy"],
        "images": len(actions),
        "label_classes": task.num_labels,
        "label_classes_used": int((counts > 0).sum()),
        "top_label_share": float(counts.max() / len(actions)),
    }
    if task.sample_weights:
        bins = torch.as_tensor(actions[:, 1])
        weights = weight_from_bin(bins, task.weight_bins, task.weight_exponent_range).numpy()
        every_bin = torch.arange(task.weight_bins)
        uniform = weight_from_bin(every_bin, task.weight_bins, task.weight_exponent_range)
        shares = np.bincount(actions[:, 1], minlength=task.weight_bins) / len(actions)
        out.update(
            mean_weight=float(weights.mean()),
            median_weight=float(np.median(weights)),
            share_weight_above_1=float((weights > 1).mean()),
            bin_shares=[round(float(s), 4) for s in shares],
            random_policy_mean_weight=float(uniform.mean()),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (seed<k>/)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the summaries as JSON")
    args = parser.parse_args()
    summaries = []
    for run in args.runs:
        summary = agent_actions(run, args.data_root)
        summaries.append(summary)
        line = (
            f"{summary['env_id']} seed {summary['seed']}: test accuracy "
            f"{summary['test_accuracy']:.4f}, {summary['label_classes_used']}/"
            f"{summary['label_classes']} label classes (top {summary['top_label_share']:.2f})"
        )
        if "mean_weight" in summary:
            line += (
                f", mean weight {summary['mean_weight']:.2f} (random bins: "
                f"{summary['random_policy_mean_weight']:.2f}), median "
                f"{summary['median_weight']:.3g}, above 1: {summary['share_weight_above_1']:.2f}"
            )
        print(line, flush=True)
    if args.out is not None:
        atomic_write_json(args.out, {"runs": summaries})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
