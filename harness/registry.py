"""The one method registry: (env family, method name) -> the ``run(config, seed)`` that
trains it and writes its result.

A shared name means one thing per family: ``stl`` is the primary task alone on AuxLabel ids
and one network per task on LossWeighting ids; ``random`` labels images randomly on AuxLabel
ids and picks random groups on TaskGrouping ids; ``ppo`` is RL-AUX's alternating protocol on
AuxLabel ids and group selection on TaskGrouping ids. Adding a method is one file with a
``run(config, seed)`` function plus one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from harness.config import RunConfig
from mtl_envs.errors import ConfigError
from mtl_envs.families import family_of
from mtl_envs.utils import is_finite_number, is_int, suggest

Runner = Callable[[RunConfig, int], dict[str, Any]]

METHODS: dict[tuple[str, str], str] = {
    # Auxiliary learning (RL-AUX): the agent, and baselines on the same AuxLearner.
    ("AuxLabel", "ppo"): "agents.ppo_auxlabel:run",
    ("AuxLabel", "stl"): "baselines.stl:run_primary_only",
    ("AuxLabel", "human"): "baselines.human:run",
    ("AuxLabel", "random"): "baselines.random_labels:run",
    ("AuxLabel", "maxl"): "baselines.maxl:run",
    ("AuxLabel", "wa_maxl"): "baselines.maxl:run_weight_aware",
    # Loss weighting (IGB): the agent, STL (the Δm reference), weighting rules on the same
    # MultiTaskLearner, and the hypernetwork paper's tabular protocol.
    ("LossWeighting", "igbv2"): "agents.sac_lossweighting:run",
    ("LossWeighting", "stl"): "baselines.stl:run_per_task",
    ("LossWeighting", "ew"): "baselines.ew:run",
    ("LossWeighting", "si"): "baselines.si:run",
    ("LossWeighting", "uw"): "baselines.uw:run",
    ("LossWeighting", "rlw"): "baselines.rlw:run",
    ("LossWeighting", "dwa"): "baselines.dwa:run",
    ("LossWeighting", "rlw_si"): "baselines.rlw:run_si",
    ("LossWeighting", "dwa_si"): "baselines.dwa:run_si",
    ("LossWeighting", "igbv1"): "baselines.igbv1:run",
    ("LossWeighting", "hypernet"): "baselines.tabular:run_hypernet",
    ("LossWeighting", "hard_sharing"): "baselines.tabular:run_hard_sharing",
    ("LossWeighting", "cross_stitch"): "baselines.tabular:run_cross_stitch",
    ("LossWeighting", "sluice"): "baselines.tabular:run_sluice",
    ("LossWeighting", "dmtrl"): "baselines.tabular:run_dmtrl",
    ("LossWeighting", "mrn"): "baselines.tabular:run_mrn",
    ("LossWeighting", "maxroam"): "baselines.tabular:run_maxroam",
    ("LossWeighting", "stl_naive"): "baselines.tabular:run_stl_naive",
    ("LossWeighting", "stl_task_info"): "baselines.tabular:run_stl_task_info",
    # Task grouping (ETAP): the agent, predictors + exact selection, references.
    ("TaskGrouping", "ppo"): "agents.ppo_grouping:run",
    ("TaskGrouping", "etap"): "baselines.etap:run",
    ("TaskGrouping", "tag"): "baselines.tag:run",
    ("TaskGrouping", "random"): "baselines.random_groups:run",
    ("TaskGrouping", "optimal"): "baselines.optimal:run",
}

# Methods that read test data whatever their settings: their results say `"oracle": true`, and
# every list of methods labels them.
ORACLES = {("TaskGrouping", "optimal")}


# The `method_kwargs` keys each method reads (its runner checks their values). A run config's
# `method_kwargs` are shared by all its methods (an IGBv2 schedule beside the baselines it is
# compared with), so a key is refused only when none of the run's methods reads it: a typo,
# or a grid option (MRN's `prior_weights`) given to a run of methods that have no such grid.
# The tabular protocol's options, which all of its methods read, then each method's own grid.
TABULAR_OPTIONS = (
    "protocol",
    "metadata",
    "learning_rates",
    "batch_size",
    "max_epochs",
    "val_every",
    "patience",
    "num_threads",
)
TABULAR_GRIDS: dict[str, tuple[str, ...]] = {
    "stl": (),
    "hypernet": ("extractor_layers",),
    "hard_sharing": (),
    "cross_stitch": (),
    "sluice": (),
    "dmtrl": ("factorisations", "ranks"),
    "mrn": ("prior_weights", "feature_ks"),
    "maxroam": ("sharing_ratios", "update_periods"),
    "stl_naive": (),
    "stl_task_info": (),
}
MAXL_OPTIONS = (
    "alternation",
    "first_order",
    "lr",
    "weight_decay",
    "entropy_coef",
    "exponent_range",
)
METHOD_OPTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("AuxLabel", "maxl"): MAXL_OPTIONS,
    ("AuxLabel", "wa_maxl"): MAXL_OPTIONS,
    ("LossWeighting", "igbv2"): ("update_epoch", "use_epoch"),
    **{("LossWeighting", m): TABULAR_OPTIONS + grid for m, grid in TABULAR_GRIDS.items()},
    ("TaskGrouping", "ppo"): ("budgets",),
    ("TaskGrouping", "etap"): ("budgets", "etap_train_groups"),
    ("TaskGrouping", "tag"): ("budgets",),
    ("TaskGrouping", "random"): ("budgets",),
    ("TaskGrouping", "optimal"): ("budgets",),
}


# Besides `method_kwargs`, every agent reads the config's `agent` section (its SB3 keyword
# arguments); these also read `policy` (the policy network's options).
POLICY_READERS = {("AuxLabel", "ppo")}


def methods_for(family: str) -> list[str]:
    """The method names registered for a family."""
    return sorted(m for f, m in METHODS if f == family)


def method_names() -> list[str]:
    return sorted({m for _, m in METHODS})


def is_agent(family: str, method: str) -> bool:
    """Whether the method is an RL agent (lives in ``agents/``)."""
    return METHODS[(family, method)].startswith("agents.")


def check_method(env_id: str, method: str) -> tuple[str, str]:
    """The registry key of ``method`` on ``env_id``'s family, or ``ConfigError`` naming the
    valid ones; imports nothing, so a sweep can check its whole grid before it starts."""
    family = family_of(env_id).name
    if not isinstance(method, str):
        raise ConfigError(f"A method must be a name (a string); got {method!r}.")
    key = (family, method)
    if key not in METHODS:
        valid = methods_for(family)
        default = (
            " (`method` defaults to 'ppo', RL-AUX's agent on AuxLabel ids: set it)"
            if method == RunConfig.method
            else ""
        )
        raise ConfigError(
            f"Unknown method {method!r} for {family} ids{default}.{suggest(str(method), valid)} "
            f"Valid methods for {env_id}: {', '.join(valid)}."
        )
    return key


def check_method_kwargs(env_id: str, methods: list[str], method_kwargs: dict[str, Any]) -> None:
    """``ConfigError`` for a ``method_kwargs`` key that none of ``methods`` reads."""
    family = family_of(env_id).name
    read = sorted({key for m in methods for key in METHOD_OPTIONS.get((family, m), ())})
    for key in method_kwargs:
        if key not in read:
            raise ConfigError(
                f"Unknown `method_kwargs` key {key!r}: none of the methods {methods} on "
                f"{env_id} reads it.{suggest(str(key), read)} Keys they read: {read}."
            )


def method_options(config: RunConfig, method: str) -> dict[str, Any]:
    """The part of ``config.method_kwargs`` that ``method`` reads. Keys another method of the
    env's family reads are left to it (a config's ``method_kwargs`` are shared by its
    methods); a key no method of the family reads is an error."""
    family = family_of(config.env_id).name
    check_method_kwargs(config.env_id, methods_for(family), config.method_kwargs)
    own = METHOD_OPTIONS.get((family, method), ())
    return {key: value for key, value in config.method_kwargs.items() if key in own}


def agent_methods(env_id: str, methods: Sequence[str]) -> list[str]:
    """The RL agents among ``methods`` on ``env_id``'s family (the others are baselines)."""
    family = family_of(env_id).name
    return [m for m in methods if METHODS[(family, m)].startswith("agents.")]


