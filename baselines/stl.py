"""Single-task learning (STL): every task trained on its own.

* AuxLabel envs: the primary task alone, no auxiliary loss (the "no auxiliary task"
  reference of RL-AUX section 5; figure 4: 71.86% on CIFAR-100-20).
* LossWeighting envs: one network per task, same encoder, optimiser and epochs as the
  multi-task run, each minimising its plain task loss L_t (IGB's STL): the env's ``loss``
  (the scale-invariant ``log`` by default) and ``aggregator`` shape the multi-task objective
  and are not applied to a single task. These results are the reference of Δm (IGB eq. 5); a
  finished run with the same config is reused rather than trained again.
* With ``method_kwargs: {protocol: tabular}``: independent per-task networks under the
  hypernetwork paper's protocol (learning-rate grid, early stopping; ``baselines.tabular``).
"""

from __future__ import annotations

from typing import Any

from baselines.auxiliary import run_aux_baseline
from baselines.loss_weighting import build_learner
from baselines.tabular import run_tabular, uses_tabular_protocol
from harness.config import RunConfig
from harness.lifecycle import TrainingState, run_epochs
from harness.results import run_dir
from mtl_envs.io import read_json
from mtl_envs.training.multitask_learner import MultiTaskLearner


def _cached(config: RunConfig, seed: int) -> dict[str, Any] | None:
    path = run_dir(config, "stl", seed) / "result.json"
    if not path.is_file():
        return None
    result = read_json(path)
    same = {k: result["config"].get(k) for k in ("env_id", "env_kwargs", "epochs")}
    wanted = {k: config.to_dict()[k] for k in ("env_id", "env_kwargs", "epochs")}
    # Results written before STL used the plain task loss, before it reported every headline
    # metric of the multi-task networks, or before its means left out the tasks a split does
    # not hold and its nMSE scaled a task as the multi-task network does
    # (``metrics_version``), are not reused.
    current = (
        result.get("objective") == STL_OBJECTIVE
        and result.get("metrics_version") == STL_METRICS_VERSION
    )
    return result if same == wanted and current else None


# A single-task network minimises its own loss L_t: no log objective, no gradient aggregator.
STL_OBJECTIVE = {"loss": "sum", "aggregator": None}
STL_METRICS_VERSION = 3


def single_task_learners(config: RunConfig, seed: int) -> list[MultiTaskLearner]:
    """One learner per task of ``config.env_id``, each on the plain task loss. Each is built
    from the run's ``seed``, so every task's network starts from the encoder the multi-task
    network of that seed starts from, with its data-order generator."""
    first = build_learner(config, seed, tasks=[0], **STL_OBJECTIVE)
    rest = [
        build_learner(config, seed, tasks=[t], dataset=first.data, **STL_OBJECTIVE)
        for t in range(1, first.data.num_tasks)
    ]
    return [first, *rest]


def merge_single_task_metrics(
    per_task: list[dict[str, float]], sizes: list[int]
) -> dict[str, float]:
    """The metrics of one multi-task network, from one single-task network's per task.

    Each network reports its task's metrics (``<task>/...``) and its one-task means; the
    means over tasks (``mean_*``, ``loss``) are means of those, and ``raw_mse``, a mean over
    samples, weighs each task by its ``sizes`` (samples in the split). A task with no sample
    in the split (an Exam school with no pupil in validation) has no metrics there, and its
    network's means are NaN: it is left out of the means, as the multi-task network's
    evaluation leaves it out.
    """
    held = [(m, n) for m, n in zip(per_task, sizes) if n > 0]
    merged: dict[str, float] = {}
    for metrics, _ in held:
        merged.update({k: v for k, v in metrics.items() if "/" in k})
    for key in per_task[0]:
        if key.startswith("mean_") or key == "loss":
            merged[key] = sum(m[key] for m, _ in held) / len(held)
    if "raw_mse" in per_task[0]:
        merged["raw_mse"] = sum(m["raw_mse"] * n for m, n in held) / sum(n for _, n in held)
    return merged


def run_single_task_networks(config: RunConfig, seed: int) -> dict[str, Any]:
    cached = _cached(config, seed)
    if cached is not None:
        return cached
    learners = single_task_learners(config, seed)

    def train_epoch(epoch: int) -> dict[str, float]:
        losses = [learner.train_epoch()["train/loss"] for learner in learners]
        return {"train/loss": sum(losses) / len(losses)}

    def evaluate(split: str) -> dict[str, float]:
        return merge_single_task_metrics(
            [learner.evaluate(split) for learner in learners],
            [learner.split_size(split) for learner in learners],
        )

    state = TrainingState(**{f"task{t}": learner for t, learner in enumerate(learners)})
    return run_epochs(
        config=config,
        method="stl",
        seed=seed,
        train_epoch=train_epoch,
        evaluate=evaluate,
        extra={"objective": STL_OBJECTIVE, "metrics_version": STL_METRICS_VERSION},
        state=state,
        models=[learner.net for learner in learners],
    )


def run_per_task(config: RunConfig, seed: int) -> dict[str, Any]:
    """One network per task (LossWeighting ids); with ``method_kwargs: {protocol: tabular}``
    under the hypernetwork paper's protocol."""
    if uses_tabular_protocol(config):
        return run_tabular(config, seed, "stl")
    return run_single_task_networks(config, seed)


def run_primary_only(config: RunConfig, seed: int) -> dict[str, Any]:
    """The primary task alone, no auxiliary loss (AuxLabel ids)."""
    return run_aux_baseline(config, seed, "stl", lambda learner, seed: None)
