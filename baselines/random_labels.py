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
from harness.config import RunConfig
from harness.lifecycle import stateless
from mtl_envs.training import AuxLearner, Labeller
from mtl_envs.utils import sub_seed


def random_labeller(learner: AuxLearner, seed: int) -> Labeller:
    psi = learner.config.hierarchy_factor
    generator = torch.Generator(device=learner.device)
    generator.manual_seed(sub_seed(seed, 1))  # a stream apart from every run's main one
    labels = learner.data.train.labels
    sub = torch.randint(0, psi, labels.shape, device=learner.device, generator=generator)
    aux = psi * labels + sub

    def label(indices, inputs):
        return F.one_hot(aux[indices], learner.num_aux).float(), None

    return stateless(label)


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_aux_baseline(config, seed, "random", random_labeller)
