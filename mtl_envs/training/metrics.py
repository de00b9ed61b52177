"""Classification metrics computed on the device from a confusion matrix."""

from __future__ import annotations

import math

import torch

from mtl_envs.errors import ConfigError


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = true class, columns = predicted class."""
    flat = target * num_classes + pred
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1 (RL-AUX appendix A.3).

    A class never predicted has precision 0 and a class with no samples recall 0, as in
    scikit-learn's ``zero_division=0``; macro averages run over all classes.
    """
    confusion = confusion.double()
    true_pos = confusion.diag()
    predicted = confusion.sum(dim=0)
    actual = confusion.sum(dim=1)
    precision = torch.where(predicted > 0, true_pos / predicted.clamp_min(1), 0.0)
    recall = torch.where(actual > 0, true_pos / actual.clamp_min(1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12), 0.0)
    return {
        "accuracy": float(true_pos.sum() / confusion.sum().clamp_min(1)),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
    }


# Per-task metric names and whether higher is better (delta_k = 1 in IGB eq. 5).
HIGHER_IS_BETTER = {"accuracy": True, "precision": True, "recall": True, "f1": True, "mse": False}


def delta_m(method: dict[str, float], reference: dict[str, float]) -> float:
    """IGB eq. 5, in percent: ``100/K sum_k (-1)^delta_k (M_m,k - M_b,k) / M_b,k``.

    The mean signed relative change against the single-task reference over all K per-task
    metrics (keys ``<split>/<task>/<metric>``); delta_k = 1 when higher is better, so an
    improvement counts negative and lower is better.

    Raises:
        ValueError: when the two share no per-task metric.
    """
    terms = []
    for key, base in reference.items():
        parts = key.split("/")
        if len(parts) < 3 or parts[-1] not in HIGHER_IS_BETTER or key not in method:
            continue
        sign = -1.0 if HIGHER_IS_BETTER[parts[-1]] else 1.0
        terms.append(sign * (method[key] - base) / base)
    if not terms:
        raise ConfigError("No per-task metrics in common between the method and the reference.")
    return 100.0 * sum(terms) / len(terms)


def task_target_variance(targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-task variance of regression targets, the scale of the normalised MSE: ``targets``
    of shape (samples, tasks, outputs), ``mask`` (samples, tasks) marking the samples each
    task holds; the variance is averaged over a task's outputs. A task with fewer than two
    samples (one London school of Exam has a single training student), or whose targets
    are all equal, has no spread of its own to measure errors against and takes the
    variance of all tasks' targets pooled, a scale that fits it only as well as the tasks
    share one (so a constant task's error is never divided by rounding noise). The result
    is floored at 1e-12 only when every target of every task is the same."""
    weights = mask.to(targets.dtype)[:, :, None]
    count = weights.sum(0)
    mean = (targets * weights).sum(0) / count.clamp_min(1.0)
    own = (((targets - mean) ** 2) * weights).sum(0) / count.clamp_min(1.0)
    total = weights.sum((0, 1))
    pooled_mean = (targets * weights).sum((0, 1)) / total.clamp_min(1.0)
    pooled = (((targets - pooled_mean) ** 2) * weights).sum((0, 1)) / total.clamp_min(1.0)
    # All equal, tested on the values themselves: their float mean need not be exact.
    held = mask[:, :, None]
    constant = targets.masked_fill(~held, -math.inf).amax(0) == targets.masked_fill(
        ~held, math.inf
    ).amin(0)
    return torch.where((count >= 2) & ~constant, own, pooled).mean(-1).clamp_min(1e-12)
