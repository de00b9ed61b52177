"""The auxiliary-learning training loop as a steppable object (no Gym in here).

``AuxLearner`` trains a two-head network (primary + auxiliary) one batch at a time on
``primary CE + aux_weight * mean(sample_weight * aux focal loss)`` (RL-AUX eq. 2 and 7). The
AuxLabel env, its vector form and the non-RL baselines all drive this one loop, and MAXL's
virtual step differentiates the same :meth:`AuxLearner.objective`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mtl_envs.data import ImageDataset, Normalize, load_dataset, random_crop_flip
from mtl_envs.errors import ConfigError
from mtl_envs.models import build_multi_head_net
from mtl_envs.training.common import eval_mode, restore_state, seeded, snapshot_state
from mtl_envs.training.losses import focal_loss
from mtl_envs.training.metrics import classification_metrics, confusion_matrix
from mtl_envs.utils import check_choice, check_field_types, check_int, check_number, resolve_device

# A labeller maps a batch, as training-set indices (B,) and the prepared (augmented,
# normalised) inputs the main network trains on, to (aux targets (B, K), weights (B,) or None).
Labeller = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
PRIMARY_LOSSES = ("cross_entropy", "focal")


@dataclass
class AuxLearnerConfig:
    """Everything that defines the main network's training run. Defaults: RL-AUX appendix B
    where it gives one (each field says where its default comes from); appendix B names only
    "SGD with a learning rate scheduler", so momentum and weight decay are 0."""

    dataset: str = "digits"
    """Registered image dataset (``mtl_envs.data.DATASETS``)."""
    data_root: str | None = None
    """Folder holding the dataset; ``None`` = ``$MTL_ENVS_DATA`` or the user cache."""
    download: bool = False
    """Fetch the official files when missing."""
    val_fraction: float | int | None = None
    """Stratified validation split from the training set; ``None`` = the dataset default."""
    train_subset: int | None = None
    """Train on a stratified subset of this many images (CPU-sized runs)."""
    label_noise: float = 0.0
    """Fraction of training and validation images whose primary label is replaced by a
    random other class (test labels stay clean)."""
    backbone: str = "vgg16"
    """Registered backbone (``mtl_envs.models.BACKBONES``); VGG16 as in appendix C.1."""
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    head_hidden: int = 512
    """Hidden width of both two-layer heads (appendix C.1)."""
    hierarchy_factor: int = 5
    """psi: auxiliary sub-classes per primary class (appendix B)."""
    aux_weight: float = 1.0
    """lambda: weight of the auxiliary loss (appendix B)."""
    focal_gamma: float = 2.0
    """Focusing exponent of the auxiliary focal loss (MAXL code)."""
    primary_loss: str = "cross_entropy"
    """Primary-task training loss: ``cross_entropy`` (RL-AUX eq. 2) or ``focal`` (with
    ``focal_gamma``), which the public RL-AUX and MAXL code train the primary head with. The
    reward and the evaluation use cross-entropy either way."""
    lr: float = 0.01
    """SGD learning rate of the main network (appendix B)."""
    momentum: float = 0.0
    """SGD momentum: 0 (plain SGD, as the MAXL reference code's step; the paper names none)."""
    weight_decay: float = 0.0
    """SGD weight decay: 0 (the paper names none)."""
    scheduler_step_epochs: int = 50
    """StepLR period in epochs (appendix B)."""
    scheduler_gamma: float = 0.5
    """StepLR decay factor (appendix B)."""
    train_batch_size: int = 100
    """B_T: samples per SGD step (appendix B)."""
    eval_batch_size: int = 256
    """B_R: training images in the reward's evaluation batch (appendix B)."""
    augment: bool | None = None
    """Random crop + flip on training batches; ``None`` = the dataset's default."""
    device: str = "auto"
    """``"auto"`` picks CUDA when present."""
    amp: bool = False
    """Run the main network's forward passes under ``bfloat16`` autocast (mixed precision;
    losses stay in float32)."""
    channels_last: bool = False
    """Keep the main network and its image batches in the ``channels_last`` memory format
    (faster convolutions on recent GPUs)."""

    def __post_init__(self) -> None:
        check_field_types(self)
        positive = (
            "head_hidden",
            "hierarchy_factor",
            "scheduler_step_epochs",
            "train_batch_size",
            "eval_batch_size",
        )
        for name in positive:
            check_int(name, getattr(self, name))
        for name in ("aux_weight", "focal_gamma", "momentum", "weight_decay"):
            check_number(name, getattr(self, name))
        for name in ("lr", "scheduler_gamma"):
            check_number(name, getattr(self, name), strict=True)
        check_choice("primary_loss", self.primary_loss, PRIMARY_LOSSES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuxLearner:
    """Main network, optimiser, scheduler and data order of one auxiliary-learning run.

    Args:
        config: the run's settings.
        seed: seeds network initialisation, data order, augmentation and evaluation batches.
        dataset: an already loaded dataset to share (avoids reloading on every seeded reset);
            it stands for the one the config's data fields (``dataset``, ``data_root``,
            ``val_fraction``, ``train_subset``, ``label_noise``) would load, which are then
            not read.
    """

    def __init__(
        self, config: AuxLearnerConfig, seed: int = 0, dataset: ImageDataset | None = None
    ):
        self.config = config
        self.device = resolve_device(config.device)
        if dataset is None:
            dataset = load_dataset(
                config.dataset,
                config.data_root,
                download=config.download,
                device=self.device,
                val_fraction=config.val_fraction,
                train_subset=config.train_subset,
                label_noise=config.label_noise,
            )
        self.data = dataset.to(self.device)
        if len(self.data.train) < config.train_batch_size:
            raise ConfigError(
                f"`train_batch_size` ({config.train_batch_size}) exceeds the training split "
                f"({len(self.data.train)} images)."
            )
        self.num_primary = self.data.num_classes
        self.num_aux = config.hierarchy_factor * self.num_primary
        self.augment = self.data.augment if config.augment is None else config.augment
        self.normalize = Normalize(self.data.mean, self.data.std, self.device)
        self.reset_run(seed)

    # ------------------------------------------------------------------ run state
    def reset_run(self, seed: int) -> None:
        """Fresh network, optimiser and scheduler, all randomness seeded by ``seed``."""
        cfg = self.config
        net = seeded(
            seed,
            lambda: build_multi_head_net(
                cfg.backbone,
                self.data.image_shape,
                [self.num_primary, self.num_aux],
                cfg.backbone_kwargs,
                cfg.head_hidden,
            ),
        )
        self.net = net.to(self.device)
        if cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=cfg.scheduler_step_epochs, gamma=cfg.scheduler_gamma
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self.epoch = 0
        self.version = uuid.uuid4().hex
        """Names the network's current values: a new one at every SGD step and fresh run, the
        snapshot's own after :meth:`restore` (so a value computed from the network, such as
        a validation loss, can be cached by it)."""
        self.order = torch.arange(len(self.data.train), device=self.device)
        self.position = 0
        """The cursor: index, in the epoch's order, of the next batch to train on."""

    @property
    def num_batches(self) -> int:
        """SGD steps per epoch; the remainder of a shuffled epoch is left out (drop-last)."""
        return len(self.data.train) // self.config.train_batch_size

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def shuffled_order(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random permutation of the training indices, drawn from ``generator`` (by default
        the learner's own)."""
        generator = self.generator if generator is None else generator
        return torch.randperm(len(self.data.train), device=self.device, generator=generator)

    def epoch_batches(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """An epoch's batches of training indices in a fresh order from ``generator``, the
        remainder left out, as :meth:`begin_epoch` and the cursor cut them."""
        order = self.shuffled_order(generator)
        return list(order.split(self.config.train_batch_size)[: self.num_batches])

    def begin_epoch(self) -> None:
        """Reshuffle the training order for a new epoch; the cursor goes to its first batch."""
        self.order = self.shuffled_order()
        self.position = 0

    def batch_indices(self, batch: int) -> torch.Tensor:
        """Training-set indices of batch ``batch`` of the current epoch (a view; training
        moves through the epoch with the cursor)."""
        b = self.config.train_batch_size
        return self.order[batch * b : (batch + 1) * b]

    @property
    def current_indices(self) -> torch.Tensor:
        """Training-set indices of the batch at the cursor."""
        return self.batch_indices(self.position)

    @property
    def epoch_done(self) -> bool:
        """Whether the cursor has passed the epoch's last batch."""
        return self.position >= self.num_batches

    def advance(self) -> bool:
        """Move the cursor to the next batch; returns whether the epoch's batches are used up."""
        self.position += 1
        return self.epoch_done

    def end_epoch(self) -> None:
        self.scheduler.step()
        self.epoch += 1

    # ------------------------------------------------------------------ training
    def prepare_inputs(
        self, images: torch.Tensor, train: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Normalised network inputs; ``train`` augments them first (:meth:`train_view`)."""
        if train:
            images = self.train_view(images, generator)
        x = self.normalize(images)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def train_view(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``images`` as a training step sees them before normalisation: augmented where the
        dataset augments (one draw from ``generator``, by default the learner's own), else
        themselves."""
        if not self.augment:
            return images
        generator = self.generator if generator is None else generator
        return random_crop_flip(images, generator, flip=self.data.hflip)

    def autocast(self) -> torch.autocast:
        """The precision context of the main network's forward passes (``amp``)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp)

    def objective(
        self,
        outputs: list[torch.Tensor],
        labels: torch.Tensor,
        aux_targets: torch.Tensor | None,
        sample_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The main network's training objective (RL-AUX eq. 2 and 7), with its graph:
        ``primary + aux_weight * mean(w_i * focal(aux, target_i))``.

        Args:
            outputs: the network's logits, primary first, then auxiliary (when targets).
            labels: (B,) primary labels.
            aux_targets: (B, K) auxiliary target distributions, or ``None`` (no auxiliary
                task: single-task learning).
            sample_weights: (B,) per-sample auxiliary weights (RL-AUX eq. 7), default 1.

        Returns:
            Scalar tensors ``primary_loss``, ``aux_loss`` and their sum ``loss``.
        """
        cfg = self.config
        if cfg.primary_loss == "focal":
            one_hot = F.one_hot(labels, self.num_primary).to(outputs[0].dtype)
            primary = focal_loss(outputs[0], one_hot, cfg.focal_gamma).mean()
        else:
            primary = F.cross_entropy(outputs[0], labels)
        if aux_targets is None:
            aux = torch.zeros((), device=primary.device, dtype=primary.dtype)
        else:
            per_sample = focal_loss(outputs[1], aux_targets, cfg.focal_gamma)
            if sample_weights is not None:
                per_sample = per_sample * sample_weights
            aux = per_sample.mean()
        return {"primary_loss": primary, "aux_loss": aux, "loss": primary + cfg.aux_weight * aux}

    def batch_inputs(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The training images ``indices`` as the network trains on them: augmented (one draw
        from ``generator``, by default the learner's own) and normalised."""
        return self.prepare_inputs(self.data.train.images[indices], train=True, generator=generator)

    def train_batch(
        self,
        indices: torch.Tensor,
        aux_targets: torch.Tensor | None,
        sample_weights: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One SGD step on :meth:`objective` for the training images ``indices``.

        Args:
            indices: (B,) training-set indices.
            aux_targets: (B, K) auxiliary target distributions, or ``None`` to train the
                primary task alone (single-task learning).
            sample_weights: (B,) per-sample auxiliary weights (RL-AUX eq. 7), default 1.
            inputs: the batch's prepared inputs when the caller holds them (a labeller saw
                them); default: :meth:`batch_inputs`.

        Returns:
            Detached scalar tensors ``primary_loss``, ``aux_loss``, ``loss``.
        """
        self.net.train()
        x = self.batch_inputs(indices) if inputs is None else inputs
        with self.autocast():
            outputs = self.net(x, heads=[0] if aux_targets is None else None)
            terms = self.objective(
                outputs, self.data.train.labels[indices], aux_targets, sample_weights
            )
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.optimizer.step()
        self.version = uuid.uuid4().hex
        return {k: v.detach() for k, v in terms.items()}

    def train_epoch(
        self, labeller: Labeller | None, after_batches: Callable[[], None] | None = None
    ) -> dict[str, float]:
        """A whole epoch with auxiliary targets from ``labeller`` (``None`` = single-task).

        The labeller sees each batch's prepared inputs, the very tensor the main network then
        trains on. ``after_batches`` runs once the epoch's SGD steps are done, before the
        learning-rate schedule steps (MAXL's generator pass). Returns the epoch's mean losses
        and its wall time.
        """
        start = time.perf_counter()
        self.begin_epoch()
        totals: dict[str, torch.Tensor] = {}
        while not self.epoch_done:
            idx = self.current_indices
            self.advance()
            x = self.batch_inputs(idx)
            targets, weights = (None, None) if labeller is None else labeller(idx, x)
            for key, value in self.train_batch(idx, targets, weights, inputs=x).items():
                totals[key] = totals.get(key, 0.0) + value
        if after_batches is not None:
            after_batches()
        self.end_epoch()
        out = {f"train/{k}": float(v) / self.num_batches for k, v in totals.items()}
        out["train/epoch_seconds"] = time.perf_counter() - start
        return out

    # ------------------------------------------------------------------ evaluation
    def sample_eval_indices(self) -> torch.Tensor:
        """B_R distinct random training indices: the reward's evaluation batch."""
        self.check_eval_batch_size()
        perm = torch.randperm(len(self.data.train), device=self.device, generator=self.generator)
        return perm[: self.config.eval_batch_size]

    def check_eval_batch_size(self) -> None:
        """Refuse a B_R larger than the training split, which cannot hold that many distinct
        images (the reward's batch would silently shrink to the split)."""
        n, size = len(self.data.train), self.config.eval_batch_size
        if size > n:
            raise ConfigError(
                f"`eval_batch_size` ({size}) exceeds the training split ({n} images): the "
                f"reward's batch (B_R) holds distinct training images; pass "
                f"eval_batch_size <= {n}."
            )

    @torch.no_grad()  # its value enters the reward's arithmetic outside inference mode
    def primary_loss(self, indices: torch.Tensor) -> torch.Tensor:
        """Mean primary cross-entropy of the (un-augmented) training images ``indices``."""
        x = self.prepare_inputs(self.data.train.images[indices], train=False)
        with eval_mode(self.net), self.autocast():
            (logits,) = self.net(x, heads=[0])
            return F.cross_entropy(logits.float(), self.data.train.labels[indices])

    @torch.inference_mode()
    def evaluate(self, split: str = "test", batch_size: int = 1000) -> dict[str, float]:
        """Primary-task loss, accuracy and macro precision/recall/F1 on a split."""
        data = self.data.split(split)
        confusion = torch.zeros(
            self.num_primary, self.num_primary, dtype=torch.long, device=self.device
        )
        loss_sum = torch.zeros((), device=self.device)
        for start in range(0, len(data), batch_size):
            x = self.prepare_inputs(data.images[start : start + batch_size], train=False)
            y = data.labels[start : start + batch_size]
            with eval_mode(self.net), self.autocast():
                (logits,) = self.net(x, heads=[0])
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            confusion += confusion_matrix(logits.argmax(dim=1), y, self.num_primary)
        metrics = classification_metrics(confusion)
        metrics["loss"] = float(loss_sum) / len(data)
        return metrics

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> dict[str, Any]:
        """A deep copy of network, optimiser, scheduler and epoch: the canonical model."""
        state = snapshot_state(net=self.net, optimizer=self.optimizer, scheduler=self.scheduler)
        return {**state, "epoch": self.epoch, "version": self.version}

    def state_dict(self) -> dict[str, Any]:
        """A checkpoint of the run: the :meth:`snapshot` plus the data order and cursor."""
        return {
            **self.snapshot(),
            "generator": self.generator.get_state(),
            "order": self.order,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restore(state)
        self.generator.set_state(state["generator"])
        self.order = state["order"].to(self.device)
        self.position = state["position"]

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Return exactly to a :meth:`snapshot` (the data-order generator keeps running)."""
        restore_state(snapshot, net=self.net, optimizer=self.optimizer, scheduler=self.scheduler)
        self.epoch = snapshot["epoch"]
        self.version = snapshot.get("version") or uuid.uuid4().hex
