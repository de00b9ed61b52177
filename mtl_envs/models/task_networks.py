"""Networks for many small tasks whose samples each belong to one task (tabular MTL).

Every model maps ``(x, task)`` to the prediction of the sample's own task, so a batch that
mixes tasks runs in one pass: per-task weights are gathered by task id and applied with a
batched matmul (:func:`task_linear`), never a Python loop over tasks. ``forward_all(x)``
gives every task's prediction for every sample, (B, T, out), for learners that need all heads.

The baselines of the Multi-Task Hypernetwork paper (``000_6f85eb44aaf9e6f8.txt``, section 4):

* :class:`STLNaive`: one network, no task information;
* :class:`STLTaskInfo`: one network given the task, as metadata appended to the inputs or, without
  metadata, as a one-hot task code (the paper's "STL");
* :class:`PerTaskNetworks`: an independent network per task;
* :class:`HardSharing`: a shared trunk with a linear output layer per task, metadata (when
  used) appended to the inputs "naively" as section 3 describes;
* :class:`CrossStitch`: one network per task whose hidden activations are mixed across tasks
  by learned cross-stitch units (Misra et al., 2016), one of the paper's soft-sharing rows;
* :class:`Sluice`: sluice networks (Ruder et al., 2019), cross-stitch over subspaces with
  layer-stitch units and orthogonal subspaces, another of them;
* :class:`DMTRL`: deep multi-task representation learning (Yang and Hospedales, 2017), one
  network per task whose layers' weights are factorised across tasks, a third;
* :class:`MRN`: multilinear relationship networks (Long et al., 2017), hard sharing whose
  per-task output layers carry a tensor-normal prior with learned task and feature
  covariances, a fourth;
* :class:`MaxRoam`: maximum roaming (Pascal et al., 2021), a shared trunk of which each task
  uses a partition of the units that roams over the training, a fifth.

All use the paper's target architecture: three fully connected ReLU layers of 32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mtl_envs.errors import ConfigError
from mtl_envs.utils import (
    check_choice,
    check_int,
    check_number,
    check_widths,
    is_finite_number,
)

DEFAULT_HIDDEN = (32, 32, 32)


def task_linear(x: torch.Tensor, weight: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
    """Apply each sample's task-specific linear layer.

    Args:
        x: (B, d_in) inputs.
        weight: (T, d_in + 1, d_out) per-task weights; the last row is the bias.
        task: (B,) task id of each sample.

    Returns:
        (B, d_out) outputs.
    """
    w = weight.index_select(0, task)  # backward is an index_add, cheaper than indexing's
    return torch.baddbmm(w[:, -1:, :], x.unsqueeze(1), w[:, :-1, :]).squeeze(1)


def all_tasks_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Apply every task's linear layer: x (B, d_in) or (B, T, d_in) -> (B, T, d_out)."""
    if x.dim() == 2:
        return torch.einsum("bi,tio->bto", x, weight[:, :-1]) + weight[:, -1]
    return torch.einsum("bti,tio->bto", x, weight[:, :-1]) + weight[:, -1]


def task_layers(
    x: torch.Tensor, weights: Sequence[torch.Tensor], task: torch.Tensor
) -> torch.Tensor:
    """Each sample through its task's stacked layers (:func:`task_linear`), ReLU between."""
    for i, w in enumerate(weights):
        x = task_linear(x, w, task)
        if i < len(weights) - 1:
            x = torch.relu(x)
    return x


