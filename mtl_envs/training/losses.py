"""Loss pieces of auxiliary learning, each citing the formula it implements.

Paper: "Generating Auxiliary Tasks with Reinforcement Learning" (RL-AUX), which adopts the
masked softmax and focal loss of MAXL (Liu et al., 2019).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtl_envs.errors import ConfigError


def hierarchy_mask(
    primary_labels: torch.Tensor, hierarchy_factor: int, num_primary: int
) -> torch.Tensor:
    """Boolean mask m of RL-AUX eq. 6: ``m_k = 1`` iff ``psi*y <= k < psi*(y+1)``.

    Args:
        primary_labels: (B,) primary class ids y.
        hierarchy_factor: psi, auxiliary sub-classes per primary class.
        num_primary: number of primary classes; K = psi * num_primary.

    Returns:
        (B, K) bool tensor.
    """
    k = torch.arange(hierarchy_factor * num_primary, device=primary_labels.device)
    start = (hierarchy_factor * primary_labels)[:, None]
    return (k >= start) & (k < start + hierarchy_factor)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RL-AUX eq. 5: ``p_k = exp(z_k) m_k / sum_j exp(z_j) m_j``, computed stably."""
    return logits.masked_fill(~mask, float("-inf")).softmax(dim=-1)


def auxiliary_targets(
    labels: torch.Tensor,
    primary_labels: torch.Tensor,
    hierarchy_factor: int,
    num_primary: int,
    label_space: str = "hierarchical",
) -> torch.Tensor:
    """Auxiliary target distributions (B, K) from chosen auxiliary labels.

    ``label_space="hierarchical"``: ``labels`` are sub-class indices a in [0, psi); the target is
    the one-hot vector of class ``psi*y + a``, which always lies inside the sample's block.
    ``label_space="flat"``: ``labels`` are classes in [0, K); a label outside the sample's block
    is replaced by the masked softmax of zero logits, i.e. the uniform distribution over the
    block (the behaviour of the public RL-AUX code).
    """
    k_total = hierarchy_factor * num_primary
    if label_space == "hierarchical":
        classes = hierarchy_factor * primary_labels + labels
        return F.one_hot(classes, k_total).float()
    if label_space == "flat":
        mask = hierarchy_mask(primary_labels, hierarchy_factor, num_primary)
        one_hot = F.one_hot(labels, k_total).float()
        inside = mask.gather(1, labels[:, None])
        uniform = masked_softmax(torch.zeros_like(one_hot), mask)
        return torch.where(inside, one_hot, uniform)
    raise ConfigError(
        f"`label_space` must be one of ['hierarchical', 'flat']; got {label_space!r}."
    )


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Per-sample focal loss ``-sum_k t_k (1 - p_k)^gamma log p_k`` with p = softmax(logits).

    The auxiliary loss of MAXL adopted by RL-AUX (section 3, "Focal loss is used after the
    Masked Soft-max"), with gamma = 2 as in the MAXL code. The masked softmax (eq. 5-6)
    makes the target t, which lies inside the sample's block of psi classes; the prediction
    p is a softmax over all K classes, as the auxiliary head of the MAXL and public RL-AUX
    code computes it, so the head also learns which block an image belongs to. ``log p``
    comes from one log-softmax of the logits (no softmax of probabilities).

    Returns:
        (B,) losses.
    """
    log_p = F.log_softmax(logits, dim=-1)
    modulator = (1.0 - log_p.exp()).pow(gamma)
    return -(target * modulator * log_p).sum(dim=-1)


def label_entropy(targets: torch.Tensor) -> torch.Tensor:
    """Shannon entropy ``-sum_k pbar_k log pbar_k`` of the batch-mean auxiliary distribution.

    RL-AUX eq. 3 writes the sum without the minus sign; the term is there to guard against
    the degenerate labelling where each primary class uses a single auxiliary class, so the
    reward (eq. 4) must *increase* with diversity. We therefore use the entropy itself, the
    same quantity MAXL minimises the negative of.
    """
    mean = targets.mean(dim=0)
    return -(mean * torch.log(mean.clamp_min(1e-12))).sum()


def weight_from_bin(
    bins: torch.Tensor, num_bins: int = 21, exponent_range: tuple[float, float] = (-5.0, 5.0)
) -> torch.Tensor:
    """Sample weight of RL-AUX eq. 8: bin b -> w = b / (num_bins - 1) -> ``2^(lo + (hi-lo) w)``.

    With the paper's 21 bins and range (-5, 5) this is ``2^(10w - 5)`` in [2^-5, 2^5]; the
    later public code used ``2^(8w - 3)``, i.e. ``exponent_range=(-3, 5)``.
    """
    lo, hi = exponent_range
    w = (bins if bins.is_floating_point() else bins.float()) / (num_bins - 1)
    return torch.exp2(lo + (hi - lo) * w)


def max_label_entropy(num_classes: int) -> float:
    """Upper bound ``log K`` of :func:`label_entropy`."""
    return math.log(num_classes)
