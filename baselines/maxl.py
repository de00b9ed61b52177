"""MAXL (Liu, Davison and Johns, 2019) and weight-aware MAXL (RL-AUX section 3).

A label-generation network of the main network's backbone family predicts, for each image,
a distribution over the psi auxiliary sub-classes of its primary class (masked softmax,
RL-AUX eq. 5-6). The main network trains on these soft labels through the shared
:class:`~mtl_envs.training.AuxLearner`; the generator learns through MAXL's bi-level update:
one *virtual* SGD step of the main network on the generated labels, kept differentiable
(``torch.func.functional_call``), then the primary loss of the virtually updated network plus
``entropy_coef`` times the negative entropy of the batch-mean generated distribution,
back-propagated into the generator only. ``first_order=True`` replaces the second-order term
with a finite-difference Hessian-vector product (as in DARTS).

Weight-aware MAXL adds a generator head whose sigmoid output w in [0, 1] becomes the sample
weight ``2^(lo + (hi - lo) w)``, the rule of RL-AUX eq. 8.

Defaults from the MAXL reference: generator SGD lr 1e-3, weight decay 5e-4, StepLR(50, 0.5).
``alternation="epoch"`` (the default) alternates as the reference and MAXL's Algorithm 1 do:
one pass trains the main network on the frozen generator's labels, then a second pass, on a
fresh shuffle and augmentation of the training set, takes one generator meta-step per batch
with the main network's weights fixed; both passes of an epoch see the same main learning rate.
The second pass draws its order and augmentation from a random stream of its own, so the main
pass sees the data in the order every other baseline of the seed sees it.
``alternation="batch"`` interleaves them instead: the generator takes its meta-step on a batch
(the virtual step starts from the main network as it is now), then the main network trains on
the updated generator's labels for the same prepared batch (one augmentation draw). Both make
one main step and one generator step per batch of an epoch; by batch, the labels a main epoch
trains on move with the generator during that epoch, and an epoch prepares its data once
instead of twice. The generator stays in training mode, as in the reference. The virtual
forwards use copies of the main network's batch-norm statistics, so the generator pass leaves
them as the main pass set them (the reference's meta pass moves them, though it never reads
them: it never switches to eval mode). The virtual step is the main optimiser's actual SGD
update, weight decay and momentum buffer included (:func:`virtual_sgd_step`); the reference's
virtual step is plain gradient descent, which is the same rule only at momentum 0 and weight
decay 0 (the defaults here; the CPU config uses momentum 0.9). The meta objective is the
learner's own primary loss (cross-entropy by default, focal with ``primary_loss: focal`` as in
the reference).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch.func import functional_call

from baselines.auxiliary import run_aux_baseline
from harness.config import RunConfig
from harness.registry import MAXL_OPTIONS, method_options
from mtl_envs.errors import ConfigError
from mtl_envs.models import MultiHeadNet, build_backbone
from mtl_envs.training import AuxLearner, hierarchy_mask, masked_softmax, weight_from_bin
from mtl_envs.training.common import seeded
from mtl_envs.utils import (
    check_bool,
    check_choice,
    check_exponent_range,
    check_number,
    sub_seed,
)

ALTERNATIONS = ("epoch", "batch")  # the first is the default
# The generator's own streams (``sub_seed``), apart from the main network's and other runs':
ORDER_STREAM, INIT_STREAM = 1, 2  # its pass's data order and augmentation; its initial weights


class LabelGenerator(torch.nn.Module):
    """Backbone + heads: K auxiliary logits (masked per sample), and optionally a weight."""

    def __init__(self, learner: AuxLearner, weight_aware: bool):
        super().__init__()
        cfg = learner.config
        c, h, _ = learner.data.image_shape
        sizes = [learner.num_aux] + ([1] if weight_aware else [])
        self.net = MultiHeadNet(
            build_backbone(cfg.backbone, c, h, cfg.backbone_kwargs), sizes, cfg.head_hidden
        )
        self.psi, self.num_primary = cfg.hierarchy_factor, learner.num_primary
        self.weight_aware = weight_aware

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Soft auxiliary targets (B, K) inside each sample's block, and weights in [0, 1]."""
        outputs = self.net(x)
        targets = masked_softmax(outputs[0], hierarchy_mask(y, self.psi, self.num_primary))
        w = torch.sigmoid(outputs[1]).squeeze(1) if self.weight_aware else None
        return targets, w