def same_family(env_id: str, other: Any) -> bool:
    """Whether ``other`` is a registered id of ``env_id``'s family (a method name such as
    ``ppo`` names another method on another family's ids)."""
    try:
        return family_of(env_id).name == family_of(other).name
    except (ConfigError, TypeError):
        return False


def check_agent_sections(config: RunConfig, methods: Sequence[str] | None = None) -> None:
    """``ConfigError`` for ``agent`` or ``policy`` settings that none of ``methods`` (the
    run's own by default) reads: a baseline has no agent, and its run would ignore them
    without a word."""
    family = family_of(config.env_id).name
    methods = list(config.methods if methods is None else methods)
    agents = agent_methods(config.env_id, methods)
    readers = {
        "agent": agents,
        "policy": [m for m in agents if (family, m) in POLICY_READERS],
    }
    for section, section_readers in readers.items():
        keys = sorted(getattr(config, section))
        if keys and not section_readers:
            raise ConfigError(
                f"`{section}` settings {keys} are read by none of the methods "
                f"{methods} on {config.env_id}: only the RL agents read `agent`, and "
                "RL-AUX's PPO `policy`. Remove them, or add an agent to `method`."
            )


def file_methods(path: str, env_id: str) -> list[str]:
    """The methods a config file names before any override, if it names an id of
    ``env_id``'s family (a method name such as ``ppo`` means another method in another
    family); none if the file does not load without its overrides."""
    try:
        written = RunConfig.from_file(path)
    except ConfigError:
        return []
    return written.methods if same_family(env_id, written.env_id) else []


