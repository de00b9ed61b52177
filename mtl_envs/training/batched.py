"""K independent multi-task training runs as one stacked network (``torch.func``).

Small networks (Cubic's trunk, Digits10's CNN) leave a CPU mostly idle in per-op overhead:
K runs stepped one after another pay K Python loops and K small kernels per batch. Here the
K runs' parameters are stacked along a leading dim (``torch.func.stack_module_state``) and
one ``vmap`` of ``functional_call`` computes every run's task losses at once; one backward
gives every run's gradients (the runs share no parameter, so the sum of their objectives
separates), and one elementwise optimiser step updates them all.

Each run keeps its own :class:`~mtl_envs.training.multitask_learner.MultiTaskLearner` for
what is not a tensor op: its seed and generator (initialisation, data order, augmentation,
warm-up weights), batch cursor, epoch counter, loss history, L_base and learning-rate
schedule. Its network serves as the template of the stacked one and is synced from it for
evaluation. So run k trains exactly what a single learner seeded alike trains, up to float
rounding (batched kernels sum in another order).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from mtl_envs.errors import ConfigError
from mtl_envs.training.multitask_learner import (
    MultiTaskLearner,
    MultiTaskLearnerConfig,
    TrainingBatch,
    network_epoch_hook,
    network_penalty,
)
from mtl_envs.training.weighting import weighted_objective_terms
from mtl_envs.utils import check_int

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which make_optimizer keeps
ADAM_EPS = 1e-8


@contextmanager
def _schedules_only() -> Iterator[None]:
    """The runs' own optimisers never step (the stacked update does): their StepLR
    schedulers only count epochs, which torch would warn about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        yield


class _Losses(nn.Module):
    """The template learner's task losses as a module, so ``functional_call`` can swap in
    one run's parameters (``net.*``) and ``vmap`` can map it over the runs."""

    def __init__(self, learner: MultiTaskLearner):
        super().__init__()
        self.net = learner.net
        self.learner = learner

    def forward(self, inputs, targets, mask, count) -> torch.Tensor:
        batch = TrainingBatch(inputs, targets, mask, count)
        return torch.stack(self.learner.batch_losses(batch)[0])


