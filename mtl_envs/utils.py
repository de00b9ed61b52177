"""Small helpers shared by every layer: registries, configs, devices, paths, files."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

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
        raise KeyError(
            f"Unknown {kind} {name!r}.{suggest(name, registry)} Valid {kind}s: {valid}."
        ) from None


def check_choice(argument: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` naming ``argument`` when ``value`` is not one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        hint = suggest(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        raise ValueError(f"`{argument}` must be one of {choices}; got {value!r}.{hint}")


def config_from_dict(cls: type[ConfigT], values: Mapping[str, Any]) -> ConfigT:
    """Build the dataclass ``cls`` from ``values``; unknown keys raise with a suggestion."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in values:
        if key not in names:
            raise TypeError(
                f"Unknown {cls.__name__} key {key!r}.{suggest(key, names)} "
                f"Valid keys: {', '.join(names)}."
            )
    return cls(**values)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when it is available, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"`device` must be 'auto', 'cpu' or 'cuda[:N]'; got {device!r}.") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` is {device!r} but CUDA is not available; use 'auto' or 'cpu'.")
    return resolved


def default_data_root() -> Path:
    """``$MTL_ENVS_DATA`` if set, else ``$XDG_CACHE_HOME/mtl_envs`` (``~/.cache/mtl_envs``)."""
    if os.environ.get(DATA_ENV_VAR):
        return Path(os.environ[DATA_ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mtl_envs"


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    return default_data_root() if data_root is None else Path(data_root).expanduser()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    return atomic_write_text(
        path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    )


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a truncated or corrupt one is an error that names it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{str(path)!r} is not valid JSON (truncated or corrupt: {err}); delete it to "
            "recompute it."
        ) from err


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint onto the CPU without running code from the file.

    ``torch.load(..., weights_only=True)`` rebuilds only tensors and plain data (numbers,
    strings, ``None``, lists, tuples, dicts); a pickled object of any other kind could run
    code while it is unpickled, so a file holding one (a crafted file, or a checkpoint of an
    older version that pickled objects) is refused instead.

    Raises:
        ValueError: ``path`` is truncated or corrupt, or holds objects other than tensors and
            plain data; the message names the file.
    """
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower() or "WeightsUnpickler" in str(err):
            raise ValueError(
                f"Checkpoint {str(path)!r} holds objects other than tensors and plain data "
                f"({_weights_only_reason(err)}); it is not loaded because loading it could run "
                "code. Delete it to start the run over."
            ) from err
        raise _corrupt_checkpoint(path, err) from err
    except (RuntimeError, EOFError, KeyError, ValueError) as err:
        # A file cut short or overwritten: torch's zip reader raises RuntimeError, its legacy
        # (pre-zip) reader whatever the stray bytes make the unpickler do.
        raise _corrupt_checkpoint(path, err) from err


def _corrupt_checkpoint(path: str | os.PathLike, err: BaseException) -> ValueError:
    return ValueError(
        f"Checkpoint {str(path)!r} is unreadable (truncated or corrupt: {err}); delete it "
        "to start the run over."
    )


def _weights_only_reason(err: BaseException) -> str:
    """The line of torch's long weights-only message that says what it refused."""
    message = str(err)
    _, marker, rest = message.partition("WeightsUnpickler error:")
    reason = rest.strip().split("\n")[0].split(". ")[0].strip() if marker else ""
    return reason or "refused by torch's weights-only unpickler"


def seed_from(rng: Any) -> int:
    """Draw a 63-bit seed for a torch generator from a numpy ``Generator``."""
    return int(rng.integers(0, 2**63 - 1))


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
            raise TypeError(
                f"Unknown {owner} argument {key!r}.{suggest(key, valid)} "
                f"Valid arguments: {', '.join(valid)}."
            )
    config_kwargs = {**(config_defaults or {}), **{k: v for k, v in kwargs.items() if k in fields}}
    return {k: v for k, v in kwargs.items() if k in own}, config_cls(**config_kwargs)
