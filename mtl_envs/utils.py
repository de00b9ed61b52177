"""Small helpers shared by every layer: registries, configs, devices, paths, files."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from mtl_envs.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a device is resolved: `import mtl_envs` is light
    import torch

T = TypeVar("T")
ConfigT = TypeVar("ConfigT")

DATA_ENV_VAR = "MTL_ENVS_DATA"


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def lookup(registry: Mapping[str, T], name: str, *, kind: str) -> T:
    """Fetch ``name`` from an explicit registry dict or raise a helpful ``KeyError``.

    Args:
        registry: the registry (name -> object).
        name: the requested name.
        kind: what the registry holds, used in the message (``"dataset"``, ``"backbone"``).
    """
    try:
        return registry[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(registry))
        raise ConfigError(
            f"Unknown {kind} {name!r}.{suggest(name, registry)} Valid {kind}s: {valid}."
        ) from None


def check_choice(argument: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` naming ``argument`` when ``value`` is not one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        hint = suggest(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        raise ConfigError(f"`{argument}` must be one of {choices}; got {value!r}.{hint}")


def check_options(options: Any, valid: Iterable[str]) -> dict[str, Any]:
    """The ``reset(options=...)`` mapping as a dict; a key the env does not read is an error
    (a misspelt ``"Mode"`` must not quietly run the default)."""
    if options is None:
        return {}
    valid = list(valid)
    if not isinstance(options, Mapping):
        raise ConfigError(f"`options` must be a dict with keys from {valid}; got {options!r}.")
    for key in options:
        if key not in valid:
            hint = suggest(key, valid) if isinstance(key, str) else ""
            allowed = f"valid keys: {valid}" if valid else "this env reads no options"
            raise ConfigError(f"Unknown reset option {key!r} ({allowed}).{hint}")
    return dict(options)


def describe_array(values: np.ndarray) -> str:
    """Shape, dtype and range of an array, for an error about it."""
    text = f"shape {values.shape}, dtype {values.dtype}"
    if values.size and values.dtype.kind in "biuf":
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if finite.size:
            text += f", values in [{finite.min()}, {finite.max()}]"
        if finite.size < values.size:
            text += f", {values.size - finite.size} non-finite"
    return text


def is_int(value: Any) -> bool:
    """An integer (Python's or NumPy's), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def holds_bool(value: Any) -> bool:
    """Whether ``value`` is a bool or holds one at any depth of lists, tuples and arrays:
    ``np.asarray([True, 3])`` would turn the bool into the label 1 without a trace."""
    if isinstance(value, (bool, np.bool_)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "b" or (
            value.dtype == object and any(holds_bool(v) for v in value.flat)
        )
    if isinstance(value, (list, tuple)):
        return any(holds_bool(v) for v in value)
    return False


def check_int(argument: str, value: Any, *, minimum: int = 1, optional: bool = False) -> None:
    """Raise ``ConfigError`` naming ``argument`` unless ``value`` is an int >= ``minimum``
    (or ``None`` when ``optional``); bools are not ints here."""
    if optional and value is None:
        return
    if not is_int(value) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ConfigError(
            f"`{argument}` must be {kind}{' or None' if optional else ''}; got {value!r}."
        )


def check_bool(argument: str, value: Any, *, optional: bool = False) -> None:
    """Raise ``ConfigError`` naming ``argument`` unless ``value`` is True or False (or
    ``None`` when ``optional``): a quoted ``"false"`` or a ``0`` would otherwise read as a
    truth value, the string as True."""
    if optional and value is None:
        return
    if not isinstance(value, (bool, np.bool_)):
        choices = "True, False or None" if optional else "True or False"
        raise ConfigError(f"`{argument}` must be {choices}; got {value!r}.")


def check_field_types(instance: Any) -> None:
    """Check every field of the dataclass ``instance`` against its annotation, so a wrong
    type is a ``ConfigError`` naming the field instead of an error deep inside a run (or a
    bool silently read as a number): :func:`check_bool` on ``bool`` fields, ints (not bools)
    for ``int``, finite real numbers (not bools) for ``float`` (``float | int`` too),
    strings or paths for ``str``, and mappings for ``dict[...]`` (keyword arguments passed
    on to a dataset or a model); ``... | None`` also allows None. Value ranges are the
    config's own checks."""
    for item in dataclasses.fields(instance):
        kind = str(item.type).replace(" ", "").replace("Optional[", "").rstrip("]")
        value = getattr(instance, item.name)
        optional = kind.endswith("|None") or str(item.type).startswith("Optional[")
        base = kind.removesuffix("|None")
        if optional and value is None:
            continue
        if base == "bool":
            check_bool(item.name, value, optional=optional)
        elif base == "int" and not is_int(value):
            raise ConfigError(f"`{item.name}` must be an int{_or_none(optional)}; got {value!r}.")
        elif base in ("float", "float|int") and not is_finite_number(value):
            raise ConfigError(
                f"`{item.name}` must be a finite number{_or_none(optional)}; got {value!r}."
            )
        elif base == "str" and not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"`{item.name}` must be a string{_or_none(optional)}; got {value!r}.")
        elif base.startswith("dict[") and not isinstance(value, Mapping):
            raise ConfigError(f"`{item.name}` must be a mapping of keys to values; got {value!r}.")


