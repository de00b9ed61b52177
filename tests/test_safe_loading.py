"""Loading checkpoints and CIFAR files never runs code from them."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_fake_cifar100

from harness.config import RunConfig
from harness.lifecycle import resume_point
from harness.results import run_dir
from mtl_envs.data import DatasetNotFoundError, load_dataset
from mtl_envs.errors import ConfigError
from mtl_envs.io import atomic_save, load_checkpoint, rng_state, save_checkpoint, set_rng_state


class Evil:
    """Unpickles by calling ``Path(marker).write_text("ran")``: code a file would run on load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


# ---------------------------------------------------------------------- checkpoints
def test_crafted_checkpoint_is_refused_without_running_code(tmp_path):
    # Control: the same construction does run under an unrestricted load.
    control = tmp_path / "control.pt"
    torch.save({"x": Evil(tmp_path / "control-ran")}, control)
    torch.load(control, weights_only=False)
    assert (tmp_path / "control-ran").read_text() == "ran"

    marker = tmp_path / "ran"
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1, "x": Evil(marker)}, path)
    with pytest.raises(ValueError, match="other than tensors and plain data") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "could run code" in str(err.value)
    assert not marker.exists()

    # A resumed run reads its checkpoint through load_checkpoint too.
    config = RunConfig(method="x", output_dir=str(tmp_path / "out"), resume=True)
    run_path = run_dir(config, "x", 0) / "checkpoint.pt"
    run_path.parent.mkdir(parents=True)
    run_path.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="checkpoint.pt.*could run code"):
        resume_point(config, "x", 0)
    assert not marker.exists()


def test_checkpoints_refuse_objects_when_written(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TypeError, match=r"\['history'\]\[0\]\['loss'\] is a numpy.float64"):
        save_checkpoint(path, {"history": [{"loss": np.float64(0.5)}]})
    with pytest.raises(TypeError, match=r"\['buffer'\] is a numpy.ndarray"):
        save_checkpoint(path, {"buffer": np.zeros(3)})
    assert not path.exists()


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    np.random.seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in the legacy state
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"rng": rng_state()})
    expected = np.random.standard_normal(4), torch.rand(4)
    set_rng_state(load_checkpoint(path)["rng"])
    again = np.random.standard_normal(4), torch.rand(4)
    assert np.array_equal(expected[0], again[0]) and torch.equal(expected[1], again[1])


