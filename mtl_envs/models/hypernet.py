"""Multi-Task Hypernetwork (``000_6f85eb44aaf9e6f8.txt``, section 3, figures 2-3).

A shared hypernetwork turns each task's input vector (a learnt task embedding e_t, optionally
concatenated with the task's frozen, z-scored metadata m_t) into the weights of that task's
target network. Two parts:

* a feature extractor of ``extractor_layers`` (l_h) ReLU layers of ``extractor_width`` (d_h)
  that maps [e_t, m_t] to a latent vector h_t (with l_h = 0, h_t = [e_t, m_t]);
* one weight generator per target linear layer. The generator is a linear map from h_t to the
  layer's (d_in + 1) x d_out matrix (the extra input row is the bias, the paper's d_in*), whose
  d_h x d_in* x d_out weight tensor is compressed (section 3.2) as
  ``W_ijk = A_ij B_ik C_jk`` with A: d_h x d_in*, B: d_h x d_out, C: d_in* x d_out,
  plus the map's own d_in* x d_out bias.

All tasks are generated at once (one einsum per layer); a batch that mixes tasks gathers each
sample's generated matrix and applies it with a batched matmul.

Task embeddings start identical for every task, drawn from a uniform distribution with
variance ``embedding_variance`` (section 4: d_e = 10, variance 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mtl_envs.errors import ConfigError
from mtl_envs.models.task_networks import (
    DEFAULT_HIDDEN,
    TaskNetwork,
    _metadata_buffer,
    all_tasks_layers,
    mlp,
    task_layers,
)
from mtl_envs.utils import check_bool, check_int, check_number, check_widths


class WeightGenerator(nn.Module):
    """Latent h (T, d_h) -> per-task weight matrices (T, d_in + 1, d_out).

    Args:
        latent_dim: d_h.
        in_features, out_features: the target layer's d_in and d_out (the bias row is added).
        compress: the factorised tensor W_ijk = A_ij B_ik C_jk (section 3.2) or a full one.
    """

    def __init__(self, latent_dim: int, in_features: int, out_features: int, compress: bool = True):
        super().__init__()
        d_h, d_in, d_out = latent_dim, in_features + 1, out_features
        self.compress = compress

        def uniform(*shape: int, fan: int) -> nn.Parameter:
            bound = 1.0 / math.sqrt(fan)
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        if compress:
            self.a = uniform(d_h, d_in, fan=d_h)
            self.b = uniform(d_h, d_out, fan=d_h)
            self.c = uniform(d_in, d_out, fan=d_in)
        else:
            self.weight = uniform(d_h, d_in, d_out, fan=d_h * d_in)
        # The generator's bias is the weight matrix every task starts from, initialised like
        # a plain linear layer of the target network.
        self.bias = uniform(d_in, d_out, fan=in_features)

    def tensor(self) -> torch.Tensor:
        """The generator's d_h x d_in* x d_out weight tensor."""
        if self.compress:
            return self.a[:, :, None] * self.b[:, None, :] * self.c[None, :, :]
        return self.weight

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        tensor = self.tensor()  # small: d_h x d_in* x d_out
        out = latent @ tensor.flatten(1)
        return out.view(-1, *tensor.shape[1:]) + self.bias


