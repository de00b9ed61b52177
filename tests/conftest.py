"""Shared fixtures: small dataset files written in the official on-disk layouts."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import mtl_envs  # noqa: F401  (registers the ids cheap_kwargs looks up)
from mtl_envs.data.images import write_cifar100

torch.set_num_threads(2)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def write_fake_cifar100(root: Path, per_fine: int = 2, seed: int = 0) -> np.ndarray:
    """CIFAR-100 pickle layout with a shuffled fine->coarse map; returns that map."""
    rng = np.random.default_rng(seed)
    coarse_of_fine = rng.permutation(100) // 5
    parts = {}
    for name, reps in (("train", per_fine), ("test", 1)):
        fine = np.repeat(np.arange(100), reps)
        parts[name] = {
            "data": _images(rng, len(fine)),
            "fine_labels": fine.tolist(),
            "coarse_labels": coarse_of_fine[fine].tolist(),
        }
    meta = {
        "fine_label_names": [f"f{i}" for i in range(100)],
        "coarse_label_names": [f"c{i}" for i in range(20)],
    }
    write_cifar100(root, parts, meta)
    return coarse_of_fine


def write_fake_cifar10(root: Path, per_batch: int = 40, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = np.arange(per_batch) % 10
        with open(folder / name, "wb") as f:
            pickle.dump({"data": _images(rng, per_batch), "labels": labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def write_fake_svhn(root: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder = root / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1)  # SVHN stores digit 0 as label 10
        savemat(folder / f"{name}_32x32.mat", {"X": x, "y": y})


# Same envs, cheaper episodes for the checkers: one warm-up epoch on the LossWeighting ids,
# ETAP fitted on 4 one-epoch groups on the trained grouping id, and the fake CIFAR-100 files'
# 200 training images where an id takes a larger subset.
CHEAP = {
    "LossWeighting": {"warmup_epochs": 1, "epochs": 3},
    "TaskGrouping-CIFAR100MTL": {
        "etap_train_groups": 4,
        "protocol": {"backbone": "small_cnn", "backbone_kwargs": {}, "epochs": 1},
    },
}


def same_values(a, b) -> bool:
    """Equal nested observations, infos or trajectories: dicts, lists and tuples compared item
    by item, arrays and numbers with ``np.array_equal``."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b))


def assert_same_vector_infos(ours: dict, theirs: dict) -> None:
    """Same keys and masks as Gymnasium's own vector env; equal values on the masked slots."""
    assert sorted(ours) == sorted(theirs)
    for key, values in theirs.items():
        if key == "final_info":
            assert_same_vector_infos(ours[key], values)
        elif key.startswith("_"):
            np.testing.assert_array_equal(ours[key], values, err_msg=key)
        else:
            for k in np.flatnonzero(theirs.get(f"_{key}", np.ones(len(values), bool))):
                np.testing.assert_allclose(
                    np.asarray(ours[key][k], dtype=float),
                    np.asarray(values[k], dtype=float),
                    rtol=1e-4,
                    err_msg=key,
                )


class Counter:
    """A toy run state: one number that every epoch adds one to."""

    def __init__(self):
        self.value = 0

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def fake_result(method: str, seed: int, value: float, **extra) -> dict:
    """A result file's fields that comparisons read, with a test accuracy of ``value``."""
    return {
        "method": method,
        "env_id": "Toy-v0",
        "seed": seed,
        "final": {"test/accuracy": value},
        "wall_time_s": 1.0,
        **extra,
    }


def toy_reference_scores(monkeypatch, random: dict, best: dict) -> dict:
    """Reference scores for "Toy-v0" (test accuracy, higher is better) with a ``random``
    and a best (``human``) policy given as ``{"mean", "std", "n"[, "values"]}``, in place of
    the packaged ones; returns the table, which a test may change as it goes."""
    import mtl_envs.scores as scores

    table = {
        "Toy-v0": {
            "metric": "test/accuracy",
            "higher_is_better": True,
            "protocol": {},
            "random": "random",
            "best": "human",
            "policies": {
                "random": {**random, "oracle": False},
                "human": {**best, "oracle": False},
            },
        }
    }
    monkeypatch.setattr(scores, "_table", lambda: table)
    return table


def cheap_kwargs(env_id: str) -> dict:
    """Overrides that make a registered id cheap to step on the tests' fake data."""
    family, name = env_id.split("-")[:2]
    kwargs = dict(CHEAP.get(family, CHEAP.get(f"{family}-{name}", {})))
    spec_kwargs = gym.spec(env_id).kwargs
    if "train_subset" in spec_kwargs:
        kwargs["train_subset"] = None  # the fake files hold fewer images than the subset
    if family.startswith("AuxLabel") and spec_kwargs.get("reward", "paper") == "paper":
        kwargs["eval_batch_size"] = 32  # eq. 4's B_R, from fewer training images than 256
    return kwargs


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's Digits as an image dataset on the CPU, loaded once."""
    from mtl_envs.data import load_dataset

    return load_dataset("digits", device="cpu")


def aux_learner(digits, seed: int = 0, **kwargs):
    """An AuxLearner with the small CNN on ``digits`` (config overrides in ``kwargs``)."""
    from mtl_envs.training import AuxLearner, AuxLearnerConfig

    cfg = AuxLearnerConfig(dataset="digits", backbone="small_cnn", device="cpu", **kwargs)
    return AuxLearner(cfg, seed=seed, dataset=digits)


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory) -> Path:
    """A data root holding small CIFAR-10, CIFAR-100 and SVHN files."""
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar100(root)
    write_fake_cifar10(root)
    write_fake_svhn(root)
    return root


@pytest.fixture
def data_env(fake_data_root, monkeypatch) -> Path:
    """Point MTL_ENVS_DATA at the fake data root, as a user would."""
    monkeypatch.setenv("MTL_ENVS_DATA", str(fake_data_root))
    return fake_data_root


# A child process that runs the CLI and kills itself with SIGKILL right after the
# ``after``-th call of ``module.function`` returns: a hard kill at a chosen point, with no
# race against the clock.
_KILLING_DRIVER = """
import importlib, os, signal, sys
module, name, after = sys.argv[1], sys.argv[2], int(sys.argv[3])
owner = importlib.import_module(module)
original = getattr(owner, name)
calls = [0]
def killing(*args, **kwargs):
    out = original(*args, **kwargs)
    calls[0] += 1
    if calls[0] == after:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
setattr(owner, name, killing)
from harness.cli import main
sys.exit(main(sys.argv[4:]))
"""


def run_cli_killed_after(target: str, after: int, argv: list[str]) -> int:
    """Run ``mtl-envs ARGV`` in a child that SIGKILLs itself after ``after`` calls of
    ``target`` (``"module:function"``); returns the child's exit status."""
    import os
    import subprocess
    import sys

    module, name = target.split(":")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLING_DRIVER, module, name, str(after), *argv],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    return proc.returncode


@pytest.fixture
def run_killed():
    """:func:`run_cli_killed_after`, for tests that kill a run at a chosen point."""
    return run_cli_killed_after


def alive(pid: int) -> bool:
    """Whether a process with this id is running: not gone, and not a zombie (an orphan's
    exit is reaped by whatever runs as PID 1, which in a container may never do it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    try:
        return "\tZ" not in next(x for x in status.read_text().splitlines() if x[:6] == "State:")
    except (OSError, StopIteration):  # no /proc (macOS), or gone meanwhile
        return True