def sample_weights(w: torch.Tensor, exponent_range: tuple[float, float]) -> torch.Tensor:
    """WA-MAXL's sample weights from the generator's sigmoid outputs ``w`` in [0, 1], scaled
    as RL-AUX eq. 8 scales the agent's bins (section 5): ``2^(lo + (hi - lo) w)``, which is
    ``2^(10 w - 5)`` with the paper's range; ``w`` is read as bin ``20 w`` of 21."""
    return weight_from_bin(w * 20.0, 21, exponent_range)


def virtual_sgd_step(
    optimizer: torch.optim.Optimizer,
    params: dict[str, torch.Tensor],
    grads: tuple[torch.Tensor, ...],
) -> dict[str, torch.Tensor]:
    """``theta' = theta - lr (g + wd theta + momentum b)``: the update ``optimizer`` (SGD) would
    make with gradients ``grads``, differentiable in them; b is its momentum buffer (none
    before the first step). ``params`` are the optimiser's own parameters, by name."""
    out = {}
    for (name, p), g in zip(params.items(), grads):
        group = next(gr for gr in optimizer.param_groups if any(q is p for q in gr["params"]))
        if group.get("nesterov") or group.get("dampening"):
            raise ConfigError("The virtual step follows SGD without Nesterov or dampening.")
        step = g + group["weight_decay"] * p.detach() if group["weight_decay"] else g
        buffer = optimizer.state.get(p, {}).get("momentum_buffer")
        if group["momentum"] and buffer is not None:
            step = step + group["momentum"] * buffer
        out[name] = p - group["lr"] * step
    return out


def generator_loss(
    learner: AuxLearner,
    generator: LabelGenerator,
    x: torch.Tensor,
    y: torch.Tensor,
    entropy_coef: float,
    exponent_range: tuple[float, float],
    first_order: bool = False,
    fd_epsilon: float = 0.01,
) -> torch.Tensor:
    """MAXL's meta objective: the learner's primary loss (``primary_loss``: cross-entropy, or
    focal as in the MAXL reference) after a virtual step, plus ``entropy_coef`` times the
    negative entropy of the batch-mean label distribution. Call ``.backward()`` on it for the
    generator's gradient (second order), or with ``first_order`` the returned loss already
    carries the finite-difference gradient."""
    net = learner.net
    params = {n: p for n, p in net.named_parameters()}
    # Copies: virtual forwards in train mode must not move the real BN statistics.
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    targets, w = generator(x, y)
    weights = None if w is None else sample_weights(w, exponent_range)
    mean = targets.mean(0)
    neg_entropy = (mean * torch.log(mean.clamp_min(1e-12))).sum()

    def objective(values: dict[str, torch.Tensor], t, sw) -> torch.Tensor:
        return learner.objective(functional_call(net, (values, buffers), (x,)), y, t, sw)["loss"]

    def primary_objective(values: dict[str, torch.Tensor]) -> torch.Tensor:
        # The primary loss the main network trains on (cross-entropy, or MAXL's focal loss).
        outputs = functional_call(net, (values, buffers), (x,))
        return learner.objective(outputs, y, None)["primary_loss"]

    if not first_order:
        grads = torch.autograd.grad(
            objective(params, targets, weights), list(params.values()), create_graph=True
        )
        virtual = virtual_sgd_step(learner.optimizer, params, grads)
        primary = primary_objective(virtual)
        return primary + entropy_coef * neg_entropy
    # First order: d/dphi L_pri(theta') ~ -lr * [grad_phi L_train(theta+)
    # - grad_phi L_train(theta-)] / (2 eps), theta+- = theta +- eps * grad_theta' L_pri(theta')
    # (the SGD rule's weight-decay and momentum terms do not depend on phi).
    names = list(params)
    detached = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    grads = torch.autograd.grad(
        objective(detached, targets.detach(), None if weights is None else weights.detach()),
        list(detached.values()),
    )
    stepped = virtual_sgd_step(learner.optimizer, params, grads)
    virtual = {n: v.detach().requires_grad_(True) for n, v in stepped.items()}
    primary = primary_objective(virtual)
    # The auxiliary head does not reach the primary logits: its part of the vector is zero.
    v = [
        torch.zeros_like(p) if g is None else g
        for p, g in zip(
            virtual.values(),
            torch.autograd.grad(primary, list(virtual.values()), allow_unused=True),
        )
    ]
    norm = torch.sqrt(sum((g * g).sum() for g in v)).clamp_min(1e-12)
    eps = fd_epsilon / norm
    plus = {n: (params[n] + eps * g).detach() for n, g in zip(names, v)}
    minus = {n: (params[n] - eps * g).detach() for n, g in zip(names, v)}
    lr = learner.lr
    hvp_term = -lr * (objective(plus, targets, weights) - objective(minus, targets, weights))
    hvp_term = hvp_term / (2 * eps)
    # Value: the true primary loss; gradient w.r.t. phi: the finite-difference estimate.
    return primary.detach() + (hvp_term - hvp_term.detach()) + entropy_coef * neg_entropy