def _or_none(optional: bool) -> str:
    return " or None" if optional else ""


def check_widths(argument: str, value: Any, *, allow_empty: bool = True) -> list[int]:
    """``value`` as a list of layer widths, or ``ConfigError`` naming ``argument`` unless it
    is a list (or tuple) of positive ints (non-empty unless ``allow_empty``)."""
    ok = isinstance(value, (list, tuple)) and all(is_int(w) and w >= 1 for w in value)
    if not ok or (not value and not allow_empty):
        kind = "a list of positive ints" + ("" if allow_empty else ", not empty")
        raise ConfigError(f"`{argument}` must be {kind} (layer widths); got {value!r}.")
    return [int(w) for w in value]


def is_finite_number(value: Any) -> bool:
    """A finite real number (Python's or NumPy's), not a bool."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


def check_number(argument: str, value: Any, *, minimum: float = 0.0, strict: bool = False) -> None:
    """Raise ``ConfigError`` naming ``argument`` unless ``value`` is a finite real number
    >= ``minimum`` (> ``minimum`` when ``strict``). NaN and infinities are refused: they would
    pass a plain ``value < minimum`` test and silently train on garbage."""
    if not is_finite_number(value) or value < minimum or (strict and value == minimum):
        if minimum == 0:
            kind = "a positive finite number" if strict else "a non-negative finite number"
        else:
            kind = f"a finite number {'>' if strict else '>='} {minimum:g}"
        raise ConfigError(f"`{argument}` must be {kind}; got {value!r}.")


def check_exponent_range(argument: str, value: Any) -> tuple[float, float]:
    """``value`` as ``(low, high)`` floats, or ``ConfigError`` naming ``argument`` unless it
    is a pair of finite numbers with low < high (RL-AUX eq. 8's exponents: reversed, the
    weight bins would map the other way round)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(is_finite_number(v) for v in pair) or pair[0] >= pair[1]:
        raise ConfigError(
            f"`{argument}` must be (low, high), finite numbers with low < high; got {value!r}."
        )
    return float(pair[0]), float(pair[1])


def float_array(argument: str, value: Any) -> np.ndarray:
    """``value`` as a float32 array, or ``ConfigError`` naming ``argument`` when it holds
    something that is not a number (a string, None); bools are not numbers here."""
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "iuf":
            raise TypeError(array.dtype)
        return array.astype(np.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"`{argument}` must be numbers; got {value!r}.") from None


def is_seed(value: Any) -> bool:
    """Whether ``value`` is a valid seed: an int >= 0 (not a bool), as Gymnasium requires."""
    return is_int(value) and value >= 0


