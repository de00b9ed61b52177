"""Multi-task training as a steppable object (no Gym in here).

By default one shared encoder with one head per task (hard parameter sharing); with
``model=...`` a task network of :data:`mtl_envs.models.TASK_NETWORKS` (the Multi-Task
Hypernetwork, per-task networks, ...) that maps ``(x, task)`` to predictions. Each step
computes the n task losses of a batch and updates the network on a weighted objective, ``sum
w_i L_i`` or the scale-invariant ``sum w_i log L_i`` (IGB eq. 2); optionally the per-task
gradients of the shared parameters are combined by a torchjd aggregator (IGB Algorithm 3)
while the task-specific heads take their weighted-loss gradients. The LossWeighting env and
the loss-weighting baselines all drive this one loop.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from mtl_envs.data.base import SPLITS
from mtl_envs.data.multitask import MultiTaskDataset, load_multitask_dataset
from mtl_envs.data.transforms import Normalize, random_crop_flip
from mtl_envs.errors import ConfigError
from mtl_envs.models import (
    BACKBONES,
    TASK_NETWORKS,
    MultiHeadNet,
    build_backbone,
    build_task_network,
)
from mtl_envs.training.common import OPTIMIZERS, eval_mode, make_optimizer, seeded
from mtl_envs.training.metrics import task_target_variance
from mtl_envs.training.weighting import (
    LOSS_MODES,
    Weighting,
    objective_term_derivatives,
    weighted_objective_terms,
)
from mtl_envs.utils import (
    check_choice,
    check_field_types,
    check_int,
    check_number,
    lookup,
    resolve_device,
    suggest,
)

BATCHING = ("balanced", "uniform")
AGGREGATORS = ("mgda", "pcgrad", "cagrad", "imtl_g", "nash_mtl", "upgrad", "dualproj", "mean")


def make_aggregator(name: str, num_tasks: int):
    """A torchjd aggregator by name (MGDA, PCGrad, CAGrad, IMTL-G, Nash-MTL, UPGrad, ...).

    CAGrad uses c = 0.4 and Nash-MTL its published defaults, as in their papers' MTL runs.
    """
    from torchjd import aggregation as agg

    factories = {
        "mgda": agg.MGDA,
        "pcgrad": agg.PCGrad,
        "cagrad": lambda: agg.CAGrad(c=0.4),
        "imtl_g": agg.IMTLG,
        "nash_mtl": lambda: agg.NashMTL(n_tasks=num_tasks),
        "upgrad": agg.UPGrad,
        "dualproj": agg.DualProj,
        "mean": agg.Mean,
    }
    return lookup(factories, name, kind="aggregator")()


# What torchjd's Nash-MTL weighting carries from one call to the next: the last weights (the
# warm start of its solver and the weights reused between updates), the Gram matrix's norm and
# the call counter. Everything else it holds is settings or the cvxpy problem built from them.
_NASH_MTL_STATE = ("prvs_alpha", "normalization_factor", "step")


def aggregator_state(aggregator: Any) -> dict[str, Any] | None:
    """The state ``aggregator`` keeps between calls, as tensors and numbers (checkpointable).

    Most torchjd aggregators are functions of their input and give ``None``. Nash-MTL gives
    its last weights and Gram normalisation (NumPy arrays, stored as tensors) and step count.

    Raises:
        TypeError: a stateful aggregator whose state is not known here; saving it anyway would
            resume a run from a reset aggregator.
    """
    import torchjd
    from torchjd import aggregation

    if aggregator is None:
        return None
    is_nash = isinstance(aggregator, aggregation.NashMTL)
    if is_nash and all(hasattr(aggregator.weighting, a) for a in _NASH_MTL_STATE):
        weighting = aggregator.weighting
        return {
            "prvs_alpha": torch.from_numpy(np.array(weighting.prvs_alpha)),
            "normalization_factor": torch.from_numpy(np.array(weighting.normalization_factor)),
            "step": float(weighting.step),
        }
    # torchjd marks the aggregators that keep state (older versions may not).
    if is_nash or isinstance(aggregator, getattr(torchjd, "Stateful", ())):
        raise TypeError(
            f"Cannot checkpoint the state of the {type(aggregator).__name__} aggregator of this "
            "torchjd version; set `checkpoint_every=0`, or extend `aggregator_state` to it."
        )
    return None


def load_aggregator_state(aggregator: Any, state: dict[str, Any] | None) -> None:
    """Set what :func:`aggregator_state` returned on a freshly built ``aggregator``."""
    if state is None:
        return
    weighting = aggregator.weighting
    # Copies, so that the next calls do not write into the loaded checkpoint.
    weighting.prvs_alpha = state["prvs_alpha"].numpy().copy()
    weighting.normalization_factor = state["normalization_factor"].numpy().copy()
    weighting.step = state["step"]
    if weighting.step != 0:
        # Nash-MTL builds its cvxpy problem on its first call only (step 0); a resumed one
        # is past it. The problem's parameters are all set anew before each solve.
        weighting._init_optim_problem()


@dataclass
class MultiTaskLearnerConfig:
    """The multi-task training run. Defaults are CPU-sized; IGB's own runs used Adam."""

    dataset: str = "digits10"
    """Registered multi-task dataset (``mtl_envs.data.multitask.MULTITASK_DATASETS``)."""
    data_root: str | None = None
    download: bool = False
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    """Options of the dataset reader (``num_tasks``, ``samples_per_task`` of ``cubic``...)."""
    split_seed: int = 0
    """Seed of the dataset's train/val/test split (and of synthetic data)."""
    model: str | None = None
    """``None``: shared ``backbone`` + one head per task. Otherwise a task network for feature
    inputs: ``hypernet``, ``hard_sharing``, ``cross_stitch``, ``sluice``, ``dmtrl``, ``mrn``,
    ``maxroam``, ``stl_naive``, ``stl_task_info``, ``per_task``."""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """Constructor options of the task network (``hidden``, ``extractor_layers``, ...)."""
    use_metadata: bool = True
    """Give the task network the dataset's task metadata, when it has any."""
    batching: str = "balanced"
    """``balanced``: ``batch_size // n`` samples of every task per batch, task losses are
    per-task means. ``uniform``: random batches of ``batch_size`` samples, task t's loss is
    its share of the batch mean (so equal weights give the plain mean over samples)."""
    backbone: str = "small_cnn"
    """Shared encoder (``mtl_envs.models.BACKBONES``); feature datasets use ``mlp``."""
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    head_hidden: int = 64
    optimizer: str = "adam"
    """``adam`` (IGB, section 4.1) or ``sgd``."""
    lr: float = 1e-3
    momentum: float = 0.9
    """SGD only."""
    weight_decay: float = 0.0
    scheduler_step_epochs: int = 100
    """StepLR period; IGB halves the learning rate every 100 epochs on NYUv2."""
    scheduler_gamma: float = 0.5
    batch_size: int = 100
    """Samples per batch; with per-task samples, ``batch_size // n`` per task (at least 1)."""
    loss: str = "sum"
    """``sum`` = sum w_i L_i, ``log`` = sum w_i log L_i (IGB eq. 2)."""
    aggregator: str | None = None
    """torchjd aggregator for the shared parameters (IGB Algorithm 3), or ``None``."""
    augment: bool | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("head_hidden", "scheduler_step_epochs", "batch_size"):
            check_int(name, getattr(self, name))
        check_int("split_seed", self.split_seed, minimum=0)
        # The LossWeighting reward scales by lr_0 / lr_t (IGB eq. 4): both must stay above 0.
        for name in ("lr", "scheduler_gamma"):
            check_number(name, getattr(self, name), strict=True)
        for name in ("momentum", "weight_decay"):
            check_number(name, getattr(self, name))
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("loss", self.loss, LOSS_MODES)
        check_choice("batching", self.batching, BATCHING)
        # Every name is checked, also one the chosen network does not read: a typo, or an
        # option meant for the other kind of network, is an error, never silently ignored.
        check_choice("backbone", self.backbone, BACKBONES)
        if self.model is not None:
            check_choice("model", self.model, TASK_NETWORKS)
            if self.backbone_kwargs:
                raise ConfigError(
                    f"`backbone_kwargs` ({self.backbone_kwargs!r}) configure the shared image "
                    f"encoder, which `model={self.model!r}` does not use; pass the task "
                    "network's options as `model_kwargs`."
                )
        elif self.model_kwargs:
            raise ConfigError(
                f"`model_kwargs` ({self.model_kwargs!r}) configure a task network (`model`), "
                "and `model` is None (a shared backbone with heads: `backbone_kwargs`)."
            )
        if self.scheduler_gamma > 1.0:  # IGB eq. 4's lr_0 / lr_t assumes the rate never grows
            raise ConfigError(
                f"`scheduler_gamma` must be in (0, 1] (1 keeps the rate fixed); got "
                f"{self.scheduler_gamma!r}."
            )
        # Settings the chosen optimiser or network does not read, refused unless left alone.
        defaults = {item.name: item.default for item in fields(self)}
        if self.optimizer != "sgd" and self.momentum != defaults["momentum"]:
            raise ConfigError(
                f"`momentum` ({self.momentum!r}) is SGD's, and `optimizer` is "
                f"{self.optimizer!r}; set optimizer='sgd' or leave momentum alone."
            )
        if self.model is not None and self.head_hidden != defaults["head_hidden"]:
            raise ConfigError(
                f"`head_hidden` ({self.head_hidden!r}) sizes the heads on a shared backbone, "
                f"which `model={self.model!r}` does not have; pass its widths in "
                "`model_kwargs` (e.g. `hidden`)."
            )
        if self.aggregator is not None and self.aggregator not in AGGREGATORS:
            raise ConfigError(
                f"`aggregator` must be None or one of {list(AGGREGATORS)}; got "
                f"{self.aggregator!r}.{suggest(str(self.aggregator), AGGREGATORS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingBatch:
    """One prepared training batch (see :meth:`MultiTaskLearner.prepare_batch`)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    count: torch.Tensor


def network_penalty(net: torch.nn.Module) -> torch.Tensor | None:
    """The network's own loss term (:meth:`TaskNetwork.penalty`), or ``None`` (a shared
    encoder with heads has none)."""
    penalty = getattr(net, "penalty", None)
    return None if penalty is None else penalty()


def network_epoch_hook(net: torch.nn.Module) -> Callable[[], None] | None:
    """The network's own end-of-epoch update (``after_epoch``: MRN's, MaxRoam's), or ``None``."""
    return getattr(net, "after_epoch", None)


