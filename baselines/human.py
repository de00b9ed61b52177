"""Human auxiliary labels: CIFAR-100's 100 fine classes as the auxiliary task.

RL-AUX section 5 (figure 4: 75.53% on CIFAR-100-20). Each fine class is auxiliary class
``5 * superclass + rank`` inside its superclass, the same hierarchical label space the
generated tasks use (psi = 5).
"""

from __future__ import annotations

from typing import Any

from baselines.auxiliary import run_aux_baseline
from harness.config import RunConfig
from harness.lifecycle import stateless
from mtl_envs.errors import ConfigError
from mtl_envs.training import AuxLearner, Labeller, auxiliary_targets


def human_labeller(learner: AuxLearner, seed: int) -> Labeller:
    data = learner.data
    if data.train.fine_labels is None:
        raise ConfigError(
            f"The human baseline needs a dataset with fine labels (cifar100); "
            f"dataset {data.name!r} has none."
        )
    if data.num_fine_classes != learner.num_aux:
        raise ConfigError(
            f"`hierarchy_factor` ({learner.config.hierarchy_factor}) x {learner.num_primary} "
            f"primary classes must equal the {data.num_fine_classes} fine classes of the human "
            "auxiliary task."
        )
    psi = learner.config.hierarchy_factor
    rank, primary = data.train.fine_labels % psi, data.train.labels

    def label(indices, inputs):
        # The fine class's rank inside the block of the label the main task trains on: the
        # fine class itself, unless `label_noise` moved that label to another superclass
        # (the auxiliary target then stays in the hierarchy, as the env's human policy's).
        targets = auxiliary_targets(rank[indices], primary[indices], psi, learner.num_primary)
        return targets, None

    return stateless(label)


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_aux_baseline(config, seed, "human", human_labeller)