class MultiTaskHypernet(TaskNetwork):
    """Task embeddings (+ metadata) -> shared hypernetwork -> one target network per task.

    Args:
        num_tasks: T.
        in_features, out_features: the target networks' input and output sizes.
        hidden: hidden widths of the target networks (the paper: three ReLU layers of 32).
        metadata: (T, d_m) task metadata (z-scored by the dataset); frozen. ``None`` = no
            metadata.
        embedding_dim: d_e; 0 drops the embeddings (metadata alone, the ablation of Table 3).
        extractor_layers: l_h in {0, 1, 2} in the paper.
        extractor_width: d_h of the extractor layers.
        compress: compressed weight generators (section 3.2).
        embedding_variance: variance of the identical uniform initialisation of embeddings.
    """

    def __init__(
        self,
        num_tasks: int,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        metadata: torch.Tensor | None = None,
        embedding_dim: int = 10,
        extractor_layers: int = 0,
        extractor_width: int = 32,
        compress: bool = True,
        embedding_variance: float = 1.0,
    ):
        super().__init__(num_tasks, in_features, out_features)
        hidden = check_widths("model_kwargs.hidden", hidden)
        for name, value in (
            ("embedding_dim", embedding_dim),
            ("extractor_layers", extractor_layers),
        ):
            check_int(name, value, minimum=0)
        check_int("extractor_width", extractor_width)
        check_bool("compress", compress)
        check_number("embedding_variance", embedding_variance, strict=True)
        d_m = _metadata_buffer(self, metadata, num_tasks)
        if embedding_dim == 0 and d_m == 0:
            raise ConfigError("`embedding_dim=0` needs task `metadata` as the hypernetwork input.")
        self.embedding_dim = embedding_dim
        if embedding_dim > 0:
            a = math.sqrt(3.0 * embedding_variance)  # U(-a, a) has variance a^2 / 3
            first = torch.empty(1, embedding_dim).uniform_(-a, a)
            self.embeddings = nn.Parameter(first.repeat(num_tasks, 1))
        else:
            self.register_parameter("embeddings", None)
        d_input = embedding_dim + d_m
        if extractor_layers > 0:
            widths = [d_input] + [extractor_width] * extractor_layers
            self.extractor: nn.Module = mlp(widths, final_activation=True)
            self.latent_dim = extractor_width
        else:
            self.extractor = nn.Identity()
            self.latent_dim = d_input
        widths = [in_features, *hidden, out_features]
        self.generators = nn.ModuleList(
            WeightGenerator(self.latent_dim, d_in, d_out, compress)
            for d_in, d_out in zip(widths[:-1], widths[1:])
        )

    def task_parameters(self) -> list[nn.Parameter]:
        return [] if self.embeddings is None else [self.embeddings]  # the rest is shared

    def hypernet_inputs(self) -> torch.Tensor:
        """[e_t, m_t] for every task, (T, d_e + d_m)."""
        parts = [p for p in (self.embeddings, self.metadata) if p is not None]
        return torch.cat(parts, dim=1)

    def task_weights(self) -> list[torch.Tensor]:
        """The generated (T, d_in + 1, d_out) matrices of every target layer."""
        latent = self.extractor(self.hypernet_inputs())
        return [generator(latent) for generator in self.generators]

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return task_layers(x, self.task_weights(), task)

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        return all_tasks_layers(x, self.task_weights())


def hypernet_parameter_count(
    num_tasks: int,
    layer_sizes: Sequence[tuple[int, int]],
    embedding_dim: int = 10,
    metadata_dim: int = 0,
    extractor_layers: int = 0,
    extractor_width: int = 32,
) -> int:
    """P of section 3.2 ("Complexity") for a compressed Multi-Task Hypernetwork.

    ``sum_i (2 d_in* d_out + d_h d_in* + d_h d_out)`` for the generators (d_in* = d_in + 1)
    plus ``T d_e`` for the embeddings, as printed. The printed extractor term
    ``(d_e + d_m + d_h (l_h - 1)) (d_h + 1)`` counts the first layer as (d_e + d_m)(d_h + 1)
    where a linear layer has (d_e + d_m + 1) d_h parameters; the two agree only when
    d_h = d_e + d_m (which is l_h = 0, where the term is 0). This function counts the
    extractor's linear layers exactly.
    """
    d_input = embedding_dim + metadata_dim
    if extractor_layers > 0:
        d_h = extractor_width
        extractor = (d_input + 1) * d_h + (extractor_layers - 1) * (d_h + 1) * d_h
    else:
        d_h, extractor = d_input, 0
    generators = sum(
        2 * (d_in + 1) * d_out + d_h * (d_in + 1) + d_h * d_out for d_in, d_out in layer_sizes
    )
    return extractor + generators + num_tasks * embedding_dim


__all__ = ["MultiTaskHypernet", "WeightGenerator", "hypernet_parameter_count"]
