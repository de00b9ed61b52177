"""Files and states: atomic writes, reading JSON and checkpoints with errors that name the
file, and the global RNG states a checkpoint keeps.

Every result, table and checkpoint is written to a temporary file beside its target, flushed
and renamed, so no reader ever sees half a file; checkpoints hold only tensors and plain data
and load with ``torch.load(weights_only=True)``, so reading one never runs code. Torch is
imported where a checkpoint is touched, so tools that read only JSON results (``mtl-envs
compare``, ``list``, ``--help``) start without it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtl_envs.errors import ConfigError


def atomic_save(path: str | os.PathLike, save: Callable[[Path], Any]) -> Path:
    """Call ``save(tmp)`` on a fresh, uniquely named temporary file beside ``path``, flush it
    to disk and rename it into place, then flush the folder (so the rename too outlives a
    crash of the machine); if ``save`` fails the temporary file is removed and ``path`` is
    untouched. Two writers never share a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
    try:
        save(Path(tmp))
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name == "posix":  # a folder cannot be opened for fsync on Windows
        _fsync(path.parent)
    return path


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk and rename it into
    place."""

    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    return atomic_save(path, write)


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
        raise ConfigError(
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

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower() or "WeightsUnpickler" in str(err):
            raise ConfigError(
                f"Checkpoint {str(path)!r} holds objects other than tensors and plain data "
                f"({_weights_only_reason(err)}); it is not loaded because loading it could run "
                "code. Delete it to start the run over."
            ) from err
        raise _corrupt_checkpoint(path, err) from err
    except (RuntimeError, EOFError, KeyError, ValueError) as err:
        # A file cut short or overwritten: torch's zip reader raises RuntimeError, its legacy
        # (pre-zip) reader whatever the stray bytes make the unpickler do.
        raise _corrupt_checkpoint(path, err) from err


def _corrupt_checkpoint(path: str | os.PathLike, err: BaseException) -> ConfigError:
    return ConfigError(
        f"Checkpoint {str(path)!r} is unreadable (truncated or corrupt: {err}); delete it "
        "to start the run over."
    )


def _weights_only_reason(err: BaseException) -> str:
    """The line of torch's long weights-only message that says what it refused."""
    message = str(err)
    _, marker, rest = message.partition("WeightsUnpickler error:")
    reason = rest.strip().split("\n")[0].split(". ")[0].strip() if marker else ""
    return reason or "refused by torch's weights-only unpickler"


def is_numpy_scalar(value: Any) -> bool:
    numpy = sys.modules.get("numpy")  # nothing can be a NumPy scalar if NumPy is not loaded
    return numpy is not None and isinstance(value, numpy.generic)


# What check_plain accepts besides containers, tensors and torch's dtype and device.
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray)


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` unless ``value`` is tensors and plain data all the way down.

    Plain data is what ``torch.load(..., weights_only=True)`` rebuilds without running code:
    ``None``, bools, ints, floats, complex numbers, strings, bytes, ``torch.Size``/``dtype``/
    ``device``, and dicts (``OrderedDict`` too), lists, tuples and sets of those. Exact types
    are checked: a subclass (a NumPy float, a named tuple, an enum) is pickled as its class.

    Args:
        value: what is about to be saved.
        where: the path of ``value`` inside the checkpoint, for the message.
    """
    import torch

    kind = type(value)
    if kind in (dict, OrderedDict):
        for key, item in value.items():
            check_plain(key, f"{where} key {key!r}")
            check_plain(item, f"{where}[{key!r}]")
    elif kind in (list, tuple, set, torch.Size):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
    elif kind in (torch.Tensor, torch.nn.Parameter):
        pass
    elif kind not in _PLAIN_TYPES and not isinstance(value, (torch.dtype, torch.device)):
        raise TypeError(
            f"{where} is a {kind.__module__}.{kind.__qualname__}; checkpoints hold only tensors "
            "and plain data (numbers, strings, None, lists, tuples, dicts), since loading "
            "anything else could run code. Store it as such in the state_dict that returns it."
        )


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename (atomic).

    Raises:
        TypeError: ``payload`` holds something :func:`load_checkpoint` would
            refuse (see :func:`check_plain`); caught here, not when a run tries to resume.
    """
    check_plain(payload, f"checkpoint {str(path)!r}")
    save_torch(path, payload)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    import torch

    return atomic_save(path, lambda tmp: torch.save(obj, tmp))


def rng_state() -> dict[str, Any]:
    """The global RNG states (Python, NumPy, torch CPU and CUDA) for a checkpoint."""
    import random

    import numpy as np
    import torch

    # NumPy's legacy state holds its Mersenne Twister keys as an ndarray, which a checkpoint
    # loaded with ``weights_only=True`` may not contain: store them as a list of ints.
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
