"""Task-affinity scores from one all-task MTL run: ETAP (gradient alignment) and TAG (lookahead).

ETAP section 3.1: at step k, with per-task gradients g_i of the shared parameters, losses L_i,
learning rate eta and SGD momentum beta,

    z^k_{i->j} = g_j . (eta g_i - beta v^{k-1}) / L_j                          (eq. 5)

where ``-beta v^{k-1}`` is the momentum part of the update (PyTorch keeps the buffer
``b = -v / eta``, so the term is ``eta beta b``). Scores are averaged over steps (eq. 6) and
turned into group scores (eq. 7). TAG (Fifty et al., 2021) instead takes a lookahead step
with task i's update and measures ``1 - L_j(theta - Delta_i) / L_j(theta)`` on the same batch,
n extra forward passes per step. ``Delta_i`` is TAG's plain step ``eta g_i`` (section 3.1),
plus ``eta beta b`` under SGD with momentum (its reference code means to add the momentum
buffer). With a small ``eta`` the lookahead is first order and TAG's score is ETAP's
momentum-free one: on the shipped tables (Adam at 1e-3) the two correlate at 0.99999 and
0.98 (``docs/results.md``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mtl_envs.errors import ConfigError
from mtl_envs.training.multitask_learner import MultiTaskLearner, TrainingBatch
from mtl_envs.utils import check_int


def per_task_gradients(
    losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor]
) -> torch.Tensor:
    """(n, P) matrix of the gradients of each loss w.r.t. ``params``: one backward pass per
    task through the retained graph (on the small networks of the grouping protocols this is
    about twice as fast as one ``vmap``-batched backward, whose fixed cost dominates)."""
    params = list(params)
    sizes = [p.numel() for p in params]
    ends = np.cumsum(sizes).tolist()
    out = torch.zeros(len(losses), ends[-1] if ends else 0, device=params[0].device)
    for i, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        for g, size, end in zip(grads, sizes, ends):
            if g is not None:  # a parameter this task does not reach (another head): 0
                out[i, end - size : end] = g.reshape(-1)
    return out


class HeadSplit:
    """Per-task gradients of a multi-head network, split at the shared representation.

    Every head reads its own detached view of the encoder's output, so one backward pass of
    the summed losses gives each head's gradient (its task's alone) and each task's gradient
    of the representation (``delta_i``); task i's encoder gradient is then the encoder's
    vector-Jacobian product with ``delta_i``, all n of them in one batched pass through the
    encoder. The same numbers as :func:`per_task_gradients` (the chain rule), without n
    passes through the losses and heads. The heads' gradients stay per head: the update
    needs them, the scores do not.

    Args:
        net: a network with a ``backbone`` and one head per task.
        per_task_encoder: compute the per-task encoder gradients (the exact scores' input);
            ``False`` scores with the ``delta_i`` themselves (``gradients="representation"``)
            and the update's encoder gradient is one plain vector-Jacobian product.
    """

    def __init__(self, net: torch.nn.Module, per_task_encoder: bool = True):
        self.net = net
        self.per_task_encoder = per_task_encoder
        self.encoder = [p for p in net.backbone.parameters() if p.requires_grad]
        per_head = [[p for p in head.parameters() if p.requires_grad] for head in net.heads]
        self.heads = [p for head in per_head for p in head]
        self.params = self.encoder + self.heads
        """Every trainable parameter: the encoder's, then each head's in task order."""
        self._encoder_sizes = [p.numel() for p in self.encoder]
        self._owner = [task for task, head in enumerate(per_head) for _ in head]
        """Task of each head parameter."""
        self._last: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]] | None = None

    def __call__(
        self, learner: MultiTaskLearner, batch: TrainingBatch
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The task losses of ``batch`` and the (n, S) per-task gradients the scores use: of
        the encoder's parameters, or of the representation (``per_task_encoder=False``)."""
        net = self.net
        net.train()
        features = net.backbone(batch.inputs)
        n = len(net.heads)
        # One leaf per head (views of the same values): each head's input gradient arrives
        # on its own, where slices of one (n, ...) leaf would each fill a zero tensor of it.
        copies = [features.detach().requires_grad_(True) for _ in range(n)]
        losses = learner.masked_losses([head(x) for head, x in zip(net.heads, copies)], batch)
        grads = torch.autograd.grad(
            torch.stack(losses).sum(), [*copies, *self.heads], materialize_grads=True
        )
        deltas = torch.stack(grads[:n])
        if self.per_task_encoder:
            encoder_grads = torch.autograd.grad(
                features, self.encoder, deltas, is_grads_batched=True, materialize_grads=True
            )
            scored = torch.cat([g.reshape(n, -1) for g in encoder_grads], 1)
        else:
            scored = deltas.reshape(n, -1)
        self._last = (features, scored, list(grads[n:]))
        return losses, scored

    def gradients(self, coefficients: torch.Tensor) -> list[torch.Tensor]:
        """The objective's gradient ``sum_i c_i g_i`` w.r.t. each of :attr:`params` for the
        last call's batch, from its per-task gradients (each head's its task's only).

        Per parameter, not one flat vector: the heads' gradients arrive per parameter, and
        on the grouping protocols' small networks concatenating them and splitting the sum
        again is a visible share of a step."""
        if self._last is None:
            raise RuntimeError("HeadSplit.gradients needs a batch: call the split first.")
        features, scored, head_grads = self._last
        self._last = None  # the graph and the gradients serve one update
        if self.per_task_encoder:
            flat = coefficients @ scored
            parts = flat.split(self._encoder_sizes)
            encoder = [g.view_as(p) for g, p in zip(parts, self.encoder)]
        else:  # the encoder's VJP with the combined representation gradient
            combined = (coefficients @ scored).view_as(features)
            encoder = list(
                torch.autograd.grad(features, self.encoder, combined, materialize_grads=True)
            )
        per_task = coefficients.unbind()
        heads = torch._foreach_mul(head_grads, [per_task[k] for k in self._owner])
        return encoder + list(heads)


def step_affinity(
    grads: torch.Tensor,
    losses: torch.Tensor,
    lr: float,
    momentum: float = 0.0,
    buffer: torch.Tensor | None = None,
) -> torch.Tensor:
    """ETAP eq. 5 for one step: ``z[i, j] = eta g_j . (g_i + beta b) / L_j`` (n, n).

    Args:
        grads: (n, P) per-task gradients of the shared parameters.
        losses: (n,) task losses of the batch.
        lr: learning rate eta.
        momentum: beta; 0 gives the momentum-free score.
        buffer: (P,) PyTorch SGD momentum buffer before this step (b = -v / eta).
    """
    scores = grads @ grads.T  # [j, i] = g_j . g_i
    if momentum and buffer is not None:
        scores = scores + momentum * (grads @ buffer)[:, None]  # row j: g_j . b
    return (lr * scores / losses[:, None]).T  # transpose: [i, j] = score from i to j


def group_affinity(affinity: np.ndarray, group: Sequence[int]) -> dict[int, float]:
    """ETAP eq. 7: ``z_{G->i}`` = mean over j in G \\ {i} of ``z_{j->i}``; 0 for a singleton."""
    group = list(group)
    if len(group) == 1:
        return {group[0]: 0.0}
    return {i: float(np.mean([affinity[j, i] for j in group if j != i])) for i in group}


@dataclass
class AffinityScores:
    """Time-averaged pairwise scores ``[i, j]`` = affinity from task i to task j."""

    etap: np.ndarray
    """Eq. 6 with momentum (eq. 4-5)."""
    etap_no_momentum: np.ndarray
    """Eq. 6 without the momentum term."""
    tag: np.ndarray | None
    """TAG lookahead affinity, when collected."""
    steps: int
    seconds: float


GRADIENTS = ("parameters", "representation")


def collect_affinities(
    learner: MultiTaskLearner,
    epochs: int,
    etap: bool = True,
    tag: bool = False,
    every: int = 1,
    gradients: str = "parameters",
) -> AffinityScores:
    """Train ``learner`` (all its tasks, equal weights) for ``epochs`` epochs and average the
    per-step affinity scores over every ``every``-th step (1 = all steps, eq. 6). With
    ``etap=tag=False`` it is the plain run (for timing).

    ETAP's momentum term reads the SGD momentum buffer, so the learner should use
    ``optimizer="sgd"``; with Adam the momentum-free score is the meaningful one.

    ``gradients="representation"`` scores with the per-task gradients of the shared
    representation (the encoder's output for the batch) instead of the shared parameters,
    as MGDA-UB approximates them: no pass through the encoder per task. It has no momentum
    term (the momentum buffer lives in parameter space): ``etap`` is then the momentum-free
    score. ``benchmarks/affinity_cost.py`` measures its cost and its agreement with the
    exact scores; on the Digits10 protocol it agrees poorly (Pearson 0.10 over the
    off-diagonal pairs), so the exact scores stay the default.
    """
    from mtl_envs.utils import check_choice

    check_choice("gradients", gradients, GRADIENTS)
    if gradients == "representation" and tag:
        raise ConfigError("TAG's lookahead needs parameter gradients: gradients='parameters'.")
    if learner.config.model is not None:
        raise ConfigError(
            f"collect_affinities needs a shared encoder with one head per task (model=None); "
            f"got model={learner.config.model!r}, which has no shared parameters to score."
        )
    n = learner.num_tasks
    shared = [p for p in learner.net.backbone.parameters() if p.requires_grad]
    # Where the update is the plain equal-weight one, the per-task gradients (the heads'
    # too) give both the scores and the update, saving a backward pass.
    exact = gradients == "parameters"
    reuse = learner.weighting is None and learner.aggregator is None
    split = HeadSplit(learner.net, per_task_encoder=exact) if reuse else None
    # No momentum term on representation gradients: the buffer lives in parameter space.
    beta = learner.config.momentum if learner.config.optimizer == "sgd" and exact else 0.0
    check_int("every", every)
    sums = {k: torch.zeros(n, n, device=learner.device) for k in ("etap", "plain", "tag")}
    # Steps that scored each pair: a task with no labelled sample in a batch has no loss to
    # divide by (eq. 5) or to compare (TAG), so its pairs skip that step.
    scored = torch.zeros(n, n, device=learner.device)
    steps = 0
    start = time.perf_counter()
    for _ in range(epochs):
        learner.begin_epoch()
        while not learner.epoch_done:
            batch = learner.prepare_batch(learner.next_indices())
            score = (etap or tag) and steps % every == 0
            if score and reuse:
                losses, grads = split(learner, batch)
            else:
                losses, features = learner.batch_losses(batch)
            detached = torch.stack(losses).detach()
            if score and exact and not reuse:
                grads = per_task_gradients(losses, shared)
            elif score and not reuse:
                grads = per_task_gradients(losses, [features])
            if score:
                lr = learner.lr  # eq. 5's eta: the step's own rate, after any decay
                buffer = _momentum_buffer(learner, shared) if beta else None
                present = batch.mask.any(0)
                valid = present[:, None] & present[None, :]
                scored += valid
            if score and etap:
                plain = torch.where(valid, step_affinity(grads, detached, lr), 0.0)
                sums["plain"] += plain
                if beta:
                    step = step_affinity(grads, detached, lr, beta, buffer)
                    sums["etap"] += torch.where(valid, step, 0.0)
                else:  # no momentum: eq. 5 is the momentum-free score
                    sums["etap"] += plain
            if score and tag:
                step = _lookahead_affinity(
                    learner, batch, shared, grads, detached, lr, beta, buffer
                )
                sums["tag"] += torch.where(valid, step, 0.0)
            if score and reuse:
                coefficients = learner.objective_coefficients(detached)
                learner.apply_gradients(detached, split.gradients(coefficients), split.params)
            else:
                learner.apply(losses, features, None)
            steps += 1
        learner.end_epoch()
    seconds = time.perf_counter() - start
    mean = {k: (v / scored.clamp_min(1.0)).cpu().numpy() for k, v in sums.items()}
    return AffinityScores(
        etap=mean["etap"],
        etap_no_momentum=mean["plain"],
        tag=mean["tag"] if tag else None,
        steps=steps,
        seconds=seconds,
    )


def _momentum_buffer(learner: MultiTaskLearner, params: list[torch.Tensor]) -> torch.Tensor:
    parts = []
    for p in params:
        buf = learner.optimizer.state.get(p, {}).get("momentum_buffer")
        parts.append(torch.zeros(p.numel(), device=p.device) if buf is None else buf.reshape(-1))
    return torch.cat(parts)


@torch.no_grad()
def _lookahead_affinity(
    learner: MultiTaskLearner,
    batch: TrainingBatch,
    shared: list[torch.Tensor],
    grads: torch.Tensor,
    losses: torch.Tensor,
    lr: float,
    beta: float,
    buffer: torch.Tensor | None,
) -> torch.Tensor:
    """TAG: ``z[i, j] = 1 - L_j(theta_s - eta (g_i + beta b)) / L_j(theta_s)`` on the batch.

    The lookahead losses come from the same prepared batch (the same augmentation draw) and
    the same loss code as ``losses``, so a zero step gives zero scores.
    """
    names = [name for name, p in learner.net.backbone.named_parameters() if p.requires_grad]
    sizes = [p.numel() for p in shared]
    scores = torch.zeros(len(losses), len(losses), device=losses.device)
    for i in range(len(losses)):
        step = grads[i] if buffer is None else grads[i] + beta * buffer
        deltas = torch.split(lr * step, sizes)
        params = {n: p - d.view_as(p) for n, p, d in zip(names, shared, deltas)}
        after, _ = learner.batch_losses(batch, shared=params)
        scores[i] = 1.0 - torch.stack(after) / losses
    return scores