def all_tasks_layers(x: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Every sample through every task's stacked layers (:func:`all_tasks_linear`), ReLU
    between: (B, T, d_out)."""
    for i, w in enumerate(weights):
        x = all_tasks_linear(x, w)
        if i < len(weights) - 1:
            x = torch.relu(x)
    return x


def stacked_layers(num_tasks: int, widths: Sequence[int]) -> nn.ParameterList:
    """One linear layer per task between consecutive ``widths``, stacked as (T, d_in + 1,
    d_out) weights (bias last) for :func:`task_linear` and :func:`all_tasks_linear`, each
    task's initialised as ``nn.Linear``'s default."""
    layers = nn.ParameterList()
    for d_in, d_out in zip(widths[:-1], widths[1:]):
        bound = 1.0 / math.sqrt(d_in)
        layers.append(nn.Parameter(torch.empty(num_tasks, d_in + 1, d_out).uniform_(-bound, bound)))
    return layers


def mlp(widths: Sequence[int], final_activation: bool = False) -> nn.Sequential:
    """Linear layers between consecutive ``widths`` with ReLU between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if final_activation or i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TaskNetwork(nn.Module):
    """Base class: ``forward(x, task) -> (B, out)`` and ``forward_all(x) -> (B, T, out)``.

    A network with work of its own at the end of each training epoch, outside the optimiser
    (:class:`MRN`'s covariance updates, :class:`MaxRoam`'s roaming), defines
    ``after_epoch()``; the learner calls it.

    Args:
        num_tasks: T.
        in_features: input features per sample.
        out_features: outputs per sample (3 joint angles for the robot arm, 1 for a scalar).
    """

    def __init__(self, num_tasks: int, in_features: int, out_features: int):
        super().__init__()
        for name, value in (
            ("num_tasks", num_tasks),
            ("in_features", in_features),
            ("out_features", out_features),
        ):
            check_int(name, value)
        self.num_tasks = num_tasks
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def task_parameters(self) -> list[nn.Parameter]:
        """Parameters stacked by task, whose slice ``[t]`` only task t's samples read (a
        head, an embedding, a whole per-task network): a task's loss has no gradient on the
        other tasks' slices. IGB Algorithm 3 gives these each task's own gradient and
        aggregates only the rest, the shared parameters. None by default."""
        return []

    def penalty(self) -> torch.Tensor | None:
        """A term of the network's own that joins every training loss (a regulariser on its
        parameters, not a task's loss), or ``None``: none by default."""
        return None

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Every task's prediction for every sample, (B, T, out)."""
        b, t = x.shape[0], self.num_tasks
        task = torch.arange(t, device=x.device).repeat(b)
        return self(x.repeat_interleave(t, dim=0), task).view(b, t, -1)


def _metadata_buffer(module: nn.Module, metadata: torch.Tensor | None, num_tasks: int) -> int:
    """Register task metadata (T, d_m) as a frozen buffer; returns d_m (0 without)."""
    if metadata is None:
        module.register_buffer("metadata", None)
        return 0
    metadata = torch.as_tensor(metadata, dtype=torch.float32)
    if metadata.dim() != 2 or metadata.shape[0] != num_tasks:
        raise ConfigError(
            f"`metadata` must have shape (num_tasks={num_tasks}, d_m); got {tuple(metadata.shape)}."
        )
    module.register_buffer("metadata", metadata.clone())
    return int(metadata.shape[1])


def with_metadata(
    x: torch.Tensor, metadata: torch.Tensor | None, task: torch.Tensor
) -> torch.Tensor:
    """The inputs with each sample's task metadata appended (unchanged without metadata)."""
    return x if metadata is None else torch.cat([x, metadata[task]], dim=1)


class STLNaive(TaskNetwork):
    """One network for all tasks that never sees which task a sample comes from."""

    def __init__(
        self,
        num_tasks: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        metadata: torch.Tensor | None = None,
    ):
        super().__init__(num_tasks, in_features, out_features)
        hidden = check_widths("model_kwargs.hidden", hidden)
        self.net = mlp([in_features, *hidden, out_features])

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class STLTaskInfo(TaskNetwork):
    """One network whose inputs carry the task: its metadata, or a one-hot code without."""

    def __init__(
        self,
        num_tasks: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        metadata: torch.Tensor | None = None,
    ):
        super().__init__(num_tasks, in_features, out_features)
        hidden = check_widths("model_kwargs.hidden", hidden)
        if _metadata_buffer(self, metadata, num_tasks) == 0:
            self.metadata = torch.eye(num_tasks)
        self.net = mlp([in_features + self.metadata.shape[1], *hidden, out_features])

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return self.net(with_metadata(x, self.metadata, task))


class PerTaskNetworks(TaskNetwork):
    """T independent networks, stored as stacked (T, d_in + 1, d_out) weights per layer."""

    def __init__(
        self,
        num_tasks: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        metadata: torch.Tensor | None = None,
    ):
        super().__init__(num_tasks, in_features, out_features)
        hidden = check_widths("model_kwargs.hidden", hidden)
        self.weights = stacked_layers(num_tasks, [in_features, *hidden, out_features])

    def task_parameters(self) -> list[nn.Parameter]:
        return list(self.weights)  # nothing is shared

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return task_layers(x, list(self.weights), task)

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        return all_tasks_layers(x, list(self.weights))


class HardSharing(TaskNetwork):
    """A shared ReLU trunk and one linear output layer per task (hard parameter sharing)."""

    def __init__(
        self,
        num_tasks: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        metadata: torch.Tensor | None = None,
    ):
        super().__init__(num_tasks, in_features, out_features)
        hidden = check_widths("model_kwargs.hidden", hidden, allow_empty=False)
        d_m = _metadata_buffer(self, metadata, num_tasks)
        self.trunk = mlp([in_features + d_m, *hidden], final_activation=True)
        bound = 1.0 / math.sqrt(hidden[-1])
        head = torch.empty(num_tasks, hidden[-1] + 1, out_features).uniform_(-bound, bound)
        self.heads = nn.Parameter(head)

    def _features(self, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        return self.trunk(with_metadata(x, self.metadata, task))

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return task_linear(self._features(x, task), self.heads, task)

    def task_parameters(self) -> list[nn.Parameter]:
        return [self.heads]

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        if self.metadata is not None:  # the trunk's input depends on the task
            return super().forward_all(x)
        return all_tasks_linear(self.trunk(x), self.heads)


def convex_rows(size: int, self_weight: float) -> torch.Tensor:
    """A ``size x size`` mixing matrix whose rows are convex combinations: ``self_weight`` on
    the diagonal, the rest of each row shared equally (the identity when ``size`` is 1)."""
    off = (1.0 - self_weight) / (size - 1) if size > 1 else 0.0
    alpha = torch.full((size, size), off)
    alpha.fill_diagonal_(self_weight if size > 1 else 1.0)
    return alpha


class CrossStitch(TaskNetwork):
    """Cross-stitch networks (Misra et al., 2016, eq. 1) for T tasks: one column (a ReLU
    network of ``hidden`` widths) per task, and after each hidden layer a cross-stitch unit
    that replaces column t's activations by ``sum_s alpha[t, s] h_s``, a learned T x T matrix
    per layer (one scalar per pair of tasks, as in eq. 1). A sample of task t is read from
    column t's output layer; every column sees every sample, so the columns learn from each
    other's tasks through alpha.

    ``self_weight``: alpha's diagonal at initialisation; the rest of each row shares
    ``1 - self_weight`` equally, so every row starts as a convex combination, as the paper's
    two-task units start at (0.9, 0.1). Metadata (when used) is appended to the inputs, as
    for the other baselines. Only the output layers are per task in the sense of
    :meth:`TaskNetwork.task_parameters` (slice t is read by task t's samples alone); through
    alpha, every task's loss reaches every column's hidden layers.

    Every sample runs through all T columns, so a step costs T times a column's step; with
    metadata, :meth:`forward_all` runs each sample once per task on top of that (B T inputs
    through T columns), which is slow for T in the hundreds.
    """

    def __init__(
        self,
        num_tasks: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        metadata: torch.Tensor | None = None,
        self_weight: float = 0.9,
    ):
        super().__init__(num_tasks, in_features, out_features)
        hidden = check_widths("model_kwargs.hidden", hidden, allow_empty=False)
        if not 0.0 <= self_weight <= 1.0:
            raise ConfigError(f"`model_kwargs.self_weight` must be in [0, 1]; got {self_weight!r}.")
        d_m = _metadata_buffer(self, metadata, num_tasks)
        self.weights = stacked_layers(num_tasks, [in_features + d_m, *hidden, out_features])
        alpha = convex_rows(num_tasks, self_weight)
        self.alphas = nn.ParameterList(
            nn.Parameter(alpha.clone()) for _ in range(len(self.weights) - 1)
        )

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Every column's last hidden activations after its cross-stitch unit, (B, T, h)."""
        # zip stops at the last alpha: the output layer has no unit. No slice of the list:
        # under torch.func.functional_call a sliced ParameterList wraps the swapped-in
        # tensors in new leaf Parameters, which cuts their gradient.
        for w, alpha in zip(self.weights, self.alphas):
            x = torch.einsum("ts,bsh->bth", alpha, torch.relu(all_tasks_linear(x, w)))
        return x

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        h = self._hidden(with_metadata(x, self.metadata, task))
        own = h[torch.arange(len(task), device=h.device), task]  # column t for task t
        return task_linear(own, self.weights[-1], task)

    def task_parameters(self) -> list[nn.Parameter]:
        return [self.weights[-1]]

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        if self.metadata is not None:  # the inputs depend on the task
            return super().forward_all(x)
        return all_tasks_linear(self._hidden(x), self.weights[-1])


class Sluice(CrossStitch):
    """Sluice networks (Ruder et al., 2019, "Latent multi-task architecture learning"), the
    generalisation of :class:`CrossStitch` that Table 2 of the hypernetwork paper lists
    beside it. One column per task, as in cross-stitch, with three additions:

    * **Subspaces.** Each hidden layer's ``h`` units are split into ``subspaces`` blocks of
      ``h / subspaces``, and the unit after each hidden layer mixes blocks, not whole layers:
      a learned ``(T S) x (T S)`` matrix alpha replaces block s of column t by
      ``sum_(u, r) alpha[(t, s), (u, r)] h_(u, r)``. Initialised as cross-stitch's:
      ``self_weight`` on the diagonal, the rest of each row sharing ``1 - self_weight``.
    * **Layer stitching.** Task t's output layer reads ``sum_k beta[t, k] h_(t, k)``, a
      learned mixture of its column's hidden layers after their units (all hidden layers
      must be equally wide); beta starts at ``1 / L`` for L hidden layers, the reference
      code's default ("balanced").
    * **Orthogonal subspaces.** :meth:`penalty` adds
      ``orthogonality * sum_(t, k) ||W_(t,k,1)^T W_(t,k,2)||_F^2`` to the training loss for
      two subspaces, where ``W_(t,k,s)`` (h x h/2) holds the weights with which subspace
      s's units of layer k in column t read the layer below: zero when every unit of one
      subspace reads it along directions orthogonal to every unit of the other's. Only the
      layers that read a hidden layer are constrained, as the reference code constrains its
      LSTMs' hidden-state matrices and not their input matrices (on a one-feature input,
      as Cubic's, the constraint could only be met by silencing one subspace). The
      hypernetwork paper gives no value for the weight; 0.01 is this package's default and
      the tabular protocol does not tune it.

    With one subspace, betas fixed to the last layer and no penalty it is :class:`CrossStitch`
    (tested). Metadata, when used, is appended to the inputs, as for the other baselines.
    """

    def __init__(
        self,
        num_tasks: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        metadata: torch.Tensor | None = None,
        self_weight: float = 0.9,
        subspaces: int = 2,
        orthogonality: float = 0.01,
    ):
        super().__init__(num_tasks, in_features, out_features, hidden, metadata, self_weight)
        hidden = list(hidden)
        check_int("model_kwargs.subspaces", subspaces)
        if any(width % subspaces for width in hidden):
            raise ConfigError(
                f"`model_kwargs.subspaces` ({subspaces}) must divide every hidden width; got "
                f"hidden {hidden}."
            )
        if len(set(hidden)) != 1:
            raise ConfigError(
                f"`model_kwargs.hidden` must hold equal widths for the layer-stitch mixture of "
                f"a column's hidden layers; got {hidden}."
            )
        check_number("model_kwargs.orthogonality", orthogonality)
        if orthogonality and subspaces != 2:
            raise ConfigError(
                "`model_kwargs.orthogonality` constrains two subspaces; set subspaces=2 or "
                f"orthogonality=0 (got subspaces={subspaces})."
            )
        self.subspaces = subspaces
        self.orthogonality = float(orthogonality)
        alpha = convex_rows(num_tasks * subspaces, self_weight)
        self.alphas = nn.ParameterList(nn.Parameter(alpha.clone()) for _ in hidden)
        self.betas = nn.Parameter(torch.full((num_tasks, len(hidden)), 1.0 / len(hidden)))

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Every column's layer-stitched hidden activations, (B, T, h)."""
        t, s = self.num_tasks, self.subspaces
        layers = []
        for w, alpha in zip(self.weights, self.alphas):  # the output layer has no unit
            h = torch.relu(all_tasks_linear(x, w))  # (B, T, h)
            b, _, width = h.shape
            blocks = h.reshape(b, t * s, width // s)  # block (task t, subspace r) = t * s + r
            x = torch.einsum("ij,bjh->bih", alpha, blocks).reshape(b, t, width)
            layers.append(x)
        return torch.einsum("tk,kbth->bth", self.betas, torch.stack(layers))

    def task_parameters(self) -> list[nn.Parameter]:
        return [self.weights[-1], self.betas]  # beta[t] mixes column t for task t alone

    def penalty(self) -> torch.Tensor | None:
        """The orthogonality term of the training loss (``None`` without the constraint)."""
        if not self.orthogonality:
            return None
        total = self.weights[0].new_zeros(())
        # The layers that read a hidden layer (not the inputs); a weight's last row is the bias.
        for w in list(self.weights)[1:-1]:
            first, second = w[:, :-1].chunk(2, dim=2)  # (T, d_in, h/2) each
            total = total + torch.linalg.matrix_norm(first.transpose(1, 2) @ second).square().sum()
        return self.orthogonality * total


FACTORISATIONS = ("tucker", "tt")


def _leading_vectors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``rank`` left singular vectors of ``matrix`` and the rest of the truncated
    SVD, ``diag(s) V^T`` (rank x columns): their product is the best rank-``rank`` fit."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    return u[:, :rank], s[:rank, None] * vh[:rank]


def tucker_factors(tensor: torch.Tensor, ranks: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """Truncated higher-order SVD of a 3-way ``tensor`` (De Lathauwer et al., 2000): factor
    ``U_m`` holds the leading ``ranks[m]`` left singular vectors of the mode-m unfolding and
    the core is ``tensor x_1 U_1^T x_2 U_2^T x_3 U_3^T``. Returns ``(core, U_1, U_2, U_3)``;
    ``core x_1 U_1 x_2 U_2 x_3 U_3`` gives ``tensor`` back when no rank truncates."""
    factors = []
    for mode, rank in enumerate(ranks):
        unfolded = tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)
        factors.append(_leading_vectors(unfolded, rank)[0])
    core = torch.einsum("iot,ia,ob,tc->abc", tensor.double(), *factors)
    return (core, *factors)


def tensor_train_cores(tensor: torch.Tensor, ranks: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """TT-SVD of a 3-way ``tensor`` (Oseledets, 2011, Algorithm 1) with ranks ``(r_1, r_2)``:
    cores ``A`` (n_1, r_1), ``B`` (r_1, n_2, r_2) and ``C`` (n_3, r_2), the last stored
    with its mode first, with ``tensor[i, j, k] ~ A[i] B[:, j] C[k]``, exact when no rank
    truncates."""
    n1, n2, n3 = tensor.shape
    first, rest = _leading_vectors(tensor.reshape(n1, n2 * n3), ranks[0])
    middle, last = _leading_vectors(rest.reshape(ranks[0] * n2, n3), ranks[1])
    return first, middle.reshape(ranks[0], n2, ranks[1]), last.T


class DMTRL(TaskNetwork):
    """Deep multi-task representation learning (Yang and Hospedales, 2017, "Deep multi-task
    representation learning: a tensor factorisation approach"), as the reference code of the
    hypernetwork paper's Table 2 runs it: one network per task, and each layer's weights of
    all T tasks, a
    ``(d_in, d_out, T)`` tensor W, learned in factorised form, so the tasks share the
    factors' subspaces and the task mode says how each task combines them:

    * ``tucker``: ``W = S x_1 U_in x_2 U_out x_3 U_task``, a core S of
      ``(k_in, k_out, k_task)`` and a factor per mode;
    * ``tt``: the tensor train ``W[i, o, t] = A[i] B[:, o] C[t]``, cores
      ``A`` (d_in, k_1), ``B`` (k_1, d_out, k_2) and ``C`` (T, k_2).

    ``rank`` caps every rank at ``min(rank, d_in, d_out)`` (and T on the task mode), as the
    authors' reference code (OGraffeuille/Multi-Task-Hypernetworks) sets it; biases are per
    task and not factorised.
    The networks start as that code starts them, which is not DMTRL's own two-stage recipe
    (factorising separately trained single-task networks): every task's layer starts from
    the same default ``nn.Linear`` draw, and the stack of T copies is factorised by truncated
    SVDs (HOSVD, TT-SVD). Those start as T identical networks of rank-``rank`` weights.
    Metadata, when used, is appended to the inputs, as for the other baselines.
    """

    def __init__(
        self,
        num_tasks: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        metadata: torch.Tensor | None = None,
        factorisation: str = "tucker",
        rank: int = 8,
    ):
        super().__init__(num_tasks, in_features, out_features)
        hidden = check_widths("model_kwargs.hidden", hidden)
        check_choice("model_kwargs.factorisation", factorisation, FACTORISATIONS)
        check_int("model_kwargs.rank", rank)
        self.factorisation = factorisation
        d_m = _metadata_buffer(self, metadata, num_tasks)
        widths = [in_features + d_m, *hidden, out_features]
        self.factors = nn.ModuleList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(widths[:-1], widths[1:]):
            bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default draw, copied to every task
            weight = torch.empty(d_in, d_out).uniform_(-bound, bound)
            bias = torch.empty(d_out).uniform_(-bound, bound)
            k = min(rank, d_in, d_out)
            stack = weight[:, :, None].expand(d_in, d_out, num_tasks)
            if factorisation == "tucker":
                parts = tucker_factors(stack, (k, k, min(k, num_tasks)))
            else:
                parts = tensor_train_cores(stack, (k, min(k, num_tasks)))
            self.factors.append(nn.ParameterList(nn.Parameter(p.float()) for p in parts))
            self.biases.append(nn.Parameter(bias.expand(num_tasks, d_out).clone()))

    def layer_weights(self) -> list[torch.Tensor]:
        """Every layer's weights of every task, ``(T, d_in + 1, d_out)`` with the bias last,
        as :func:`task_linear` reads them."""
        # Contracted one mode at a time, the task mode first (a four-way einsum costs more
        # here, in autograd's bookkeeping, than the small products themselves).
        out = []
        for parts, bias in zip(self.factors, self.biases):
            if self.factorisation == "tucker":
                core, u_in, u_out, u_task = parts  # W[t, i, o] = S[a, b, c] U_in[i, a] ...
                a, b, c = core.shape
                weight = (core.reshape(a * b, c) @ u_task.T).reshape(a, b, -1)  # (a, b, t)
                weight = torch.tensordot(u_in, weight, dims=([1], [0]))  # (i, b, t)
                weight = torch.tensordot(weight, u_out, dims=([1], [1]))  # (i, t, o)
            else:
                first, middle, last = parts  # W[t, i, o] = A[i, a] B[a, o, b] C[t, b]
                weight = torch.tensordot(first, middle @ last.T, dims=([1], [0]))  # (i, o, t)
                weight = weight.transpose(1, 2)  # (i, t, o)
            out.append(torch.cat([weight.transpose(0, 1), bias[:, None, :]], dim=1))
        return out

    def task_parameters(self) -> list[nn.Parameter]:
        # Row t of the task-mode factor (U_task, or the train's last core) and bias t reach
        # task t's weights alone; the other factors are shared.
        return [*(parts[-1] for parts in self.factors), *self.biases]

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return task_layers(with_metadata(x, self.metadata, task), self.layer_weights(), task)

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        if self.metadata is not None:  # the inputs depend on the task
            return super().forward_all(x)
        return all_tasks_layers(x, self.layer_weights())


def invert_large_eigenvalues(matrix: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """The symmetric ``matrix`` with each eigenvalue above ``threshold`` replaced by its
    inverse and the others kept: the guarded inverse with which MRN's reference code (Long et
    al.'s, and the hypernetwork paper's copy of it) turns a covariance estimate into the
    precision its prior reads, never dividing by a near-zero eigenvalue."""
    values, vectors = torch.linalg.eigh(matrix.double())
    values = torch.where(values > threshold, 1.0 / values, values)
    return ((vectors * values) @ vectors.T).to(matrix.dtype)


def cap_trace(matrix: torch.Tensor, cap: float = 3000.0) -> torch.Tensor:
    """``matrix`` scaled down to trace ``cap`` where its trace is larger (MRN's reference
    code bounds each update so)."""
    trace = torch.trace(matrix)
    return matrix * (cap / trace) if trace > cap else matrix


class MRN(HardSharing):
    """Multilinear relationship networks (Long et al., 2017, "Learning multiple tasks with
    multilinear relationship networks"), as the hypernetwork paper's reference code
    (OGraffeuille/Multi-Task-Hypernetworks) runs its Table 2 row: :class:`HardSharing`
    whose task-specific layer, the per-task output layers' weights ``W`` (T x d x out,
    biases apart), has a tensor-normal prior. Training adds the prior's negative log
    density up to constants,

        ``prior_weight * vec(W)^T (Omega_task kron Omega_feature kron Omega_out) vec(W)``,

    (:meth:`penalty`), with precision matrices Omega of each mode, and after each epoch
    (:meth:`after_epoch`) re-estimates them from W by Long et al.'s flip-flop step, in the
    reference code's form (eps = 1e-5):

    * ``C_task = W_(task) (Omega_feature kron Omega_out) W_(task)^T + eps I`` and
      ``Omega_task = cap(inv(C_task))``;
    * ``C_feature`` likewise from the new ``Omega_task``, and
      ``Omega_feature += cap(inv(C_feature)) / feature_k``: the reference code accumulates
      the feature precision over the epochs, scaled by ``1 / feature_k``, where the paper's
      MRN replaces it;

    ``inv`` is :func:`invert_large_eigenvalues` and ``cap`` :func:`cap_trace` (trace 3000).
    ``Omega_out`` stays the identity, as the reference code means to leave it; that code
    registers the three matrices as parameters of its optimiser, so there Adam moves the
    output mode's throughout and the other two in the first epoch, before their first update
    replaces them; here they move only by the updates. And where a task has several outputs
    (Robot Arm's three angles), that code's prediction reads its output layer's rows as
    (output, task) but its prior and updates read them as (task, output), so its task mode
    mixes tasks and outputs; here W is (T, d, out) in all three. The output layer starts at
    N(0, 0.01^2) weights and zero biases, as there. ``prior_weight=0`` is plain hard sharing
    with that start. Metadata, when used, is appended to the inputs, as for the other baselines.
    """

    def __init__(
        self,
        num_tasks: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        metadata: torch.Tensor | None = None,
        prior_weight: float = 1e-3,
        feature_k: float = 1.0,
    ):
        super().__init__(num_tasks, in_features, out_features, hidden, metadata)
        check_number("model_kwargs.prior_weight", prior_weight)
        check_number("model_kwargs.feature_k", feature_k, strict=True)
        self.prior_weight = float(prior_weight)
        self.feature_k = float(feature_k)
        with torch.no_grad():
            self.heads[:, :-1].normal_(0.0, 0.01)
            self.heads[:, -1].zero_()
        features = self.heads.shape[1] - 1
        self.register_buffer("task_precision", torch.eye(num_tasks))
        self.register_buffer("feature_precision", torch.eye(features))
        self.register_buffer("output_precision", torch.eye(out_features))

    def penalty(self) -> torch.Tensor | None:
        """The tensor-normal prior's term (``None`` at ``prior_weight=0``)."""
        if not self.prior_weight:
            return None
        w = self.heads[:, :-1]  # (T, d, out)
        # One mode at a time: a single four-operand einsum costs about 13 times as much here.
        mixed = torch.tensordot(self.task_precision, w, dims=1)  # (T, d, out)
        mixed = self.feature_precision @ mixed @ self.output_precision  # symmetric precisions
        return self.prior_weight * (w * mixed).sum()

    @torch.no_grad()
    def after_epoch(self) -> None:
        """The flip-flop update of the task and feature precisions from the current W."""
        if not self.prior_weight:
            return
        w = self.heads[:, :-1]
        task = torch.einsum(
            "tfo,fg,op,sgp->ts", w, self.feature_precision, self.output_precision, w
        )
        task.diagonal().add_(1e-5)
        self.task_precision.copy_(cap_trace(invert_large_eigenvalues(task)))
        feature = torch.einsum(
            "tfo,ts,op,sgp->fg", w, self.task_precision, self.output_precision, w
        )
        feature.diagonal().add_(1e-5)
        self.feature_precision.add_(cap_trace(invert_large_eigenvalues(feature)) / self.feature_k)


class MaxRoam(TaskNetwork):
    """Maximum roaming (Pascal et al., 2021, "Maximum roaming multi-task learning"), as the
    hypernetwork paper's reference code (OGraffeuille/Multi-Task-Hypernetworks, ``MR.py``)
    builds it for Table 2: a shared ReLU trunk whose hidden layers are widened to
    ``ceil(h / sharing_ratio)`` units, of which each task uses a partition of ``h`` (a binary
    mask per task and layer, drawn at random), and one linear output layer per task. Every
    task trains the shared weights through its own units only, so the partitions limit how
    much the tasks interfere, and they roam: every ``update_every`` epochs
    (:meth:`after_epoch`) each task's partition in each layer takes in one unit it has never
    used, chosen at random, and drops one of its current units, until it has used them all
    (the paper's update plan, one unit per update, chosen at random among the unvisited
    units). ``sharing_ratio`` is the paper's p, the share
    of a layer's units each partition holds (the reference code's ``1 - p``).

    The output layer starts as one default ``nn.Linear`` draw copied to every task, as the
    reference code starts it. The roaming draws come from a generator of the network's own,
    seeded from torch's at construction and kept with the masks in the state dict, so a run
    resumed from a checkpoint roams as the run it continues. Each layer roams until its own
    units are all used; the reference code stops every layer when the first is done, the
    same for equal widths (the paper's 32, 32, 32). The reference code publishes
    the network and its update but not the loop that calls it; the update period here is in
    epochs, the paper's Delta in iterations. Metadata, when used, is appended to the inputs,
    as for the other baselines.
    """

    def __init__(
        self,
        num_tasks: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        metadata: torch.Tensor | None = None,
        sharing_ratio: float = 0.5,
        update_every: int = 1,
    ):
        super().__init__(num_tasks, in_features, out_features)
        hidden = check_widths("model_kwargs.hidden", hidden, allow_empty=False)
        if not (is_finite_number(sharing_ratio) and 0.0 < sharing_ratio <= 1.0):
            raise ConfigError(
                f"`model_kwargs.sharing_ratio` must be in (0, 1] (the share of a layer's "
                f"units each task uses); got {sharing_ratio!r}."
            )
        check_int("model_kwargs.update_every", update_every)
        self.sharing_ratio = float(sharing_ratio)
        self.update_every = update_every
        d_m = _metadata_buffer(self, metadata, num_tasks)
        widths = [math.ceil(h / self.sharing_ratio - 1e-9) for h in hidden]
        self.layers = nn.ModuleList(
            nn.Linear(d_in, d_out) for d_in, d_out in zip([in_features + d_m, *widths], widths)
        )
        self.num_masks = len(widths)
        for k, (h, width) in enumerate(zip(hidden, widths)):
            mask = torch.zeros(num_tasks, width)
            for t in range(num_tasks):
                mask[t, torch.randperm(width)[:h]] = 1.0
            self.register_buffer(f"mask_{k}", mask)
            self.register_buffer(f"visited_{k}", mask.bool())
        head = nn.Linear(widths[-1], out_features)
        stacked = torch.cat([head.weight.detach().T, head.bias.detach()[None]])  # (w + 1, out)
        self.heads = nn.Parameter(stacked.expand(num_tasks, -1, -1).clone())
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        # The roaming generator's state stays on the CPU, where torch's generators live,
        # whatever device the module moves to: kept as extra state, not as a buffer.
        self.roam_state = generator.get_state()
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return {"roam_state": self.roam_state.clone()}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.roam_state = state["roam_state"].cpu().clone()

    def masks(self) -> list[torch.Tensor]:
        """Each hidden layer's partitions, (T, width) of 0/1, row t task t's units."""
        return [getattr(self, f"mask_{k}") for k in range(self.num_masks)]

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        x = with_metadata(x, self.metadata, task)
        for layer, mask in zip(self.layers, self.masks()):
            x = torch.relu(layer(x)) * mask.index_select(0, task)
        return task_linear(x, self.heads, task)

    def task_parameters(self) -> list[nn.Parameter]:
        return [self.heads]

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        if self.metadata is not None:  # the inputs depend on the task
            return super().forward_all(x)
        x = x[:, None]  # (B, 1, d): every task reads the same inputs
        for layer, mask in zip(self.layers, self.masks()):
            x = torch.relu(layer(x)) * mask  # (B, T, width)
        return all_tasks_linear(x, self.heads)

    @torch.no_grad()
    def after_epoch(self) -> None:
        """Every ``update_every`` epochs, each partition of each layer swaps one of its units
        for one it has never used (none once it has used them all)."""
        self.epochs_seen += 1
        if int(self.epochs_seen) % self.update_every:
            return
        generator = torch.Generator()
        generator.set_state(self.roam_state)
        for k, mask in enumerate(self.masks()):
            visited = getattr(self, f"visited_{k}")
            for t in range(self.num_tasks):
                unvisited = (~visited[t]).nonzero().flatten()
                if len(unvisited) == 0:
                    continue
                active = mask[t].nonzero().flatten()
                picks = torch.randint(1 << 30, (2,), generator=generator).tolist()
                new = unvisited[picks[0] % len(unvisited)]
                mask[t, active[picks[1] % len(active)]] = 0.0
                mask[t, new] = 1.0
                visited[t, new] = True
        self.roam_state = generator.get_state()


__all__ = [
    "CrossStitch",
    "DEFAULT_HIDDEN",
    "DMTRL",
    "HardSharing",
    "MRN",
    "MaxRoam",
    "PerTaskNetworks",
    "STLNaive",
    "STLTaskInfo",
    "Sluice",
    "TaskNetwork",
    "all_tasks_layers",
    "all_tasks_linear",
    "mlp",
    "task_layers",
    "task_linear",
]
