"""Tabular multi-task baselines under the Multi-Task Hypernetwork paper's protocol.

``000_6f85eb44aaf9e6f8.txt``, section 4: random batches of 64, the learning rate picked from
{1e-3, 10^-3.5, 1e-4, 10^-4.5} on validation, early stopping on validation, each model a stack
of three ReLU layers of 32. The paper names no optimiser (section 3.1: "any gradient
optimizer"); Adam without weight decay is taken from the authors' reference code
(OGraffeuille/Multi-Task-Hypernetworks, ``optim.Adam`` with its defaults). Every method
trains the LossWeighting env's :class:`MultiTaskLearner` with a task network (``model=...``),
so the env could train the same network:

* ``hypernet``: the Multi-Task Hypernetwork; the extractor depth l_h in {0, 1, 2} is tuned too;
* ``hard_sharing``: shared trunk, one output layer per task;
* ``cross_stitch``: one network per task, hidden layers mixed across tasks by cross-stitch units
  (Misra et al., 2016), one of the paper's soft-sharing baselines;
* ``sluice``: sluice networks (Ruder et al., 2019): cross-stitch units over two subspaces per
  layer, a learned mixture of each column's layers, orthogonal subspaces; another of them;
* ``dmtrl``: one network per task with every layer's weights factorised across tasks (Yang and
  Hospedales, 2017), a third; the factorisation (Tucker or tensor train) and its rank
  {2, 4, 8, 16} are tuned with the learning rate, as the authors' reference code tunes them
  (32 fits per seed and setting);
* ``mrn``: multilinear relationship networks (Long et al., 2017), hard sharing whose output
  layers carry a tensor-normal prior with task and feature covariances re-estimated each
  epoch, a fourth; the prior's weight {1e-2, 1e-3, 1e-4, 1e-5, 0} and the feature
  covariance's step 1/k, k in {1, 0.1, 0.01}, are tuned with the learning rate, as the
  reference code tunes them (52 fits per seed and setting: at weight 0 the prior, and k
  with it, has no effect, so that weight is fitted once, not once per k);
* ``maxroam``: maximum roaming (Pascal et al., 2021), a widened shared trunk of which each task
  uses a roaming partition of the units, a fifth; the share of units per partition
  {0.25, 0.5, 0.75} and the update period {1, 10} epochs are tuned with the learning rate
  (24 fits per seed and setting). The reference code publishes the network and its update
  but neither its grid nor the loop that calls the update: this grid is the package's own;
* ``stl_naive``: one network, no task information;
* ``stl_task_info``: one network given the task (the paper's "STL": metadata appended to the
  inputs, or a one-hot task code without metadata);
* ``stl`` with ``method_kwargs: {protocol: tabular}``: an independent network per task.

Each method runs in the settings it has: with metadata (``setting: metadata``; metadata is
appended to the inputs for the baselines, fed to the hypernetwork beside the embeddings) and
without (``setting: no_metadata``). ``method_kwargs``: ``metadata`` (true, false or both,
default both), ``learning_rates``, ``extractor_layers``, ``factorisations``, ``ranks``,
``prior_weights``, ``feature_ks``, ``sharing_ratios``, ``update_periods``, ``batch_size``,
``max_epochs``,
``val_every``, ``patience``, ``num_threads`` (torch threads, default 1: these networks are too
small to gain from more). The split (and the synthetic data) is drawn from the seed.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch

import mtl_envs  # noqa: F401  (registers the ids)
from harness.config import RunConfig
from harness.lifecycle import finished_result
from harness.recording import TensorBoardLog
from harness.registry import method_options
from harness.results import run_dir, write_result
from mtl_envs.data.multitask import load_multitask_dataset
from mtl_envs.errors import ConfigError
from mtl_envs.families import require_family
from mtl_envs.models.task_networks import FACTORISATIONS
from mtl_envs.training.model_selection import PAPER_LEARNING_RATES, EarlyStopping, grid_search
from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig
from mtl_envs.utils import is_finite_number, is_int

# The reference code's grid for MRN (OGraffeuille/Multi-Task-Hypernetworks).
MRN_PRIOR_WEIGHTS = (1e-2, 1e-3, 1e-4, 1e-5, 0.0)
MRN_FEATURE_KS = (1.0, 0.1, 0.01)
# MaxRoam's: the package's own (see the module's docstring).
MAXROAM_SHARING_RATIOS = (0.25, 0.5, 0.75)
MAXROAM_UPDATE_PERIODS = (1, 10)

TABULAR_METHODS = {
    # method: (task network, settings it can use)
    "hypernet": ("hypernet", ("no_metadata", "metadata")),
    "hard_sharing": ("hard_sharing", ("no_metadata", "metadata")),
    "cross_stitch": ("cross_stitch", ("no_metadata", "metadata")),
    "sluice": ("sluice", ("no_metadata", "metadata")),
    "dmtrl": ("dmtrl", ("no_metadata", "metadata")),
    "mrn": ("mrn", ("no_metadata", "metadata")),
    "maxroam": ("maxroam", ("no_metadata", "metadata")),
    "stl_naive": ("stl_naive", ("no_metadata",)),
    "stl_task_info": ("stl_task_info", ("no_metadata", "metadata")),
    "stl": ("per_task", ("no_metadata",)),
}


def uses_tabular_protocol(config: RunConfig) -> bool:
    """Whether ``method_kwargs`` asks ``stl`` for the hypernetwork paper's protocol; options
    of that protocol without ``protocol: tabular`` are an error, not silently ignored."""
    options = method_options(config, "stl")
    protocol = options.get("protocol")
    if protocol not in (None, "tabular"):
        raise ConfigError(f"`method_kwargs.protocol` must be 'tabular'; got {protocol!r}.")
    if protocol is None and options:
        raise ConfigError(
            f"`method_kwargs` {sorted(options)} are options of the tabular protocol; `stl` "
            "follows it only with `protocol: tabular` (without it, it trains one network per "
            "task under the env's own schedule)."
        )
    return protocol == "tabular"


def _options(config: RunConfig, method: str) -> dict[str, Any]:
    options = method_options(config, method)
    protocol = options.get("protocol", "tabular")
    if protocol != "tabular":
        raise ConfigError(f"`method_kwargs.protocol` must be 'tabular'; got {protocol!r}.")
    return options


def _settings(method: str, options: dict[str, Any]) -> list[str]:
    available = TABULAR_METHODS[method][1]
    wanted = options.get("metadata", "both")
    if wanted == "both":
        return list(available)
    if not isinstance(wanted, bool):
        raise ConfigError(
            f"`method_kwargs.metadata` must be true, false or 'both'; got {wanted!r}."
        )
    setting = "metadata" if wanted else "no_metadata"
    if setting not in available:
        raise ConfigError(f"{method} cannot use task metadata; run it with metadata=false.")
    return [setting]


def _grid(method: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    lrs = options.get("learning_rates", PAPER_LEARNING_RATES)
    if not _nonempty_list(lrs) or not all(is_finite_number(v) and v > 0 for v in lrs):
        raise ConfigError(
            f"`method_kwargs.learning_rates` must be a list of positive finite numbers; "
            f"got {lrs!r}."
        )
    if method == "hypernet":
        depths = options.get("extractor_layers", (0, 1, 2))
        if not _nonempty_list(depths) or not all(is_int(d) and d >= 0 for d in depths):
            raise ConfigError(
                f"`method_kwargs.extractor_layers` must be a list of ints >= 0 (hidden layers "
                f"of the hypernetwork's feature extractor); got {depths!r}."
            )
        pairs = itertools.product(lrs, depths)
        return [{"lr": float(lr), "extractor_layers": int(d)} for lr, d in pairs]
    if method == "dmtrl":
        kinds = options.get("factorisations", FACTORISATIONS)
        if not _nonempty_list(kinds) or not all(k in FACTORISATIONS for k in kinds):
            raise ConfigError(
                f"`method_kwargs.factorisations` must be a list of {list(FACTORISATIONS)}; "
                f"got {kinds!r}."
            )
        ranks = options.get("ranks", (2, 4, 8, 16))
        if not _nonempty_list(ranks) or not all(is_int(r) and r >= 1 for r in ranks):
            raise ConfigError(
                f"`method_kwargs.ranks` must be a list of positive ints (DMTRL's factor "
                f"ranks); got {ranks!r}."
            )
        triples = itertools.product(lrs, kinds, ranks)
        return [{"lr": float(lr), "factorisation": k, "rank": int(r)} for lr, k, r in triples]
    if method == "mrn":
        weights = options.get("prior_weights", MRN_PRIOR_WEIGHTS)
        if not _nonempty_list(weights) or not all(is_finite_number(w) and w >= 0 for w in weights):
            raise ConfigError(
                f"`method_kwargs.prior_weights` must be a list of non-negative finite numbers "
                f"(the weight of MRN's prior); got {weights!r}."
            )
        ks = options.get("feature_ks", MRN_FEATURE_KS)
        if not _nonempty_list(ks) or not all(is_finite_number(k) and k > 0 for k in ks):
            raise ConfigError(
                f"`method_kwargs.feature_ks` must be a list of positive finite numbers (MRN's "
                f"feature covariance step is 1/k); got {ks!r}."
            )
        points = []
        for lr, weight in itertools.product(lrs, weights):
            # Without the prior, k changes nothing: one fit, not one per k.
            for k in ks if weight else ks[:1]:
                points.append(
                    {"lr": float(lr), "prior_weight": float(weight), "feature_k": float(k)}
                )
        return points
    if method == "maxroam":
        ratios = options.get("sharing_ratios", MAXROAM_SHARING_RATIOS)
        if not _nonempty_list(ratios) or not all(
            is_finite_number(r) and 0 < r <= 1 for r in ratios
        ):
            raise ConfigError(
                f"`method_kwargs.sharing_ratios` must be a list of numbers in (0, 1] (the "
                f"share of a layer's units each task uses); got {ratios!r}."
            )
        periods = options.get("update_periods", MAXROAM_UPDATE_PERIODS)
        if not _nonempty_list(periods) or not all(is_int(p) and p >= 1 for p in periods):
            raise ConfigError(
                f"`method_kwargs.update_periods` must be a list of positive ints (epochs "
                f"between MaxRoam's partition updates); got {periods!r}."
            )
        triples = itertools.product(lrs, ratios, periods)
        return [
            {"lr": float(lr), "sharing_ratio": float(r), "update_every": int(p)}
            for lr, r, p in triples
        ]
    return [{"lr": float(lr)} for lr in lrs]


def _nonempty_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_tabular(config: RunConfig, seed: int, method: str) -> dict[str, Any]:
    """Grid search + early stopping per setting; one result per setting; returns the last."""
    family = require_family(config.env_id, "LossWeighting")
    options = _options(config, method)
    model, _ = TABULAR_METHODS[method]
    base = family.learner_config(config.env_id, config.env_kwargs)
    stopping = EarlyStopping(
        val_every=options.get("val_every", 5),
        patience=options.get("patience", 20),
        max_epochs=options.get("max_epochs", 2000),
    )
    with _torch_threads(int(options.get("num_threads", 1))):
        data = load_multitask_dataset(
            base.dataset,
            base.data_root,
            download=base.download,
            device=base.device,
            split_seed=seed,
            options=base.dataset_kwargs,
        )
        if data.task_type != "regression" or not data.one_task_per_sample:
            raise ConfigError(
                f"{method} needs a tabular regression dataset (one task per sample); "
                f"{data.name!r} is not one."
            )
        result: dict[str, Any] = {}
        for setting in _settings(method, options):
            if setting == "metadata" and data.task_metadata is None:
                raise ConfigError(f"Dataset {data.name!r} has no task metadata.")
            finished = finished_result(config, method, seed, setting)
            if finished is not None:  # not redone
                result = finished
                continue
            result = _run_setting(
                config, seed, method, model, setting, base, data, options, stopping
            )
    return result


def tabular_learner_config(
    base: MultiTaskLearnerConfig,
    model: str,
    setting: str,
    point: Mapping[str, Any],
    options: Mapping[str, Any],
    seed: int,
) -> MultiTaskLearnerConfig:
    """The learner config of one grid point: the env's config (``base``) with the paper's
    optimisation (section 4: the point's constant learning rate, random batches of 64; the
    plain sum of task losses) and the point's extractor depth. Adam with no weight decay is
    the authors' reference code (OGraffeuille/Multi-Task-Hypernetworks); the paper names no
    optimiser (section 3.1: "any gradient optimizer"). The point's other keys (the
    extractor depth, DMTRL's factorisation and rank) are the network's options.
    The env's StepLR halving is switched off (``scheduler_gamma`` 1): the paper's grid is of
    fixed rates, and a halving every 100 epochs would starve the smaller rates' long fits."""
    model_kwargs = dict(base.model_kwargs)
    model_kwargs.update({k: v for k, v in point.items() if k != "lr"})
    return base.__class__(
        **{
            **base.to_dict(),
            "model": model,
            "model_kwargs": model_kwargs,
            "use_metadata": setting == "metadata",
            "optimizer": "adam",
            "lr": point["lr"],
            "weight_decay": 0.0,
            "scheduler_gamma": 1.0,
            "batch_size": int(options.get("batch_size", 64)),
            "batching": "uniform",
            "loss": "sum",
            "aggregator": None,
            "split_seed": seed,
        }
    )


