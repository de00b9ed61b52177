"""Bad input raises ConfigError naming the argument, the value and the choices."""

import dataclasses
import functools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from harness.cli import main as cli_main
from harness.config import RunConfig
from harness.registry import run_quietly
from harness.sweep import SweepConfig
from mtl_envs.data.base import MultiTaskDataset, MultiTaskSplit
from mtl_envs.data.multitask import load_multitask_dataset
from mtl_envs.errors import ConfigError
from mtl_envs.training.multitask_learner import MultiTaskLearnerConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"train_batch_size": 20, "eval_batch_size": 32}


@functools.cache
def cubic() -> MultiTaskDataset:
    return load_multitask_dataset("cubic", device="cpu")


def custom_split(**changes) -> MultiTaskSplit:
    """Cubic's training split with some of its tensors replaced (custom data)."""
    return dataclasses.replace(cubic().train, **changes)


def nan_target() -> MultiTaskDataset:
    targets = cubic().train.targets.clone()
    row, task = map(int, torch.nonzero(cubic().train.mask)[0])
    targets[row, task] = float("nan")
    return dataclasses.replace(cubic(), train=custom_split(targets=targets))


BAD_INPUT = [
    (lambda: gym.make("AuxLabel-Digits-v0", hierarchy_factor=0), ValueError, "hierarchy_factor"),
    (lambda: gym.make("AuxLabel-Digits-v0", backbone="small_cnm"), ConfigError, "small_cnn"),
    (lambda: gym.make("AuxLabel-Digits-v0", lr_rate=0.1), ConfigError, "Unknown"),
    (lambda: gym.make("LossWeighting-Cubic-v1", aggregator="upgrd"), ValueError, "upgrad"),
    (lambda: gym.make("LossWeighting-Cubic-v1", model="hypernets"), ValueError, "hypernet"),
    (lambda: gym.make("LossWeighting-Cubic-v1", temperature="hot"), ConfigError, "temperature"),
    (lambda: MultiTaskLearnerConfig(batching="random"), ValueError, "uniform"),
    (lambda: MultiTaskLearnerConfig(batch_size=0), ValueError, "batch_size"),
    (lambda: RunConfig.from_dict({"epoch": 3}), ConfigError, "epochs"),
    (lambda: RunConfig(epochs=0), ValueError, "epochs"),
    # IGBv2's agent acts after the env's warm-up epochs: a run of no more epochs has none.
    (
        lambda: run_quietly("igbv2", "LossWeighting-Cubic-v1", epochs=2, output_dir="unused"),
        ConfigError,
        r"`epochs` must exceed the env's 2 warm-up epoch\(s\).*got epochs=2",
    ),
    (
        lambda: run_quietly(
            "igbv2",
            "LossWeighting-Cubic-v1",
            env_kwargs={"warmup_epochs": 3},
            epochs=1,
            output_dir="unused",
        ),
        ConfigError,
        r"`epochs` must exceed the env's 3 warm-up epoch\(s\).*got epochs=1",
    ),
    (lambda: SweepConfig(backend="slurm"), ValueError, "local"),
    (lambda: SweepConfig(grid={"seed": [0]}), ValueError, "seeds"),
    (lambda: load_multitask_dataset("cubix"), ConfigError, "cubic"),
    (
        lambda: load_multitask_dataset("cubic", device="cpu", options={"num_task": 3}),
        ConfigError,
        "dataset_kwargs",
    ),
    (
        lambda: load_multitask_dataset("cubic", device="cpu", options={"num_tasks": 1}),
        ValueError,
        "num_tasks",
    ),
    # Custom data of the wrong shape or content never reaches a learner.
    (lambda: custom_split(targets=cubic().train.targets[:, :3]), ValueError, r"\(N, 20\)"),
    (lambda: custom_split(mask=cubic().train.mask.float()), ValueError, "bool"),
    (lambda: custom_split(inputs=cubic().train.inputs[:-1]), ValueError, "same N"),
    (lambda: custom_split(inputs=cubic().train.inputs.numpy()), ConfigError, "inputs"),
    (
        lambda: dataclasses.replace(
            cubic(), val=dataclasses.replace(cubic().val, inputs=cubic().val.inputs.repeat(1, 2))
        ),
        ValueError,
        "'val' split",
    ),
    (lambda: dataclasses.replace(cubic(), task_type="regresion"), ValueError, "regression"),
    (nan_target, ValueError, "NaN"),
    (
        lambda: dataclasses.replace(cubic(), task_type="classification", num_classes=2),
        ValueError,
        "num_classes",
    ),
    (
        lambda: dataclasses.replace(cubic(), task_metadata=cubic().task_metadata[:5]),
        ValueError,
        "task_metadata",
    ),
]


@pytest.mark.parametrize("make, error, match", BAD_INPUT, ids=range(len(BAD_INPUT)))
def test_bad_arguments_raise_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "env_id, action",
    [
        ("AuxLabel-Digits-v0", 7),
        ("LossWeighting-Cubic-v1", np.full(20, 2.0, dtype=np.float32)),
        ("LossWeighting-Cubic-v1", np.zeros(3, dtype=np.float32)),
        ("TaskGrouping-Digits10-v1", np.full(10, 2)),
    ],
)
def test_actions_outside_the_space_are_rejected(env_id, action):
    kwargs = SMALL if env_id.startswith("AuxLabel") else {}
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action space|inside"):
        env.step(action)


def test_cli_reports_bad_config(tmp_path, capsys):
    assert cli_main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: ew\nenv_id: LossWeighting-Cubic-v1\nepoch: 3\n")
    assert cli_main(["run", str(bad)]) == 2
    assert "epochs" in capsys.readouterr().err