class BatchedMultiTaskLearner:
    """``num_runs`` runs of one :class:`MultiTaskLearnerConfig`, trained as one stacked model.

    Supported: the learner's own weighted objective (``loss="sum"`` or ``"log"``) with
    weights from the caller, Adam or SGD with the config's learning rate, momentum, weight
    decay and StepLR schedule. Not supported: torchjd aggregators and weighting rules with
    parameters (they are per-run Python objects); both raise :class:`ConfigError`.

    Runs are reset together or in any subset (:meth:`reset_runs`); a subset's warm-up leaves
    the other runs exactly where they were, pending batch included.
    """

    def __init__(self, config: MultiTaskLearnerConfig, num_runs: int):
        check_int("num_envs", num_runs)
        if config.batching == "uniform":
            raise ConfigError(
                "`batching='uniform'` (batches of unequal size) is not available in the "
                "batched vector form; use batching='balanced' or vectorization_mode='sync'."
            )
        if config.aggregator is not None:
            raise ConfigError(
                f"`aggregator={config.aggregator!r}` is not available in the batched vector "
                "form; use vectorization_mode='sync' or aggregator=None."
            )
        first = MultiTaskLearner(config)
        if network_penalty(first.net) is not None:
            raise ConfigError(
                f"`model={config.model!r}` adds a loss term of its own (its model_kwargs), which "
                "the batched vector form does not train; use vectorization_mode='sync'."
            )
        if network_epoch_hook(first.net) is not None:
            raise ConfigError(
                f"`model={config.model!r}` updates itself after each epoch outside the "
                "optimiser, which the batched vector form does not run; use "
                "vectorization_mode='sync'."
            )
        self.learners = [first] + [
            MultiTaskLearner(config, dataset=first.data) for _ in range(num_runs - 1)
        ]
        self.config = config
        self.num_runs = num_runs
        self.num_tasks = first.num_tasks
        self.device = first.device
        # A learner of its own as the template: a run's reset rebuilds that run's network,
        # and the template's must stay the module that functional_call swaps into.
        self._losses = _Losses(MultiTaskLearner(config, dataset=first.data))
        self._batched_losses = vmap(self._run_losses)
        train, tasks = first.data.train, first.task_index
        # The training split restricted to the runs' tasks, once (a batch is then one gather).
        self._train = (train.inputs, train.targets[:, tasks], train.mask[:, tasks])
        params, buffers = stack_module_state([learner.net for learner in self.learners])
        # Every run's parameters as one row of a flat (K, P) leaf: the optimiser update is then
        # a dozen whole-tensor ops, whatever the number of parameter tensors.
        self._shapes = {name: p.shape[1:] for name, p in params.items()}
        self._sizes = [p[0].numel() for p in params.values()]
        self.flat = torch.cat([p.detach().reshape(num_runs, -1) for p in params.values()], 1)
        self.flat.requires_grad_(True)
        self.buffers: dict[str, torch.Tensor] = buffers
        if config.optimizer == "adam":
            self._state = {"exp_avg": torch.zeros_like(self.flat.detach())}
            self._state["exp_avg_sq"] = torch.zeros_like(self._state["exp_avg"])
        else:
            self._state = {"momentum": torch.zeros_like(self.flat.detach())}
        self._step = torch.zeros(num_runs, dtype=torch.float64, device=self.device)
        self._pending: torch.Tensor | None = None
        self._pending_rng: list[torch.Tensor | None] = [None] * num_runs

    # --------------------------------------------------------------- stacked state
    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Every run's parameters by name, (K, *shape): views of the flat leaf."""
        rows = torch.split(self.flat, self._sizes, dim=1)
        num_runs = self.num_runs
        return {
            name: row.view(num_runs, *shape)
            for (name, shape), row in zip(self._shapes.items(), rows)
        }

    def _load_run(self, k: int) -> None:
        """Copy run k's freshly built network into row k; zero its optimiser state."""
        net = self.learners[k].net
        with torch.no_grad():
            self.flat[k] = torch.cat([p.reshape(-1) for p in net.parameters()])
            for buf in self._state.values():
                buf[k] = 0.0
            for name, value in net.named_buffers():
                self.buffers[name][k].copy_(value)
        self._step[k] = 0

    def sync(self, k: int) -> nn.Module:
        """Run k's network with its current trained values (for evaluation)."""
        net = self.learners[k].net
        with torch.no_grad():
            params = self.params
            for name, value in net.named_parameters():
                value.copy_(params[name][k])
            for name, value in net.named_buffers():
                value.copy_(self.buffers[name][k])
        return net

    def evaluate(self, k: int, split: str = "test") -> dict[str, float]:
        """Run k's metrics on ``split`` (:meth:`MultiTaskLearner.evaluate`)."""
        self.sync(k)
        return self.learners[k].evaluate(split)

    def split_losses(self, k: int, split: str = "val") -> list[float]:
        self.sync(k)
        return self.learners[k].split_losses(split)

    # --------------------------------------------------------------- forward
    def _run_losses(self, params, buffers, inputs, targets, mask, count) -> torch.Tensor:
        named = (
            {f"net.{k}": v for k, v in params.items()},
            {f"net.{k}": v for k, v in buffers.items()},
        )
        return functional_call(self._losses, named, (inputs, targets, mask, count))

    def _batch(self, runs: Sequence[int]) -> TrainingBatch:
        """Every run's batch at its cursor, stacked (K, B, ...). Runs not in ``runs`` get
        their batch un-augmented and draw nothing from their generators."""
        template = self._losses.learner
        inputs, targets, mask = self._train
        indices = torch.stack([run.batch_indices(run.position) for run in self.learners])
        mask = mask[indices]
        count = mask.float().sum(1).clamp_min(1.0)  # balanced batching: per-task means
        inputs = inputs[indices]
        if template.normalize is not None:
            active = set(runs)
            inputs = torch.stack(
                [
                    learner.prepare_inputs(x, train=k in active)
                    for k, (learner, x) in enumerate(zip(self.learners, inputs))
                ]
            )
        return TrainingBatch(inputs, targets[indices], mask, count)

    def _forward(self, runs: Sequence[int]) -> torch.Tensor:
        batch = self._batch(runs)
        return self._batched_losses(
            self.params, self.buffers, batch.inputs, batch.targets, batch.mask, batch.count
        )

    # --------------------------------------------------------------- update
    def _update(self, losses: torch.Tensor, weights: torch.Tensor, active: torch.Tensor) -> None:
        """One optimiser step of the runs in ``active`` (K,) bool on ``sum w log L`` (or
        ``sum w L``); the other rows keep their parameters and optimiser state bit for bit.

        The step is torch's own Adam (L2 weight decay added to the gradient, bias-corrected
        moments) or SGD with momentum (dampening 0), written elementwise with a per-run
        learning rate (its StepLR schedule) and step count.
        """
        terms = weighted_objective_terms(losses, weights.detach(), self.config.loss)
        everyone = bool(active.all())
        if not everyone:
            terms = torch.where(active[:, None], terms, torch.zeros_like(terms))
        (grad,) = torch.autograd.grad(terms.sum(), self.flat)
        cfg = self.config
        self._step += active.to(self._step.dtype)
        row = active[:, None]
        # Per-run factors (K, 1): the learning rate (each run's StepLR) and, for Adam, the
        # bias corrections at each run's own step count.
        lr = torch.tensor([learner.lr for learner in self.learners], device=self.device)
        lr = lr.to(grad.dtype)[:, None]

        def commit(target: torch.Tensor, value: torch.Tensor) -> None:
            target.copy_(value if everyone else torch.where(row, value, target))

        with torch.no_grad():
            param = self.flat
            if cfg.weight_decay:
                grad = grad + cfg.weight_decay * param
            if cfg.optimizer == "adam":
                step = self._step.clamp_min(1)
                step_size = lr / (1 - ADAM_BETAS[0] ** step).to(grad.dtype)[:, None]
                root = (1 - ADAM_BETAS[1] ** step).sqrt().to(grad.dtype)[:, None]
                avg = torch.lerp(self._state["exp_avg"], grad, 1 - ADAM_BETAS[0])
                sq = torch.addcmul(
                    self._state["exp_avg_sq"] * ADAM_BETAS[1], grad, grad, value=1 - ADAM_BETAS[1]
                )
                delta = step_size * avg / (sq.sqrt() / root + ADAM_EPS)
                commit(self._state["exp_avg"], avg)
                commit(self._state["exp_avg_sq"], sq)
            elif cfg.momentum:
                buf = self._state["momentum"] * cfg.momentum + grad
                delta = lr * buf
                commit(self._state["momentum"], buf)
            else:
                delta = lr * grad
            commit(param, param - delta)

    # --------------------------------------------------------------- runs
    def reset_runs(
        self,
        runs: Sequence[int],
        seeds: Sequence[int],
        warmup_epochs: int,
        warmup_weights: Callable[[MultiTaskLearner], torch.Tensor] | None,
    ) -> torch.Tensor:
        """Start fresh runs ``runs`` (seeded ``seeds``) and train their warm-up epochs.

        ``warmup_weights(learner)`` gives a run's weights for one warm-up batch (drawn from
        its generator after the batch's augmentation, as :meth:`MultiTaskLearner.train_epoch`
        does); ``None`` trains with equal weights. The other runs keep their parameters,
        buffers, generators and pending batch. Returns every run's pending losses (K, n), as
        :meth:`forward_pending`.
        """
        runs = list(runs)
        for k, seed in zip(runs, seeds):
            self.learners[k].reset_run(int(seed))
            self._load_run(k)
        active = torch.zeros(self.num_runs, dtype=torch.bool, device=self.device)
        active[runs] = True
        others = [k for k in range(self.num_runs) if k not in set(runs)]
        saved_buffers = {n: b.clone() for n, b in self.buffers.items()}
        saved_positions = [learner.position for learner in self.learners]
        self._pending = None
        warm = [self.learners[k] for k in runs]
        for _ in range(warmup_epochs):
            for learner in warm:
                learner.begin_epoch()
            for _ in range(warm[0].num_batches):
                losses = self._forward(runs)
                weights = torch.ones(self.num_runs, self.num_tasks, device=self.device)
                if warmup_weights is not None:
                    for k in runs:
                        weights[k] = warmup_weights(self.learners[k])
                self._update(losses, weights, active)
                detached = losses.detach()
                for k in runs:
                    self.learners[k].record_batch(detached[k])
                    self.learners[k].position += 1
            with _schedules_only():
                for learner in warm:
                    learner.end_epoch()
        for learner in warm:
            learner.begin_epoch()
        # The other runs: buffers as before the warm-up, then their pending batch replayed
        # with the same augmentation draw.
        self._restore_rows(saved_buffers, others)
        for k in others:
            self.learners[k].position = saved_positions[k]
        return self.forward_pending(replay=others)

    def _restore_rows(self, saved: dict[str, torch.Tensor], rows: Sequence[int]) -> None:
        if not rows or not saved:
            return
        mask = torch.zeros(self.num_runs, dtype=torch.bool, device=self.device)
        mask[list(rows)] = True
        for name, old in saved.items():
            shape = (-1,) + (1,) * (old.dim() - 1)
            # Rebound, not written in place: a graph may hold the current tensor.
            self.buffers[name] = torch.where(mask.view(shape), old, self.buffers[name])

    def forward_pending(self, replay: Sequence[int] = ()) -> torch.Tensor:
        """Every run's batch at its cursor forwarded, graph kept for :meth:`apply_pending`;
        returns the detached losses (K, n). Runs in ``replay`` redo the forward of their
        pending batch (same augmentation draw, BatchNorm statistics counted once)."""
        replay = list(replay)
        for k, learner in enumerate(self.learners):
            if learner.epoch_done:
                raise RuntimeError(f"Run {k} has no batch at its cursor; call begin_epoch().")
            if k in replay:
                learner.generator.set_state(self._pending_rng[k])
            self._pending_rng[k] = learner.generator.get_state()
        saved = {n: b.clone() for n, b in self.buffers.items()} if replay else {}
        self._pending = self._forward(range(self.num_runs))
        self._restore_rows(saved, replay)
        return self._pending.detach()

    def apply_pending(
        self, weights: torch.Tensor, active: Sequence[bool] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the runs on their pending batch with ``weights`` (K, n) and advance their
        cursors: every run, or those ``active`` (K,) marks. The others keep their parameters,
        optimiser state and cursor, but their pending forward is spent (its BatchNorm
        statistics and augmentation draw stand): meant for runs that :meth:`reset_runs`
        restarts next. Returns the batch losses (K, n) and which runs ended an epoch (K,)."""
        if self._pending is None:
            raise RuntimeError("No pending batch; call forward_pending() first.")
        losses, self._pending = self._pending, None
        if active is None:  # made on the device: no host-to-device copy on every step
            active = [True] * self.num_runs
            mask = torch.ones(self.num_runs, dtype=torch.bool, device=self.device)
        else:
            mask = torch.as_tensor(np.asarray(active, dtype=bool), device=self.device)
        self._update(losses, weights.to(losses), mask)
        detached = losses.detach()
        ended = [False] * self.num_runs
        with _schedules_only():
            for k, learner in enumerate(self.learners):
                if active[k]:
                    learner.record_batch(detached[k])
                    ended[k] = learner.advance()
        return detached, torch.tensor(ended, device=self.device)