def _run_setting(config, seed, method, model, setting, base, data, options, stopping):
    from tqdm.auto import tqdm

    start = time.perf_counter()
    grid = _grid(method, options)

    def make_learner(point: dict[str, Any]) -> MultiTaskLearner:
        learner_config = tabular_learner_config(base, model, setting, point, options, seed)
        return MultiTaskLearner(learner_config, seed=seed, dataset=data)

    out = run_dir(config, method, seed, setting)
    tb = TensorBoardLog(out / "tb" if config.tensorboard else None)
    bar = tqdm(total=len(grid), desc=f"{method} {setting} seed {seed}", disable=not config.progress)

    def on_fit(point: dict[str, Any], summary: dict[str, Any]) -> None:
        tag = "_".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items()
        )
        for epoch, value in summary["curve"]:
            tb.scalars({f"val_mse/{tag}": value}, epoch)
        bar.update(1)

    def record(learner: MultiTaskLearner) -> dict[str, float]:
        # Every fit's test error, for a selection across seeds made afterwards
        # (`harness.paper_tables`); the per-seed selection below reads validation only.
        return {f"test/{k}": v for k, v in learner.evaluate("test").items() if "/" not in k}

    try:
        learner, chosen, fits = grid_search(make_learner, grid, stopping, on_fit, record)
    finally:
        bar.close()
        tb.close()
    metrics: dict[str, float] = {}
    for split in ("val", "test"):
        metrics.update({f"{split}/{k}": v for k, v in learner.evaluate(split).items()})
    parameters = sum(p.numel() for p in learner.net.parameters())
    return write_result(
        config,
        method,
        seed,
        metrics,
        setting=setting,
        wall_time_s=time.perf_counter() - start,
        extra={"selected": chosen, "fits": fits, "parameters": parameters, "model": model},
    )


def run_hypernet(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_tabular(config, seed, "hypernet")


def run_hard_sharing(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_tabular(config, seed, "hard_sharing")


def run_cross_stitch(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_tabular(config, seed, "cross_stitch")


def run_sluice(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_tabular(config, seed, "sluice")


def run_dmtrl(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_tabular(config, seed, "dmtrl")


def run_mrn(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_tabular(config, seed, "mrn")


def run_maxroam(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_tabular(config, seed, "maxroam")


def run_stl_naive(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_tabular(config, seed, "stl_naive")


def run_stl_task_info(config: RunConfig, seed: int) -> dict[str, Any]:
    return run_tabular(config, seed, "stl_task_info")