class MAXLLabeller:
    """A learning labeller for :meth:`AuxLearner.train_epoch`: labels each batch with the
    generator, which learns in a pass of its own after the main one (``alternation="epoch"``,
    :meth:`generator_pass`) or by a meta-step on each batch just before labelling it
    (``"batch"``)."""

    def __init__(
        self,
        learner: AuxLearner,
        seed: int,
        weight_aware: bool = False,
        first_order: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        entropy_coef: float = 0.2,
        exponent_range: tuple[float, float] = (-5.0, 5.0),
        alternation: str = ALTERNATIONS[0],
    ):
        check_options({name: value for name, value in locals().items() if name in MAXL_OPTIONS})
        self.learner = learner
        self.generator = seeded(
            sub_seed(seed, INIT_STREAM), lambda: LabelGenerator(learner, weight_aware)
        )
        self.generator.to(learner.device)
        self.optimizer = torch.optim.SGD(
            self.generator.parameters(), lr=lr, weight_decay=weight_decay
        )
        cfg = learner.config
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=cfg.scheduler_step_epochs, gamma=cfg.scheduler_gamma
        )
        self.first_order = first_order
        self.entropy_coef = entropy_coef
        self.exponent_range = tuple(float(v) for v in exponent_range)
        self.alternation = alternation
        # The generator pass's order and augmentation: a stream apart from the learner's.
        self.rng = torch.Generator(device=learner.device)
        self.rng.manual_seed(sub_seed(seed, ORDER_STREAM))

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng.set_state(state["rng"])

    def meta_step(self, inputs: torch.Tensor, y: torch.Tensor) -> None:
        """One generator update on MAXL's meta objective for a batch of prepared inputs."""
        learner = self.learner
        learner.net.train()
        self.generator.train()
        loss = generator_loss(
            learner,
            self.generator,
            inputs,
            y,
            self.entropy_coef,
            self.exponent_range,
            self.first_order,
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=list(self.generator.parameters()))
        self.optimizer.step()
        learner.net.zero_grad(set_to_none=True)

    def generator_pass(self) -> None:
        """The reference's second pass of an epoch: the training set in a fresh order and
        augmentation (from the labeller's own random stream), one meta-step per batch of the
        main epoch's size, the main network's weights fixed."""
        learner = self.learner
        for idx in learner.epoch_batches(self.rng):
            self.meta_step(learner.batch_inputs(idx, self.rng), learner.data.train.labels[idx])

    def __call__(
        self, indices: torch.Tensor, inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Label the batch on ``inputs``, the prepared (augmented) images the main network
        trains on next; by batch, after a meta-step on those same inputs."""
        y = self.learner.data.train.labels[indices]
        if self.alternation == "batch":
            self.meta_step(inputs, y)
        self.generator.train()
        with torch.no_grad():
            targets, w = self.generator(inputs, y)
        weights = None if w is None else sample_weights(w, self.exponent_range)
        return targets, weights

    def after_batches(self) -> None:
        if self.alternation == "epoch":
            self.generator_pass()

    def end_epoch(self) -> None:
        self.scheduler.step()


def check_options(options: dict[str, Any]) -> None:
    """Fail before anything trains on a MAXL option of the wrong type or range (the checks of
    :class:`MAXLLabeller`, whose defaults fill what ``options`` leaves out)."""
    defaults = inspect.signature(MAXLLabeller).parameters
    values = {k: defaults[k].default for k in MAXL_OPTIONS} | dict(options)
    check_choice("method_kwargs.alternation", values["alternation"], ALTERNATIONS)
    check_bool("method_kwargs.first_order", values["first_order"])
    check_number("method_kwargs.lr", values["lr"], strict=True)
    check_number("method_kwargs.weight_decay", values["weight_decay"])
    check_number("method_kwargs.entropy_coef", values["entropy_coef"])
    check_exponent_range("method_kwargs.exponent_range", values["exponent_range"])


def maxl_options(config: RunConfig, weight_aware: bool) -> dict[str, Any]:
    """The labeller's options of the run's ``maxl`` (or ``wa_maxl``), checked."""
    options = method_options(config, "wa_maxl" if weight_aware else "maxl")
    if weight_aware:
        # WA-MAXL's weights are "scaled the same as in Equation 8" (RL-AUX section 5): the
        # env's range, unless the method's own is given; two different ranges are refused.
        env_range = config.env_kwargs.get("weight_exponent_range")
        own = options.get("exponent_range")
        if env_range is not None and own is not None and list(own) != list(env_range):
            raise ConfigError(
                f"`method_kwargs.exponent_range` {own!r} differs from "
                f"`env_kwargs.weight_exponent_range` {env_range!r}: WA-MAXL scales its weights "
                "as the env's eq. 8 does; give one of them."
            )
        if own is None and env_range is not None:
            options = {**options, "exponent_range": env_range}
    check_options(options)
    return options


def check_config(config: RunConfig) -> None:
    """Fail before any method of the run trains on a bad MAXL or WA-MAXL option."""
    for method, weight_aware in (("maxl", False), ("wa_maxl", True)):
        if method in config.methods:
            maxl_options(config, weight_aware)


def run_maxl(config: RunConfig, seed: int, *, weight_aware: bool) -> dict[str, Any]:
    method = "wa_maxl" if weight_aware else "maxl"
    options = maxl_options(config, weight_aware)
    alternation = options.get("alternation", ALTERNATIONS[0])
    labellers: list[MAXLLabeller] = []

    def make(learner: AuxLearner, s: int) -> MAXLLabeller:
        labellers.append(MAXLLabeller(learner, s, weight_aware=weight_aware, **options))
        return labellers[-1]

    return run_aux_baseline(
        config,
        seed,
        method,
        make,
        # Recorded, so that a resumed or reused run made with the other alternation is refused.
        extra={"alternation": alternation},
        on_epoch_end=lambda: labellers[-1].end_epoch(),
        after_batches=lambda: labellers[-1].after_batches(),
    )


def run(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_maxl(config, seed, weight_aware=False)


def run_weight_aware(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_maxl(config, seed, weight_aware=True)
