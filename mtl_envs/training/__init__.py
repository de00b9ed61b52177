"""Steppable learners (no Gym): the one implementation of each training loop."""

from mtl_envs.training.aux_learner import AuxLearner, AuxLearnerConfig, Labeller
from mtl_envs.training.losses import (
    auxiliary_targets,
    focal_loss,
    hierarchy_mask,
    label_entropy,
    masked_softmax,
    weight_from_bin,
)
from mtl_envs.training.metrics import classification_metrics, confusion_matrix

__all__ = [
    "AuxLearner",
    "AuxLearnerConfig",
    "Labeller",
    "auxiliary_targets",
    "classification_metrics",
    "confusion_matrix",
    "focal_loss",
    "hierarchy_mask",
    "label_entropy",
    "masked_softmax",
    "weight_from_bin",
]
