"""Random auxiliary task: every training image gets a fixed, uniformly drawn sub-class.

The labels are drawn once per run (from the run's seed) inside each image's primary block,
so the auxiliary task is consistent across epochs but carries no information beyond the
primary label: the control that shows what *learning* the labels adds.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from baselines.auxiliary import run_aux_baseline
from mtl_envs.experiment import RunConfig
from mtl_envs.training import AuxLearner, Labeller


def random_labeller(learner: AuxLearner, seed: int) -> Labeller:
    psi = learner.config.hierarchy_factor
    generator = torch.Generator(device=learner.device)
    generator.manual_seed(seed + 1)
    labels = learner.data.train.labels
    sub = torch.randint(0, psi, labels.shape, device=learner.device, generator=generator)
    aux = psi * labels + sub

    def label(indices, inputs):
        return F.one_hot(aux[indices], learner.num_aux).float(), None

    return label


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    """Random auxiliary labels (AuxLabel ids) or random groups (TaskGrouping ids)."""
    from baselines import random_groups
    from baselines.grouping import is_task_grouping

    if is_task_grouping(config.env_id):
        return random_groups.run(config, seed)
    return run_aux_baseline(config, seed, "random", random_labeller)
