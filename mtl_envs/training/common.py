"""Pieces every learner shares: seeded construction, optimisers, snapshots."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from mtl_envs.utils import check_choice

M = TypeVar("M", bound=nn.Module)
OPTIMIZERS = ("sgd", "adam")


def seeded(seed: int, build: Callable[[], M]) -> M:
    """Build a module (on the CPU) from ``seed`` without touching the global RNGs.

    Only the CPU generator is seeded: ``torch.manual_seed`` would also reseed every CUDA
    generator, which ``fork_rng(devices=[])`` does not restore, so each network built would
    rewind the CUDA stream an agent samples its actions from."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return build()


def make_optimizer(
    params: Iterable[torch.Tensor],
    name: str,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    check_choice("optimizer", name, OPTIMIZERS)
    # foreach: one fused update over all parameter tensors, on CPU too (many small tensors).
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True
        )
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def snapshot_state(**parts: Any) -> dict[str, Any]:
    """Deep copies of the ``state_dict()`` of each part (modules, optimisers, schedulers)."""
    return {name: copy.deepcopy(part.state_dict()) for name, part in parts.items()}


def restore_state(snapshot: dict[str, Any], **parts: Any) -> None:
    # Optimizer.load_state_dict may keep references to the given tensors: pass copies so the
    # snapshot stays untouched by later steps.
    for name, part in parts.items():
        part.load_state_dict(copy.deepcopy(snapshot[name]))


def all_finite(net: nn.Module) -> bool:
    """Whether every parameter and floating-point buffer (batch-norm statistics) of ``net``
    is finite, checked with one device synchronisation."""
    tensors = [t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


@contextlib.contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """``net`` in eval mode (batch-norm running statistics, no dropout) for a block, then
    back in the mode it was in, so code that forwards it after an evaluation sees the mode
    it left."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)