def check_run(config: RunConfig, siblings: Sequence[str] = ()) -> None:
    """Fail before anything trains: every method of ``config`` exists on its env id, every
    ``method_kwargs`` key and ``agent``/``policy`` section is read by one of them, and each
    agent takes its options. ``siblings``: methods of other runs that share the config's
    sections (a sweep's grid), which may read what this run's methods do not."""
    family = family_of(config.env_id)
    for method in config.methods:
        check_method(config.env_id, method)
    # A sibling of another env family (a sweep over several) reads nothing of this run.
    siblings = [m for m in siblings if (family.name, m) in METHODS]
    readers = list(dict.fromkeys([*config.methods, *siblings]))
    check_method_kwargs(config.env_id, readers, config.method_kwargs)
    check_agent_sections(config, readers)
    # Baselines build the env's learner, not the env: its own arguments are checked here.
    kwargs = dict(config.env_kwargs)
    if family.name == "LossWeighting":
        if agent_methods(
            config.env_id, config.methods
        ):  # the env trains `epochs` epochs whatever the id registers, after its warm-up
            kwargs["epochs"] = config.epochs
        else:  # a baseline trains no warm-up: any number of epochs goes with it
            kwargs.pop("epochs", None)
            warmup = kwargs.get("warmup_epochs")
            if is_int(warmup) and warmup >= 0:
                kwargs["epochs"] = warmup + 1
    family.check(config.env_id, kwargs)
    epochs = config.env_kwargs.get("epochs", config.epochs)
    if family.name == "LossWeighting" and epochs != config.epochs:
        raise ConfigError(
            f"`env_kwargs.epochs` ({epochs!r}) differs from `epochs` ({config.epochs}); every "
            "run trains `epochs` epochs: set that one."
        )
    # Every run picks its best epoch on the validation split: an empty one would fail at the
    # first evaluation, after training.
    val_fraction = config.env_kwargs.get("val_fraction")
    if family.name == "AuxLabel" and is_finite_number(val_fraction) and val_fraction == 0:
        raise ConfigError(
            f"`env_kwargs.val_fraction` must be above 0 for a run: its best epoch is picked on "
            f"the validation split (a fraction in (0, 1) or an image count); got {val_fraction!r}."
        )
    for method in config.methods:
        # An agent's module checks its own options (SB3 keyword names, episode budgets).
        module = importlib.import_module(METHODS[check_method(config.env_id, method)].split(":")[0])
        check = getattr(module, "check_config", None)
        if check is not None:
            check(config)


def resolve(env_id: str, method: str) -> Runner:
    """The ``run(config, seed)`` function of ``method`` on ``env_id``'s family."""
    module, attr = METHODS[check_method(env_id, method)].split(":")
    return getattr(importlib.import_module(module), attr)


def run_method(config: RunConfig, method: str, seed: int) -> dict[str, Any]:
    """Run ``method`` on ``config.env_id`` for one seed; returns (and writes) its result."""
    return resolve(config.env_id, method)(config, seed)


def run_quietly(method: str, env_id: str, seed: int = 0, **fields: Any) -> dict[str, Any]:
    """One run of ``method`` with no progress bars, TensorBoard or checkpoints, for
    benchmarks and checks that only want its result; ``fields`` are :class:`RunConfig`'s."""
    config = RunConfig(
        method=method,
        env_id=env_id,
        progress=False,
        tensorboard=False,
        checkpoint_every=0,
        **fields,
    )
    return run_method(config, method, seed)