def _batches_to(
    batches: torch.Tensor | list[torch.Tensor], device: torch.device | str
) -> torch.Tensor | list[torch.Tensor]:
    """An epoch's batch order (one tensor, or a list when the last batch is shorter) on
    ``device``."""
    return [b.to(device) for b in batches] if isinstance(batches, list) else batches.to(device)


class MultiTaskLearner:
    """Shared encoder + n heads, optimiser, scheduler and data order of one MTL run.

    Args:
        config: the run's settings.
        seed: seeds initialisation, data order and augmentation.
        dataset: an already loaded dataset to share across runs; it stands for the one the
            config's data fields (``dataset``, ``data_root``, ``dataset_kwargs``,
            ``split_seed``...) would load, which are then not read.
        weighting: a loss-weighting rule used when :meth:`train_batch` gets no weights; its
            parameters (UW) join the optimiser.
        tasks: train only these task indices (single-task learning uses one); default all.
    """

    def __init__(
        self,
        config: MultiTaskLearnerConfig,
        seed: int = 0,
        dataset: MultiTaskDataset | None = None,
        weighting: Weighting | None = None,
        tasks: list[int] | None = None,
    ):
        self.config = config
        self.device = resolve_device(config.device)
        if dataset is None:
            dataset = load_multitask_dataset(
                config.dataset,
                config.data_root,
                download=config.download,
                device=self.device,
                split_seed=config.split_seed,
                options=config.dataset_kwargs,
            )
        self.data = dataset.to(self.device)
        if config.model is not None and self.data.is_image:
            raise ConfigError(
                f"`model={config.model!r}` needs feature inputs; dataset {self.data.name!r} holds "
                "images (use model=None with an image backbone)."
            )
        self.tasks = list(range(self.data.num_tasks)) if tasks is None else list(tasks)
        self.num_tasks = len(self.tasks)
        self.weighting = weighting
        self.augment = self.data.augment if config.augment is None else config.augment
        self.normalize = (
            Normalize(self.data.mean, self.data.std, self.device) if self.data.is_image else None
        )
        self.task_index = torch.tensor(self.tasks, device=self.device)
        if config.batch_size > len(self.data.train):  # balanced batches would repeat samples
            raise ConfigError(
                f"`batch_size` ({config.batch_size}) exceeds the training split "
                f"({len(self.data.train)} samples)."
            )
        self._one_task = config.model is not None and self.data.one_task_per_sample
        if config.batching == "uniform" or self.data.shared_inputs:
            self._per_task = None
            self._pool = torch.nonzero(self.data.train.mask[:, self.task_index].any(1)).flatten()
            self._num_batches = max(1, -(-len(self._pool) // config.batch_size))
            if self.data.shared_inputs and config.batching == "balanced":
                self._num_batches = len(self.data.train) // config.batch_size
        else:
            mask = self.data.train.mask[:, self.task_index]
            self._per_task = [torch.nonzero(mask[:, t]).flatten() for t in range(self.num_tasks)]
            self._k = max(1, config.batch_size // self.num_tasks)
            total = sum(len(ix) for ix in self._per_task)
            self._num_batches = max(1, -(-total // (self._k * self.num_tasks)))
            # Where each batch slot reads in the concatenation of the epoch's per-task
            # permutations: task t's column block cycles through its own permutation.
            needed, offset, blocks = self._num_batches * self._k, 0, []
            self._task_sizes = [len(ix) for ix in self._per_task]
            for size in self._task_sizes:
                position = offset + torch.arange(needed, device=self.device) % size
                blocks.append(position.reshape(self._num_batches, self._k))
                offset += size
            self._slots = torch.cat(blocks, dim=1)
            self._task_samples = torch.cat(self._per_task)
            starts = torch.tensor([0, *self._task_sizes[:-1]], device=self.device).cumsum(0)
            self._task_starts = starts.repeat_interleave(
                torch.tensor(self._task_sizes, device=self.device)
            )
        if self._num_batches < 1:
            raise ConfigError(
                f"`batch_size` ({config.batch_size}) exceeds the training split "
                f"({len(self.data.train)} samples)."
            )
        self._target_var = (
            self._task_target_variance() if self.data.task_type == "regression" else None
        )
        self.reset_run(seed)

    def _task_target_variance(self) -> torch.Tensor:
        """Per-task variance of the training targets (in the learner's units), the scale of
        the normalised MSE (:func:`~mtl_envs.training.metrics.task_target_variance`),
        computed over all the dataset's tasks and then taken for the learner's: a task too
        small to have a spread of its own takes all tasks' pooled variance, so a learner of
        some tasks (one network per task, a group) scales each task's error as the all-task
        learner does."""
        split = self.data.train
        targets = split.targets.reshape(len(split), self.data.num_tasks, -1)
        return task_target_variance(targets, split.mask)[self.task_index]

    # ------------------------------------------------------------------ run state
    def reset_run(self, seed: int) -> None:
        cfg = self.config
        shape = self.data.input_shape
        in_channels, size = (shape[0], shape[1]) if len(shape) == 3 else (shape[0], 1)
        num_outputs = self.data.num_classes if self.data.task_type == "classification" else 1

        num_outputs = self.data.output_dim if self.data.task_type == "regression" else num_outputs

        def build() -> torch.nn.Module:
            if cfg.model is not None:
                meta = self.data.task_metadata
                use = cfg.use_metadata and meta is not None
                return build_task_network(
                    cfg.model,
                    self.num_tasks,
                    int(torch.tensor(shape).prod()),
                    num_outputs,
                    metadata=meta[self.task_index].cpu() if use else None,
                    kwargs=cfg.model_kwargs,
                )
            backbone = build_backbone(cfg.backbone, in_channels, size, cfg.backbone_kwargs)
            return MultiHeadNet(backbone, [num_outputs] * self.num_tasks, cfg.head_hidden)

        self.net = seeded(seed, build).to(self.device)
        params: list = list(self.net.parameters())
        if self.weighting is not None:
            self.weighting.reset(self.num_tasks)
            self.weighting.to(self.device)
            own = list(self.weighting.parameters())
            if own:  # the rule's parameters (UW's log-variances): their own rate, no decay
                rate = cfg.lr if self.weighting.lr is None else self.weighting.lr
                params = [{"params": params}, {"params": own, "lr": rate, "weight_decay": 0.0}]
        # Stateful aggregators (Nash-MTL) start afresh with the run.
        self.aggregator = (
            None if cfg.aggregator is None else make_aggregator(cfg.aggregator, self.num_tasks)
        )
        self.optimizer = make_optimizer(
            params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=cfg.scheduler_step_epochs, gamma=cfg.scheduler_gamma
        )
        self.initial_lr = cfg.lr
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self.epoch = 0
        self.loss_history: list[torch.Tensor] = []
        self.base_losses: torch.Tensor | None = None
        self._epoch_loss_sum = torch.zeros(self.num_tasks, device=self.device)
        self._epoch_batches = 0
        self.batches = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self.position = 0
        """The cursor: index, in the epoch's order, of the next batch to train on."""
        self._pending: tuple[list[torch.Tensor], torch.Tensor | None] | None = None
        self._pending_rng: torch.Tensor | None = None
        self.train_seconds = 0.0

    @property
    def num_batches(self) -> int:
        return self._num_batches

    def __deepcopy__(self, memo: dict[int, Any]) -> MultiTaskLearner:
        """A copy of the run at this point, to branch it (try two weightings from one
        state). Torch copies only leaf tensors, so not the pending forward's graph: the copy
        redoes that forward from the generator state before it (:meth:`replay_pending`), as
        a resumed run does, and continues exactly as the original would."""
        other = type(self).__new__(type(self))
        memo[id(self)] = other
        for key, value in self.__dict__.items():
            setattr(other, key, None if key == "_pending" else copy.deepcopy(value, memo))
        if self._pending is not None:
            other.replay_pending()
        return other

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: network, optimiser, scheduler, the weighting
        rule's parameters, the aggregator, the data-order generator, epoch counter, loss
        history and the current epoch's batch order."""
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weighting": None if self.weighting is None else self.weighting.state_dict(),
            # Some aggregators keep state between steps (Nash-MTL's last weights and step
            # count): saved as plain data, since a checkpoint holds no arbitrary objects.
            "aggregator": aggregator_state(self.aggregator),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "loss_history": [h.cpu() for h in self.loss_history],
            "base_losses": None if self.base_losses is None else self.base_losses.cpu(),
            "train_seconds": self.train_seconds,
            # The current epoch's batch order and running loss sums: a run saved between two
            # batches continues mid-epoch.
            "batches": _batches_to(self.batches, "cpu"),
            "epoch_loss_sum": self._epoch_loss_sum.cpu(),
            "epoch_batches": self._epoch_batches,
            "position": self.position,
            # The data-order generator's state before the pending batch's forward: a resumed
            # run redoes that forward with the same augmentation (replay_pending).
            "pending_rng": None if self._pending is None else self._pending_rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.weighting is not None and state["weighting"] is not None:
            self.weighting.load_state_dict(state["weighting"])
        if self.config.aggregator is not None:
            # A fresh aggregator, so that no state of this learner's own steps remains.
            self.aggregator = make_aggregator(self.config.aggregator, self.num_tasks)
            load_aggregator_state(self.aggregator, state["aggregator"])
        self.generator.set_state(state["generator"])
        self.epoch = state["epoch"]
        self.loss_history = [h.to(self.device) for h in state["loss_history"]]
        base = state["base_losses"]
        self.base_losses = None if base is None else base.to(self.device)
        self.train_seconds = state["train_seconds"]
        self.batches = _batches_to(state["batches"], self.device)
        self._epoch_loss_sum = state["epoch_loss_sum"].to(self.device)
        self._epoch_batches = state["epoch_batches"]
        self.position = state["position"]
        self._pending, self._pending_rng = None, state["pending_rng"]

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def begin_epoch(self) -> None:
        """Draw the epoch's batches: shuffled slices, or task-balanced batches of k per task."""
        g, dev = self.generator, self.device
        if self._per_task is None:
            b = self.config.batch_size
            if self.config.batching == "uniform":
                # Every pooled sample once per epoch; the last batch may be shorter.
                order = self._pool[torch.randperm(len(self._pool), device=dev, generator=g)]
                self.batches = list(order.split(b))
            else:
                order = torch.randperm(len(self.data.train), device=dev, generator=g)
                self.batches = order[: self._num_batches * b].reshape(self._num_batches, b)
        else:
            # One permutation per task from the generator, in task order; one gather then
            # lays them out as batches of k samples per task.
            order = torch.cat(
                [torch.randperm(n, device=dev, generator=g) for n in self._task_sizes]
            )
            self.batches = self._task_samples[(order + self._task_starts)[self._slots]]
        self._epoch_loss_sum.zero_()
        self._epoch_batches = 0
        self.position = 0

    def batch_indices(self, batch: int) -> torch.Tensor:
        """Training indices of batch ``batch`` of the current epoch (a view; training moves
        through the epoch with the cursor, :meth:`next_indices`)."""
        return self.batches[batch]

    @property
    def epoch_done(self) -> bool:
        """Whether the cursor has passed the epoch's last batch."""
        return self.position >= self.num_batches

    def next_indices(self) -> torch.Tensor:
        """The training indices of the batch at the cursor; advances the cursor."""
        if self.epoch_done:
            raise RuntimeError("The epoch's batches are used up; call end_epoch().")
        indices = self.batches[self.position]
        self.position += 1
        return indices

    # ------------------------------------------------------------- IGB's step split
    def forward_pending(self) -> torch.Tensor:
        """Forward the batch at the cursor and keep its graph for :meth:`apply_pending`.

        IGB's agent observes the losses L_t of the batch its weights then train on, and is
        rewarded with the next batch's losses after the update: each env step applies the
        pending batch and forwards the next one. Returns the detached task losses (n,).
        """
        if self.epoch_done:
            raise RuntimeError("No batch at the cursor; call begin_epoch().")
        self._pending_rng = self.generator.get_state()
        losses, features = self.task_losses(self.batches[self.position])
        self._pending = (losses, features)
        return torch.stack(losses).detach()

    def apply_pending(self, weights: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
        """Update on the pending batch with ``weights`` and advance the cursor; where that
        ends the epoch, close it (:meth:`end_epoch`) and draw the next one.

        Returns the batch's detached task losses and whether an epoch ended.
        """
        if self._pending is None:
            raise RuntimeError("No pending batch; call forward_pending() first.")
        (losses, features), self._pending = self._pending, None
        detached = self.apply(losses, features, weights)
        return detached, self.advance()

    def advance(self) -> bool:
        """Move the cursor past the batch just trained on; where that ends the epoch, close
        it (:meth:`end_epoch`) and draw the next one. Returns whether an epoch ended."""
        self.position += 1
        ended = self.epoch_done
        if ended:
            self.end_epoch()
            self.begin_epoch()
        return ended

    def replay_pending(self) -> torch.Tensor:
        """After :meth:`load_state_dict` of a run saved between two steps: redo the pending
        batch's forward with the same augmentation draw. BatchNorm's running statistics
        already count that forward, so the saved ones are put back (by rebinding: the new
        graph holds the updated tensors)."""
        if self._pending_rng is None:
            raise RuntimeError("The loaded state has no pending batch to replay.")
        self.generator.set_state(self._pending_rng)
        saved = {name: b.clone() for name, b in self.net.named_buffers()}
        current = self.forward_pending()
        for name, value in saved.items():
            module, _, attr = name.rpartition(".")
            setattr(self.net.get_submodule(module), attr, value)
        return current

    def end_epoch(self) -> None:
        """Record the epoch's mean task losses (after the second epoch they become L_base) and
        run the network's own end-of-epoch update, where it has one (MRN's, MaxRoam's)."""
        mean = self._epoch_loss_sum / max(self._epoch_batches, 1)
        self.loss_history.append(mean.clone())
        if self.epoch == 1:  # second epoch (IGB Algorithm 1-2, line 1-3)
            self.base_losses = mean.clone()
        hook = network_epoch_hook(self.net)
        if hook is not None:
            hook()
        self.scheduler.step()
        self.epoch += 1

    # ------------------------------------------------------------------ training
    def prepare_inputs(self, inputs: torch.Tensor, train: bool) -> torch.Tensor:
        """Network inputs from stored ones: augmented (training) and normalised images, or
        features as they are."""
        if self.normalize is None:
            return inputs
        if train and self.augment:
            inputs = random_crop_flip(inputs, self.generator)
        return self.normalize(inputs)

    def per_sample_losses(
        self, outputs: list[torch.Tensor], targets: torch.Tensor
    ) -> list[torch.Tensor]:
        """Per-task (B,) losses: cross-entropy per head, or squared error for regression.

        Each task's loss keeps a graph of its own (no op joins the tasks), so per-task
        gradients can be taken one after another, as torchjd's ``mtl_backward`` does.
        """
        if self.data.task_type == "classification":
            return [
                F.cross_entropy(out, targets[:, t].long(), reduction="none")
                for t, out in enumerate(outputs)
            ]
        return [
            ((out - targets[:, t].reshape(len(out), -1)) ** 2).mean(1)
            for t, out in enumerate(outputs)
        ]

    def _own_task_losses(
        self, x: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample loss of each sample's own task with a task network, and that task.

        ``targets``/``mask`` are restricted to the learner's tasks; samples of other tasks get
        a zero loss (they never reach a batch) and task 0.
        """
        task = mask.to(torch.uint8).argmax(dim=1)
        out = self.net(x, task)
        rows = torch.arange(len(x), device=x.device)
        own = targets[rows, task]
        if self.data.task_type == "classification":
            per_sample = F.cross_entropy(out, own.long(), reduction="none")
        else:
            per_sample = ((out - own.reshape(len(out), -1)) ** 2).mean(1)
        return per_sample * mask.any(1), task

    def _task_network_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net.forward_all(x).unbind(1))

    def prepare_batch(self, indices: torch.Tensor) -> TrainingBatch:
        """A training batch as the network sees it: augmented (one draw from the learner's
        generator) and normalised inputs, the learner's task targets and label mask, and the
        per-task sample counts that turn summed losses into task losses."""
        split = self.data.train
        mask = split.mask[indices][:, self.task_index]
        count = (
            torch.full((self.num_tasks,), float(len(indices)), device=self.device)
            if self.config.batching == "uniform"
            else mask.float().sum(0).clamp_min(1.0)
        )
        return TrainingBatch(
            inputs=self.prepare_inputs(split.inputs[indices], train=True),
            targets=split.targets[indices][:, self.task_index],
            mask=mask,
            count=count,
        )

    def batch_losses(
        self, batch: TrainingBatch, shared: dict[str, torch.Tensor] | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Scalar task losses of ``batch``, each with its graph, and the shared features.

        ``shared``: other values for the encoder's parameters (a lookahead step, TAG); the
        forward then runs on copies of its buffers, so BatchNorm's running statistics stay.
        """
        self.net.train()
        x, targets, mask, count = batch.inputs, batch.targets, batch.mask, batch.count
        if self._one_task:
            # Only each sample's own task is evaluated: one pass, no loop over tasks.
            per_sample, task = self._own_task_losses(x, targets, mask)
            # scatter_add, not index_add: the same sums, and vmap (the batched vector form)
            # has a batching rule for it where index_add falls back to a loop over the runs.
            zeros = torch.zeros(self.num_tasks, device=self.device, dtype=per_sample.dtype)
            sums = zeros.scatter_add(0, task, per_sample)
            return list((sums / count).unbind()), None
        if shared is not None and self.config.model is not None:
            raise ConfigError("`shared` parameters need a shared encoder (model=None).")
        if self.config.model is not None:
            outputs, features = self._task_network_outputs(x), None
        else:
            backbone = self.net.backbone
            if shared is None:
                features = backbone(x)
            else:
                buffers = {n: b.clone() for n, b in backbone.named_buffers()}
                features = functional_call(backbone, {**shared, **buffers}, (x,))
            outputs = [head(features) for head in self.net.heads]
        return self.masked_losses(outputs, batch), features

    def masked_losses(
        self, outputs: list[torch.Tensor], batch: TrainingBatch
    ) -> list[torch.Tensor]:
        """Scalar task losses from the heads' ``outputs`` on ``batch``: each task's per-sample
        losses over its labelled samples, divided by the batch's count for the task."""
        per_sample = self.per_sample_losses(outputs, batch.targets)
        mask = batch.mask.float()
        return [(loss * mask[:, t]).sum() / batch.count[t] for t, loss in enumerate(per_sample)]

    def task_losses(self, indices: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Scalar task losses of a training batch, each with its graph, and the features."""
        return self.batch_losses(self.prepare_batch(indices))

    def train_batch(
        self, indices: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One update on the batch ``indices``; returns its detached task losses (n,).

        ``weights`` (n,) come from the caller (the env's action); without them the learner's
        weighting rule (default equal weights) decides from the batch losses.
        """
        losses, features = self.task_losses(indices)
        return self.apply(losses, features, weights)

    def apply(
        self,
        losses: list[torch.Tensor],
        features: torch.Tensor | None,
        weights: torch.Tensor | None,
    ) -> torch.Tensor:
        """Update on losses from :meth:`task_losses` and count them in the epoch's means."""
        start = time.perf_counter()
        detached = self.update(losses, features, weights)
        self.record_batch(detached, time.perf_counter() - start)
        return detached

    def record_batch(self, losses: torch.Tensor, seconds: float = 0.0) -> None:
        """Count a trained batch's detached task losses in the epoch's means (L_base)."""
        self._epoch_loss_sum += losses
        self._epoch_batches += 1
        self.train_seconds += seconds

    def update(
        self,
        losses: list[torch.Tensor],
        features: torch.Tensor | None,
        weights: torch.Tensor | None,
    ) -> torch.Tensor:
        """Optimiser step on the weighted objective (IGB Algorithm 3 with an aggregator).

        Returns the detached task losses (n,).
        """
        rule = self.weighting
        loss_mode = self.config.loss if rule is None else rule.loss_mode
        detached = torch.stack(losses).detach()
        if weights is None:
            weights = torch.ones_like(detached) if rule is None else rule.weights(detached, self)
        weights = weights.to(detached)
        fixed = weights.detach()
        self.optimizer.zero_grad(set_to_none=True)
        if self.aggregator is None:
            weighted_objective_terms(torch.stack(losses), fixed, loss_mode).sum().backward()
        else:
            from torchjd.autojac import backward, jac_to_grad, mtl_backward

            terms = [
                weighted_objective_terms(loss, fixed[t], loss_mode) for t, loss in enumerate(losses)
            ]
            if features is None:
                # A task network: its task-stacked parameters (heads, embeddings) take each
                # task's own gradient, as Algorithm 3's heads do (slice t only reaches task
                # t's term, so the gradient of the sum is that); the rest is shared and
                # aggregated.
                own = list(getattr(self.net, "task_parameters", list)())
                mine = {id(p) for p in own}
                shared = [p for p in self.net.parameters() if p.requires_grad and id(p) not in mine]
                if own:
                    grads = torch.autograd.grad(sum(terms), own, retain_graph=bool(shared))
                    for p, g in zip(own, grads):
                        p.grad = g
                if shared:
                    backward(terms, inputs=shared)
                    jac_to_grad(shared, self.aggregator)
            else:
                shared = list(self.net.backbone.parameters())
                heads = [list(h.parameters()) for h in self.net.heads]
                mtl_backward(terms, features=features, tasks_params=heads, shared_params=shared)
                jac_to_grad(shared, self.aggregator)
        if rule is not None:
            # Gradients for the rule's own parameters (UW), from the losses' values alone.
            extra = rule.objective(detached, weights)
            if extra is not None:
                extra.backward()
        penalty = network_penalty(self.net)
        if penalty is not None:  # the network's own regulariser (sluice's orthogonality)
            penalty.backward()
        self.optimizer.step()
        return detached

    def objective_coefficients(self, losses: torch.Tensor) -> torch.Tensor:
        """``dJ/dL_i`` of the equal-weight objective at the detached task ``losses`` (n,):
        1 for ``loss="sum"``, ``1 / L_i`` for ``"log"``."""
        if self.weighting is not None or self.aggregator is not None:
            raise ConfigError("Per-task gradient updates are the plain equal-weight update only.")
        losses = losses.detach()
        return objective_term_derivatives(losses, torch.ones_like(losses), self.config.loss)

    def apply_task_gradients(
        self, losses: torch.Tensor, task_gradients: torch.Tensor, params: list[torch.Tensor]
    ) -> None:
        """Equal-weight update from per-task gradients already computed: ``task_gradients``
        (n, P) of the detached task ``losses`` (n,) w.r.t. ``params`` (all the network's
        trainable parameters, flattened in order). The objective's gradient is their
        combination ``sum_i dJ/dL_i g_i`` (:meth:`objective_coefficients`): what
        :meth:`update` would compute with one more backward pass. Counts the batch."""
        gradient = self.objective_coefficients(losses) @ task_gradients
        self.apply_gradient(losses, gradient, params)

    def apply_gradient(
        self, losses: torch.Tensor, gradient: torch.Tensor, params: list[torch.Tensor]
    ) -> None:
        """An optimiser step with the objective's ``gradient`` w.r.t. ``params`` already
        computed (flattened in their order); counts the batch of detached task ``losses``."""
        parts = torch.split(gradient, [p.numel() for p in params])
        self.apply_gradients(losses, [g.view_as(p) for p, g in zip(params, parts)], params)

    def apply_gradients(
        self,
        losses: torch.Tensor,
        gradients: Sequence[torch.Tensor],
        params: list[torch.Tensor],
    ) -> None:
        """:meth:`apply_gradient` with the gradient given per parameter (each shaped like its
        parameter and held by nothing else: they become the parameters' ``.grad``)."""
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, gradients, strict=True):
            p.grad = g
        self.optimizer.step()
        self.record_batch(losses.detach(), time.perf_counter() - start)

    def train_epoch(
        self, weights: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> dict[str, float]:
        """A whole epoch; returns mean task losses.

        ``weights`` maps a batch's detached task losses (n,) to its task weights (the IGBv2
        warm-up draws random ones); without it the learner's weighting rule decides.
        """
        self.begin_epoch()
        while not self.epoch_done:
            losses, features = self.task_losses(self.next_indices())
            w = None if weights is None else weights(torch.stack(losses).detach())
            self.apply(losses, features, w)
        mean = (self._epoch_loss_sum / max(self._epoch_batches, 1)).tolist()
        self.end_epoch()
        return {"train/loss": sum(mean) / len(mean), "train/seconds": self.train_seconds}

    # ------------------------------------------------------------------ evaluation
    @torch.inference_mode()
    def _split_statistics(
        self, split: str, batch_size: int = 1000
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Per-task mean loss, accuracy (zeros for regression) and, for z-scored regression
        targets with a task network, squared-error sums in the data's units (else ``None``)."""
        check_choice("split", split, SPLITS)
        with eval_mode(self.net):
            return self._split_sums(split, batch_size)

    def _split_sums(
        self, split: str, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        data = self.data.split(split)
        n = self.num_tasks
        correct = torch.zeros(n, device=self.device)
        loss_sum = torch.zeros(n, device=self.device)
        count = torch.zeros(n, device=self.device)
        raw_sum = None
        if self._one_task and self.data.target_std is not None:
            variance = torch.tensor(self.data.target_std, device=self.device) ** 2
            raw_sum = torch.zeros(n, device=self.device)
        for start in range(0, len(data), batch_size):
            x = self.prepare_inputs(data.inputs[start : start + batch_size], train=False)
            targets = data.targets[start : start + batch_size][:, self.task_index]
            mask = data.mask[start : start + batch_size][:, self.task_index].float()
            if self._one_task and self.data.task_type == "regression":
                task = mask.to(torch.uint8).argmax(dim=1)
                rows = torch.arange(len(x), device=self.device)
                error = (self.net(x, task) - targets[rows, task].reshape(len(x), -1)) ** 2
                valid = mask.any(1).float()
                loss_sum.index_add_(0, task, error.mean(1) * valid)
                if raw_sum is not None:
                    raw_sum.index_add_(0, task, (error * variance).mean(1) * valid)
                count += mask.sum(0)
                continue
            outputs = (
                self._task_network_outputs(x) if self.config.model is not None else self.net(x)
            )
            per_sample = torch.stack(self.per_sample_losses(outputs, targets), dim=1)
            loss_sum += (per_sample * mask).sum(0)
            count += mask.sum(0)
            if self.data.task_type == "classification":
                pred = torch.stack([o.argmax(dim=1) for o in outputs], dim=1)
                correct += ((pred == targets.long()).float() * mask).sum(0)
        if raw_sum is not None:
            raw_sum = torch.cat([raw_sum / count.clamp_min(1.0), raw_sum.sum()[None] / count.sum()])
        count = count.clamp_min(1.0)
        return loss_sum / count, correct / count, raw_sum

    def split_size(self, split: str = "test") -> int:
        """Labelled (sample, task) pairs of the learner's tasks in ``split``."""
        check_choice("split", split, SPLITS)
        return int(self.data.split(split).mask[:, self.task_index].sum())

    def split_losses(self, split: str = "test") -> list[float]:
        """Per-task mean loss on a split, in the order of ``tasks`` (ETAP eq. 1's L_t)."""
        return self._split_statistics(split)[0].tolist()

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Per-task metrics: ``<task>/accuracy`` and ``<task>/loss`` (classification) or
        ``<task>/mse`` (regression), their means, and the mean task loss.

        Regression also reports ``mean_nmse``, the mean over tasks of each task's MSE over the
        variance of its training targets (scale-free); with z-scored targets and a task network
        also errors in the data's own units: ``mean_raw_mse`` (mean over tasks) and ``raw_mse``
        (mean over samples, the hypernetwork paper's Table 2 metric).
        """
        losses, accuracy, raw = self._split_statistics(split)
        # A task with no labelled sample in the split (a school of two pupils has none in
        # validation) has no metric there: it is left out of the means, not counted as 0.
        held = self.data.split(split).mask[:, self.task_index].sum(0) > 0
        names = [self.data.task_names[t] for t, h in zip(self.tasks, held.tolist()) if h]
        losses, accuracy = losses[held], accuracy[held]
        metrics: dict[str, float] = {}
        if self.data.task_type == "classification":
            for name, acc, loss in zip(names, accuracy.tolist(), losses.tolist()):
                metrics[f"{name}/accuracy"] = acc
                metrics[f"{name}/loss"] = loss
            metrics["mean_accuracy"] = float(accuracy.mean())
        else:
            for name, mse in zip(names, losses.tolist()):
                metrics[f"{name}/mse"] = mse
            metrics["mean_mse"] = float(losses.mean())
            # Each task's MSE over its target variance (1 = predicting the task's mean): a
            # mean over tasks that no task's scale dominates.
            metrics["mean_nmse"] = float((losses / self._target_var[held]).mean())
            if raw is not None:
                metrics["mean_raw_mse"] = float(raw[:-1][held].mean())
                metrics["raw_mse"] = float(raw[-1])
        metrics["loss"] = float(losses.mean())
        return metrics