def check_seeds(argument: str, seeds: Any) -> list[int]:
    """``seeds`` as a list of ints, or ``ConfigError`` unless it is a non-empty sequence (or
    1-d array) of distinct seeds (a repeated seed would count one run twice in every mean and
    interval)."""
    ordered = isinstance(seeds, (Sequence, np.ndarray)) and not isinstance(seeds, (str, bytes))
    values = list(seeds) if ordered and np.ndim(seeds) == 1 else None
    if not values or not all(is_seed(s) for s in values) or len(set(values)) != len(values):
        raise ConfigError(
            f"`{argument}` must be a non-empty list of distinct ints >= 0; got {seeds!r}."
        )
    return [int(s) for s in values]


def check_kwargs(
    argument: str, kwargs: Mapping[str, Any], target: Any, *, owner: str, fixed: Iterable[str] = ()
) -> None:
    """Raise ``ConfigError`` for a key of ``kwargs`` that ``target`` (a function or class) does
    not take, listing the keys it does; ``fixed`` are the parameters the caller sets itself.
    Checked up front, so that a ``TypeError`` from inside ``target`` stays a bug's traceback."""
    params = list(inspect.signature(target).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    valid = [p.name for p in params if p.kind in keyword and p.name not in set(fixed)]
    for key in kwargs:
        if key not in valid:
            raise ConfigError(
                f"Unknown key {key!r} in `{argument}` for {owner}.{suggest(str(key), valid)} "
                f"Valid keys: {valid}."
            )


def config_from_dict(cls: type[ConfigT], values: Mapping[str, Any]) -> ConfigT:
    """Build the dataclass ``cls`` from ``values``; unknown keys raise with a suggestion."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in values:
        if key not in names:
            raise ConfigError(
                f"Unknown {cls.__name__} key {key!r}.{suggest(key, names)} "
                f"Valid keys: {', '.join(names)}."
            )
    return cls(**values)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when it is available, else the CPU."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"`device` must be 'auto', 'cpu' or 'cuda[:N]'; got {device!r}.") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"`device` is {device!r} but CUDA is not available; use 'auto' or 'cpu'.")
    return resolved


def default_data_root() -> Path:
    """``$MTL_ENVS_DATA`` if set, else ``$XDG_CACHE_HOME/mtl_envs`` (``~/.cache/mtl_envs``)."""
    if os.environ.get(DATA_ENV_VAR):
        return Path(os.environ[DATA_ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mtl_envs"


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    return default_data_root() if data_root is None else Path(data_root).expanduser()


def seed_from(rng: Any) -> int:
    """Draw a 63-bit seed for a torch generator from a numpy ``Generator``."""
    return int(rng.integers(0, 2**63 - 1))


def sub_seed(seed: int, stream: int) -> int:
    """A seed for the run's ``stream``-th random stream apart from its main one, from
    ``SeedSequence([seed, stream])``: unlike ``seed + stream``, it never equals another run's
    seed, so no stream of run ``s`` replays one of run ``s + 1``."""
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0])


def split_kwargs(
    kwargs: dict[str, Any],
    own: Iterable[str],
    config_cls: type[ConfigT],
    owner: str,
    config_defaults: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], ConfigT]:
    """Split flat constructor kwargs into ``own`` arguments and a ``config_cls`` instance.

    Envs take their own arguments and their learner's config fields side by side (so
    ``gym.make`` can override any of them); an unknown key raises a ``TypeError`` naming
    ``owner`` and suggesting the closest valid argument.
    """
    own = list(own)
    fields = [f.name for f in dataclasses.fields(config_cls)]  # type: ignore[arg-type]
    valid = own + fields
    for key in kwargs:
        if key not in valid:
            hint = (
                " It is an argument of the native vector form (vectorization_mode="
                "'vector_entry_point'); 'sync' and 'async' take it as "
                "vector_kwargs={'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP}."
                if key == "autoreset_mode"
                else suggest(key, valid)
            )
            raise ConfigError(
                f"Unknown {owner} argument {key!r}.{hint} Valid arguments: {', '.join(valid)}."
            )
    config_kwargs = {**(config_defaults or {}), **{k: v for k, v in kwargs.items() if k in fields}}
    return {k: v for k, v in kwargs.items() if k in own}, config_cls(**config_kwargs)