def test_nash_mtl_learner_resumes_bit_for_bit_from_a_checkpoint(tmp_path):
    from baselines.loss_weighting import build_learner

    config = RunConfig(
        method="ew",
        env_id="LossWeighting-Cubic-v1",
        env_kwargs={"device": "cpu", "aggregator": "nash_mtl"},
    )
    learner = build_learner(config, 0)
    learner.train_epoch()
    learner.begin_epoch()
    learner.train_batch(learner.batch_indices(0))
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"state": learner.state_dict()})  # mid-epoch
    state = torch.load(path, map_location="cpu", weights_only=True)["state"]
    assert state["aggregator"]["step"] == learner.num_batches + 1  # Nash-MTL's, as plain data

    resumed = build_learner(config, 0)
    resumed.load_state_dict(load_checkpoint(path)["state"])
    for run in (learner, resumed):  # the rest of the epoch (saved batch order), one more
        for b in range(1, run.num_batches):
            run.train_batch(run.batch_indices(b))
        run.end_epoch()
        run.train_epoch()
    for ours, theirs in zip(resumed.net.parameters(), learner.net.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    assert resumed.loss_history and all(
        torch.equal(a, b) for a, b in zip(resumed.loss_history, learner.loss_history, strict=True)
    )


def test_main_network_snapshot_loads_weights_only(tmp_path):
    # agents/ppo_auxlabel.py writes main_net.pt with torch.save(snapshot).
    from mtl_envs.training import AuxLearner, AuxLearnerConfig

    cfg = AuxLearnerConfig(dataset="digits", backbone="small_cnn", device="cpu")
    snapshot = AuxLearner(cfg, seed=0).snapshot()
    torch.save(snapshot, tmp_path / "main_net.pt")
    loaded = torch.load(tmp_path / "main_net.pt", weights_only=True)
    assert loaded["epoch"] == snapshot["epoch"] and loaded["net"].keys() == snapshot["net"].keys()


# ---------------------------------------------------------------------- CIFAR files
def test_crafted_cifar_file_is_refused_without_running_code(tmp_path):
    write_fake_cifar100(tmp_path)
    train = tmp_path / "cifar-100-python" / "train"
    with open(train, "rb") as f:
        batch = pickle.load(f)  # our own file: safe

    # Control: the same construction does run under plain pickle.load.
    pickle.loads(pickle.dumps({**batch, "data": Evil(tmp_path / "control-ran")}))
    assert (tmp_path / "control-ran").read_text() == "ran"

    marker = tmp_path / "ran"
    train.write_bytes(pickle.dumps({**batch, "data": Evil(marker)}))
    with pytest.raises(DatasetNotFoundError, match="'train' is unreadable") as err:
        load_dataset("cifar100", tmp_path, device="cpu")
    assert "refuses to load global pathlib" in str(err.value)
    assert str(train.parent) in str(err.value)
    assert not marker.exists()


class _Python2Array:
    """Pickles like an array in the official (Python 2) files: raw data as a latin1 string."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __reduce__(self):
        a = self.array
        state = (1, a.shape, a.dtype, False, a.tobytes().decode("latin1"))
        return (np.ndarray.__reduce__(a)[0], (np.ndarray, (0,), "b"), state)


def test_official_numpy1_module_names_load(tmp_path):
    # The official files name numpy.core.multiarray._reconstruct (NumPy 1), files pickled
    # with NumPy 2 numpy._core.multiarray._reconstruct; both are allowed.
    write_fake_cifar100(tmp_path)
    train = tmp_path / "cifar-100-python" / "train"
    with open(train, "rb") as f:
        batch = pickle.load(f)
    raw = pickle.dumps({**batch, "data": _Python2Array(batch["data"])}, protocol=2)
    raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in raw
    train.write_bytes(raw)
    data = load_dataset("cifar100", tmp_path, device="cpu", val_fraction=0.0)
    expected = torch.from_numpy(batch["data"].reshape(-1, 3, 32, 32))
    assert torch.equal(data.train.images, expected)


def test_a_failed_write_leaves_neither_a_file_nor_a_temporary(tmp_path):
    target = tmp_path / "state.pt"

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(target, half_then_fail)
    assert not list(tmp_path.iterdir())
    # Two writers of one path never share a temporary file.
    names = []
    atomic_save(target, lambda tmp: (names.append(tmp.name), tmp.write_bytes(b"a")))
    atomic_save(target, lambda tmp: (names.append(tmp.name), tmp.write_bytes(b"b")))
    assert names[0] != names[1] and target.read_bytes() == b"b"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
def test_a_checkpoint_is_on_disk_before_its_name_is(tmp_path, monkeypatch):
    """The data of the temporary file are synced before the rename and the folder after it,
    so a machine crash leaves the old checkpoint or the new one, never an empty file."""
    import os

    events = []
    fsync, replace = os.fsync, os.replace

    def record_fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        fsync(fd)

    def record_replace(src, dst):
        events.append(("replace", Path(dst).name))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "replace", record_replace)
    save_checkpoint(tmp_path / "checkpoint.pt", {"step": torch.tensor(3)})
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1].startswith(".checkpoint.pt.") and events[2][1] == tmp_path.name


def test_a_truncated_checkpoint_is_a_one_line_error_naming_it(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"weights": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ConfigError, match="checkpoint.pt' is unreadable"):
        load_checkpoint(path)
