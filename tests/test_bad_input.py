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
from harness.registry import check_run, run_quietly
from harness.results import load_results
from harness.sweep import SweepConfig
from mtl_envs.data.base import MultiTaskDataset, MultiTaskSplit
from mtl_envs.data.multitask import load_multitask_dataset
from mtl_envs.errors import ConfigError, PathNotFoundError
from mtl_envs.families import family_of
from mtl_envs.models import build_backbone
from mtl_envs.training.multitask_learner import MultiTaskLearnerConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"train_batch_size": 20, "eval_batch_size": 32}


def _affinities(gradients="parameters", **config):
    from mtl_envs.training.affinity import collect_affinities
    from mtl_envs.training.multitask_learner import MultiTaskLearner

    learner = MultiTaskLearner(MultiTaskLearnerConfig(dataset="cubic", **config), seed=0)
    return collect_affinities(learner, epochs=1, gradients=gradients)


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
    (lambda: gym.make("AuxLabel-Digits-v1", hierarchy_factor=0), ValueError, "hierarchy_factor"),
    (lambda: gym.make("AuxLabel-Digits-v1", backbone="small_cnm"), ConfigError, "small_cnn"),
    (
        lambda: gym.make("AuxLabel-Digits-v1", lr_rate=0.1),
        ConfigError,
        "Unknown AuxLabel argument 'lr_rate'",
    ),
    (
        lambda: gym.make("LossWeighting-Cubic-v1", aggregator="upgrd"),
        ValueError,
        "`aggregator` must be None or one of .*Did you mean 'upgrad'",
    ),
    (
        lambda: gym.make("LossWeighting-Cubic-v1", model="hypernets"),
        ValueError,
        r"`model` must be one of \['hypernet'.*got 'hypernets'",
    ),
    (lambda: gym.make("LossWeighting-Cubic-v1", temperature="hot"), ConfigError, "temperature"),
    (
        lambda: MultiTaskLearnerConfig(batching="random"),
        ValueError,
        r"`batching` must be one of \['balanced', 'uniform'\]; got 'random'",
    ),
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
    (
        lambda: dataclasses.replace(cubic(), task_type="regresion"),
        ValueError,
        "`task_type` must be one of .*'regression'.*got 'regresion'",
    ),
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
    # A zero learning rate or decay factor would divide IGB's alpha = lr_0 / lr_t by zero.
    (lambda: gym.make("LossWeighting-Cubic-v1", lr=0), ConfigError, "`lr` must be a positive"),
    (lambda: MultiTaskLearnerConfig(scheduler_gamma=0.0), ConfigError, "scheduler_gamma"),
    # NaN and infinity pass a plain `value < 0` test; they are refused by name.
    (lambda: MultiTaskLearnerConfig(lr=float("nan")), ConfigError, r"`lr`.*finite.*nan"),
    (lambda: gym.make("LossWeighting-Cubic-v1", temperature=float("inf")), ConfigError, "temp"),
    (lambda: gym.make("AuxLabel-Digits-v1", entropy_coef=float("nan")), ConfigError, "entropy"),
    (lambda: gym.make("AuxLabel-Digits-v1", lr=float("nan")), ConfigError, "`lr`"),
    (lambda: load_multitask_dataset("cubic", options={"noise": -1.0}), ConfigError, "`noise`"),
    # A mistyped id is a ConfigError with a suggestion, not gymnasium's traceback.
    (
        lambda: family_of("LossWeighting-Cubik-v1"),
        ConfigError,
        "Did you mean 'LossWeighting-Cubic-v1'",
    ),
    (lambda: run_quietly("ew", "LossWeighting-Cubic-v9"), ConfigError, "Did you mean"),
    # Run configs: no methods, a repeated or negative seed, a list where a mapping belongs.
    (lambda: RunConfig(method=[]), ConfigError, "`method`"),
    (lambda: RunConfig(seeds=[0, 0]), ConfigError, "distinct"),
    (lambda: RunConfig(seeds=[-1]), ConfigError, "`seeds`"),
    (lambda: RunConfig(env_kwargs=["lr", 0.1]), ConfigError, "`env_kwargs` must be a mapping"),
    # A method_kwargs key none of the run's methods reads is a typo.
    (
        lambda: check_run(
            RunConfig(
                method=["ew", "igbv2"],
                env_id="LossWeighting-Cubic-v1",
                method_kwargs={"use_epochs": 3},
            )
        ),
        ConfigError,
        r"'use_epochs'.*Did you mean 'use_epoch'",
    ),
    (
        lambda: run_quietly("stl", "LossWeighting-Cubic-v1", method_kwargs={"protocol": "tabluar"}),
        ConfigError,
        "`method_kwargs.protocol` must be 'tabular'",
    ),
    # Unknown constructor keys name the valid ones; nothing is caught from inside the call.
    (
        lambda: build_backbone("mlp", 1, 8, {"hiden": [8]}),
        ConfigError,
        r"'hiden' in `backbone_kwargs`.*Did you mean 'hidden'",
    ),
    (
        lambda: gym.make("LossWeighting-Exam-v1", model="hypernet", model_kwargs={"embed": 2}),
        ConfigError,
        "model_kwargs",
    ),
    # TaskGrouping's trained-gains protocol and seeds.
    (
        lambda: gym.make("TaskGrouping-Digits10-v1", gains="train", protocol={"epoch": 3}),
        ConfigError,
        r"Unknown GroupProtocol key 'epoch'.*'epochs'",
    ),
    (
        lambda: gym.make("TaskGrouping-Digits10-v1", gains="train", protocol={"epochs": 0}),
        ConfigError,
        "`epochs` must be a positive int",
    ),
    (lambda: gym.make("TaskGrouping-Digits10-v1", seeds=[]), ConfigError, "`seeds`"),
    (
        lambda: gym.make("TaskGrouping-Digits10-v1", gains="train", protocol={"dataset": "x"}),
        ConfigError,
        "must not hold 'dataset'",
    ),
    # TaskGrouping's own arguments: a typo names the argument and the closest valid value.
    (
        lambda: gym.make("TaskGrouping-Digits10-v1", budgt=2),
        ConfigError,
        r"Unknown TaskGrouping argument 'budgt'. Did you mean 'budget'",
    ),
    (
        lambda: gym.make("TaskGrouping-Digits10-v1", table="digits10_scarse"),
        ConfigError,
        r"`table` 'digits10_scarse'.*Did you mean 'digits10_scarce'",
    ),
    (
        lambda: gym.make("TaskGrouping-Digits10-v1", dataset="digit10"),
        ConfigError,
        r"`dataset` 'digit10'.*Did you mean 'digits10'",
    ),
    # Grouping methods score selections on a table of trained groups: an id without one,
    # or a misspelt table, fails before anything runs.
    *[
        (
            lambda m=method: check_run(RunConfig(method=m, env_id="TaskGrouping-CIFAR100MTL-v1")),
            ConfigError,
            r"no table of trained groups.*TaskGrouping-Digits10-v1",
        )
        for method in ("ppo", "etap", "tag", "random", "optimal")
    ],
    (
        lambda: check_run(
            RunConfig(
                method="etap",
                env_id="TaskGrouping-Digits10-v1",
                env_kwargs={"table": "digits10_scarse"},
            )
        ),
        ConfigError,
        r"`env_kwargs.table`.*Did you mean 'digits10_scarce'",
    ),
    # A path that does not exist is bad input too, and still a FileNotFoundError.
    (lambda: RunConfig.from_file("no/such.yaml"), PathNotFoundError, "no/such.yaml"),
    (lambda: SweepConfig.from_file("no/such.yaml"), FileNotFoundError, "no/such.yaml"),
    (lambda: load_results(["no/such/folder"]), ConfigError, "no/such/folder"),
    # The weight map's exponent range: two finite numbers, low < high.
    (lambda: gym.make("AuxLabel-Digits-v1", weight_exponent_range=5), ConfigError, "exponent"),
    (lambda: gym.make("AuxLabel-Digits-v1", weight_exponent_range="ab"), ConfigError, "exponent"),
    (
        lambda: gym.make("AuxLabel-Digits-v1", weight_exponent_range=[0, float("nan")]),
        ConfigError,
        "finite",
    ),
    # A misspelt reset option must not quietly run the default mode.
    (
        lambda: gym.make("AuxLabel-Digits-v1", **SMALL).reset(seed=0, options={"Mode": "x"}),
        ConfigError,
        r"Unknown reset option 'Mode'.*Did you mean 'mode'",
    ),
    (
        lambda: gym.make("TaskGrouping-Digits10-v1").reset(options={"budget": 2}),
        ConfigError,
        "reads no options",
    ),
    (
        lambda: gym.make_vec("LossWeighting-Cubic-v1", num_envs=2, epochs=3).reset(
            options={"resetmask": [True, False]}
        ),
        ConfigError,
        r"'resetmask'.*Did you mean 'reset_mask'",
    ),
    # Agents' options: SB3 keyword names, and episode budgets their protocols cannot honour.
    (
        lambda: check_run(RunConfig(method="ppo", agent={"n_stepz": 1})),
        ConfigError,
        r"'n_stepz' in `agent` for SB3 PPO. Did you mean 'n_steps'",
    ),
    (
        lambda: check_run(RunConfig(method="ppo", policy={"image_feature": 8})),
        ConfigError,
        r"'image_feature' in `policy`.*Did you mean 'image_features'",
    ),
    (
        lambda: check_run(RunConfig(method="ppo", env_kwargs={"max_batches": 3})),
        ConfigError,
        "max_batches",
    ),
    (
        lambda: check_run(RunConfig(method="ppo", env_kwargs={"restore": "none"})),
        ConfigError,
        r"`env_kwargs.restore` 'none'.*use 'epoch' \(default\) or 'batch'",
    ),
    (
        lambda: check_run(
            RunConfig(method="igbv2", env_id="LossWeighting-Cubic-v1", agent={"train_freq": 10})
        ),
        ConfigError,
        "`agent.train_freq`",
    ),
    (
        lambda: check_run(
            RunConfig(method="igbv2", env_id="LossWeighting-Cubic-v1", env_kwargs={"max_steps": 5})
        ),
        ConfigError,
        "max_steps",
    ),
    (
        lambda: check_run(
            RunConfig(
                method="ppo", env_id="TaskGrouping-Digits10-v1", agent={"total_timesteps": "x"}
            )
        ),
        ConfigError,
        "`agent.total_timesteps`",
    ),
    # SB3 hyperparameters by value, before anything trains (SB3 asserts on few of them).
    (
        lambda: check_run(
            RunConfig(method="igbv2", env_id="LossWeighting-Cubic-v1", agent={"gamma": 5})
        ),
        ConfigError,
        r"`agent.gamma` must be a number in \[0, 1\]; got 5",
    ),
    (
        lambda: check_run(RunConfig(method="ppo", agent={"batch_size": 0})),
        ConfigError,
        r"`agent.batch_size` must be a positive int; got 0",
    ),
    (
        lambda: check_run(
            RunConfig(
                method="igbv2", env_id="LossWeighting-Cubic-v1", agent={"learning_rate": "abc"}
            )
        ),
        ConfigError,
        r"`agent.learning_rate` must be a positive finite number; got 'abc'",
    ),
    (
        lambda: check_run(
            RunConfig(method="ppo", env_id="TaskGrouping-Digits10-v1", agent={"n_steps": -5})
        ),
        ConfigError,
        "`agent.n_steps`",
    ),
    # IGBv2's schedule against the run's length, checked before an earlier method trains.
    (
        lambda: check_run(
            RunConfig(method=["ew", "igbv2"], env_id="LossWeighting-Cubic-v1", epochs=2)
        ),
        ConfigError,
        r"`epochs` \(2\) must be an int greater than `warmup_epochs` \(2\)",
    ),
    (
        lambda: check_run(RunConfig(method="igbv2", env_id="LossWeighting-Cubic-v1", epochs=5)),
        ConfigError,
        r"`method_kwargs.use_epoch` \(6\) is past the run's last epoch \(5\): SAC would never act",
    ),
    (
        lambda: check_run(
            RunConfig(
                method="igbv2",
                env_id="LossWeighting-Cubic-v1",
                method_kwargs={"update_epoch": 6, "use_epoch": 4},
            )
        ),
        ConfigError,
        r"`method_kwargs.use_epoch` \(4\) comes before `method_kwargs.update_epoch` \(6\)",
    ),
    (
        lambda: check_run(
            RunConfig(
                method="igbv2",
                env_id="LossWeighting-Cubic-v1",
                agent={"train_freq": [1, "episode"]},
            )
        ),
        ConfigError,
        r"`agent.train_freq` \[1, 'episode'\] counts episodes, and IGBv2's episode is the whole",
    ),
    # The env's own arguments, for methods that build the learner but not the env.
    (
        lambda: check_run(
            RunConfig(method="ew", env_id="LossWeighting-Cubic-v1", env_kwargs={"reward": "minn"})
        ),
        ConfigError,
        r"`reward` must be one of",
    ),
    (
        # The run's own length counts, not the id's registered 30 epochs: this one is valid,
        # so the error comes from the next check.
        lambda: check_run(
            RunConfig(
                method="ew",
                env_id="LossWeighting-Digits10-v1",
                epochs=60,
                env_kwargs={"warmup_epochs": 30, "reward": "minn"},
            )
        ),
        ConfigError,
        r"`reward` must be one of",
    ),
    (
        lambda: check_run(
            RunConfig(
                method="ew", env_id="LossWeighting-Cubic-v1", epochs=3, env_kwargs={"epochs": 6}
            )
        ),
        ConfigError,
        r"`env_kwargs.epochs` \(6\) differs from `epochs` \(3\)",
    ),
    (
        lambda: check_run(RunConfig(method="human", env_kwargs={"restore": "never"})),
        ConfigError,
        r"`restore` must be one of",
    ),
    (
        lambda: check_run(
            RunConfig(
                method="etap", env_id="TaskGrouping-Digits10-v1", env_kwargs={"affinity": "tagg"}
            )
        ),
        ConfigError,
        r"`affinity` must be one of .*Did you mean 'tag'",
    ),
    (
        lambda: check_run(
            RunConfig(method="etap", env_id="TaskGrouping-Digits10-v1", env_kwargs={"foo": 1})
        ),
        ConfigError,
        "Unknown TaskGrouping argument 'foo'",
    ),
    # Settings no method of the run reads: a baseline has no agent.
    (
        lambda: check_run(
            RunConfig(method="ew", env_id="LossWeighting-Cubic-v1", agent={"learning_ratee": 1})
        ),
        ConfigError,
        r"`agent` settings \['learning_ratee'\] are read by none of the methods \['ew'\]",
    ),
    (
        lambda: (
            check_run(RunConfig(method=["ppo", "human"], policy={"image_features": 8})),
            check_run(RunConfig(method="igbv2", env_id="LossWeighting-Cubic-v1", policy={"a": 1})),
        ),
        ConfigError,
        r"`policy` settings \['a'\] are read by none of the methods \['igbv2'\]",
    ),
    (
        lambda: check_run(
            RunConfig(method="etap", env_id="TaskGrouping-Digits10-v1", env_kwargs={"budget": -2})
        ),
        ConfigError,
        r"`budget` must be a positive int; got -2",
    ),
    (lambda: RunConfig(output_dir=5), ConfigError, r"`output_dir` must be a folder path; got 5"),
    (lambda: RunConfig(output_dir=__file__), ConfigError, r"`output_dir` .* is a file"),
    (
        lambda: gym.make("LossWeighting-Cubic-v1", dataset_kwargs=[1]),
        ConfigError,
        r"`dataset_kwargs` must be a mapping of keys to values; got \[1\]",
    ),
    # Layer widths inside the model's and the backbone's kwargs.
    (
        lambda: gym.make("LossWeighting-Cubic-v1", model_kwargs={"hidden": -1}),
        ConfigError,
        r"`model_kwargs.hidden` must be a list of positive ints, not empty .*got -1",
    ),
    (
        lambda: gym.make("AuxLabel-Digits-v1", backbone_kwargs={"widths": [32, 0]}),
        ConfigError,
        r"`backbone_kwargs.widths` must be a list of positive ints .*got \[32, 0\]",
    ),
    # Switches take True or False only: a quoted "false" would read as True.
    (
        lambda: RunConfig(resume="false"),
        ConfigError,
        r"`resume` must be True or False; got 'false'",
    ),
    (
        lambda: gym.make("LossWeighting-Cubic-v1", use_metadata="maybe"),
        ConfigError,
        r"`use_metadata` must be True or False",
    ),
    (
        lambda: gym.make("AuxLabel-Digits-v1", amp="yes"),
        ConfigError,
        r"`amp` must be True or False; got 'yes'",
    ),
    # Wrong types are named, never read as something else (a bool as a number) or passed on
    # to fail deep inside a library.
    (lambda: gym.make("LossWeighting-Cubic-v1", data_root=5), ConfigError, "`data_root` must"),
    (lambda: gym.make("AuxLabel-Digits-v1", data_root=5), ConfigError, "`data_root` must"),
    (lambda: gym.make("LossWeighting-Cubic-v1", split_seed=-1), ConfigError, "`split_seed`"),
    (lambda: gym.make("LossWeighting-Cubic-v1", split_seed=True), ConfigError, "`split_seed`"),
    (lambda: gym.make("LossWeighting-Cubic-v1", split_seed=1.5), ConfigError, "`split_seed`"),
    (lambda: gym.make("AuxLabel-Digits-v1", val_fraction=True), ConfigError, "`val_fraction`"),
    (lambda: gym.make("AuxLabel-Digits-v1", train_subset=True), ConfigError, "`train_subset`"),
    (lambda: gym.make("AuxLabel-Digits-v1", label_noise=False), ConfigError, "`label_noise`"),
    # Options of the network a config does not build are refused, not ignored.
    (
        lambda: gym.make("LossWeighting-Cubic-v1", backbone="resnet"),
        ConfigError,
        r"`backbone` must be one of \['vgg16', 'small_cnn', 'mlp'\]; got 'resnet'",
    ),
    (
        lambda: gym.make("LossWeighting-Cubic-v1", backbone_kwargs={"x": 1}),
        ConfigError,
        "`model='hard_sharing'` does not use",
    ),
    (
        lambda: gym.make("LossWeighting-Digits10-v1", model_kwargs={"bogus": 3}),
        ConfigError,
        "`model` is None",
    ),
    (
        lambda: gym.make("TaskGrouping-Digits10-v1", protocol={"epoch": 3}),
        ConfigError,
        "Unknown GroupProtocol key 'epoch'",
    ),
    (lambda: gym.make("TaskGrouping-Digits10-v1", device="tpu"), ConfigError, "`device`"),
    (lambda: gym.make("TaskGrouping-Digits10-v1", cache_dir=5), ConfigError, "`cache_dir`"),
    # Past float32's range the weights would be NaN and the run would train on them.
    (
        lambda: gym.make("LossWeighting-Cubic-v1", temperature=1e308),
        ConfigError,
        r"`temperature` must be at most 4.69e\+37",
    ),
    (
        lambda: gym.make_vec("AuxLabel-Digits-v1", num_envs="2"),
        ConfigError,
        "`num_envs` must be a positive int or None; got '2'",
    ),
    # Affinities score the shared encoder's per-task gradients: task networks have none.
    (
        lambda: _affinities(model="cross_stitch"),
        ConfigError,
        "collect_affinities needs a shared encoder.*got model='cross_stitch'",
    ),
    (lambda: _affinities("features"), ConfigError, "`gradients` must be one of"),
    # The AuxLabel vector form has one slot per sample of a batch; the error names the way out.
    (
        lambda: gym.make_vec("AuxLabel-Digits-v1", num_envs=4),
        ConfigError,
        r"num_envs=100 or train_batch_size=4, or vectorization_mode=\"sync\"",
    ),
]


@pytest.mark.parametrize("make, error, match", BAD_INPUT, ids=range(len(BAD_INPUT)))
def test_bad_arguments_raise_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "env_id, action",
    [
        ("AuxLabel-Digits-v1", 7),
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


@pytest.mark.parametrize(
    "env_id", ["AuxLabel-Digits-v1", "LossWeighting-Cubic-v1", "TaskGrouping-Digits10-v1"]
)
def test_single_env_seeds_are_ints_as_in_the_vector_forms(env_id):
    kwargs = SMALL if env_id.startswith("AuxLabel") else {}
    env = gym.make(env_id, **kwargs).unwrapped
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ConfigError, match="`seed` must be an int >= 0 or None"):
            env.reset(seed=bad)
    env.reset(seed=np.int64(3))  # a NumPy int is an int


def test_actions_that_are_not_numbers_are_config_errors():
    weighting = gym.make("LossWeighting-Cubic-v1").unwrapped
    weighting.reset(seed=0)
    for bad in ("abc", None, np.zeros(20, dtype=bool)):
        with pytest.raises(ConfigError, match="`action` must be numbers"):
            weighting.step(bad)
    vector = gym.make_vec(
        "LossWeighting-Cubic-v1", num_envs=2, vectorization_mode="vector_entry_point"
    )
    vector.reset(seed=0)
    with pytest.raises(ConfigError, match="`actions` must be numbers"):
        vector.step("abc")
    labelling = gym.make("AuxLabel-Digits-v1", **SMALL).unwrapped
    labelling.reset(seed=0)
    with pytest.raises(ConfigError, match="outside the action space"):
        labelling.step(True)  # not sub-class 1


def test_actions_are_checked_before_any_cast():
    """An int8 cast once turned 257 into 1 and 0.6 into 0 (the stop action); an int64 cast
    turned the label 2.7 into 2. Whole numbers sent as floats stay valid."""
    grouping = gym.make("TaskGrouping-Digits10-v1")
    grouping.reset(seed=0)
    for bad in (np.full(10, 257), np.full(10, 256), np.full(10, 0.6)):
        with pytest.raises(ValueError, match="outside the action space"):
            grouping.step(bad)
    grouping.step(np.array([1.0, 0.0] * 5, dtype=np.float32))  # SB3's Bernoulli samples
    vector = gym.make_vec(
        "AuxLabel-Digits-v1",
        num_envs=4,
        vectorization_mode="vector_entry_point",
        train_batch_size=4,
        eval_batch_size=32,
    )
    vector.reset(seed=0)
    with pytest.raises(ConfigError, match=r"per slot; got .*dtype float64, values in \[1.0, 2.7\]"):
        vector.step(np.array([2.7, 1.0, 1.0, 1.0]))
    vector.step(np.array([2.0, 1.0, 1.0, 1.0]))


def test_malformed_yaml_and_repeated_keys_are_named(tmp_path, capsys):
    from harness.config import load_yaml

    with pytest.raises(ConfigError, match=r"Key 'method' appears twice .*line 2, column 1"):
        load_yaml("method: ew\nmethod: rlw\n")
    with pytest.raises(ConfigError, match=r"Malformed YAML at line 2, column 1: .*'\\t'"):
        load_yaml("env_kwargs:\n\tlr: 1\n")
    assert load_yaml("variant: 2024-01-01") == {"variant": "2024-01-01"}  # a label, not a date
    merged = load_yaml("a: &shared {lr: 1}\nb:\n  <<: *shared\n  epochs: 2\n")
    assert merged["b"] == {"lr": 1, "epochs": 2}  # merge keys are not repeated keys
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [ew, rlw\n")
    assert cli_main(["run", str(bad)]) == 2
    assert f"Malformed YAML in '{bad}' at line 2" in capsys.readouterr().err


def test_a_sweep_with_failed_runs_exits_nonzero(tmp_path, monkeypatch):
    import harness.sweep

    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"base: {{env_id: LossWeighting-Cubic-v1, epochs: 3}}\ngrid: {{method: [ew]}}\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    monkeypatch.setattr(
        harness.sweep,
        "run_sweep",
        lambda sweep, progress: {"done": [], "skipped": [], "failed": ["ew"]},
    )
    assert cli_main(["sweep", str(config)]) == 1


def test_run_checks_fail_before_anything_trains(tmp_path):
    from harness.probe import probe
    from harness.sweep import SweepConfig, expand

    for kwargs, match in (({"seeds": []}, "`seeds`"), ({"episodes": 0}, "`episodes`")):
        with pytest.raises(ConfigError, match=match):
            probe("LossWeighting-Cubic-v1", progress=False, **kwargs)
    base = {"env_id": "LossWeighting-Cubic-v1", "output_dir": str(tmp_path)}
    for grid, match in (
        ({"method": ["ew", "rlww"], "seeds": [0]}, r"Unknown method 'rlww'.*Did you mean 'rlw'"),
        ({"method": ["ew"], "seeds": [0], "env_id": ["LossWeighting-Cubik-v1"]}, "Cubic"),
    ):
        with pytest.raises(ConfigError, match=match):
            expand(SweepConfig(base=base, grid=grid, output_dir=str(tmp_path)))
    shared = {**base, "method_kwargs": {"update_epoch": 4}}
    ok = SweepConfig(base=shared, grid={"method": ["ew", "igbv2"]}, output_dir=str(tmp_path))
    assert len(expand(ok)) == 2  # IGBv2's schedule rides along with EW's run
    alone = SweepConfig(base=shared, grid={"method": ["ew"]}, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="'update_epoch': none of the methods"):
        expand(alone)
    # A run picks its best epoch on validation: an empty split is refused before training.
    for empty in (0, 0.0):
        config = RunConfig(
            method="stl", env_id="AuxLabel-Digits-v1", env_kwargs={"val_fraction": empty}
        )
        with pytest.raises(ConfigError, match=r"`env_kwargs.val_fraction` must be above 0.*got 0"):
            check_run(config)
    check_run(RunConfig(method="stl", env_id="AuxLabel-Digits-v1", env_kwargs={"val_fraction": 50}))


def test_shared_method_kwargs_reach_only_the_methods_that_read_them():
    from harness.registry import method_options

    config = RunConfig(
        method=["igbv2", "hypernet"],
        env_id="LossWeighting-Exam-v1",
        method_kwargs={"update_epoch": 5, "protocol": "tabular", "max_epochs": 10},
    )
    check_run(config)
    assert method_options(config, "igbv2") == {"update_epoch": 5}
    assert method_options(config, "hypernet") == {"protocol": "tabular", "max_epochs": 10}
    assert method_options(config, "ew") == {}
    with pytest.raises(ConfigError, match="'max_epoch'.*Did you mean 'max_epochs'"):
        method_options(dataclasses.replace(config, method_kwargs={"max_epoch": 10}), "hypernet")
    # stl reads the tabular options only under the tabular protocol: without it they would be
    # silently ignored.
    forgot = RunConfig(
        method="stl", env_id="LossWeighting-Cubic-v1", method_kwargs={"max_epochs": 9}
    )
    with pytest.raises(ConfigError, match=r"\['max_epochs'\] are options of the tabular protocol"):
        run_quietly("stl", "LossWeighting-Cubic-v1", method_kwargs=forgot.method_kwargs)
    # A grid option reaches only the method with that grid: given to a run of others, it is
    # refused before anything trains, not ignored.
    mrn_grid = {"protocol": "tabular", "prior_weights": [0.01]}
    for method in ("hard_sharing", "hypernet", "maxroam", "stl"):
        config = RunConfig(method=method, env_id="LossWeighting-Cubic-v1", method_kwargs=mrn_grid)
        with pytest.raises(ConfigError, match=r"'prior_weights': none of the methods \["):
            check_run(config)
    both = RunConfig(
        method=["hard_sharing", "mrn"], env_id="LossWeighting-Cubic-v1", method_kwargs=mrn_grid
    )
    check_run(both)
    assert method_options(both, "mrn") == mrn_grid
    assert method_options(both, "hard_sharing") == {"protocol": "tabular"}
    check_run(dataclasses.replace(both, method="hard_sharing"), siblings=["mrn"])
    with pytest.raises(ConfigError, match="method_kwargs.use_epoch"):
        run_quietly(
            "igbv2",
            "LossWeighting-Cubic-v1",
            epochs=3,
            output_dir="unused",
            method_kwargs={"use_epoch": "6"},
        )


def test_numpy_numbers_and_empty_yaml_mappings_are_valid_input():
    from mtl_envs.utils import check_int, check_number, check_seeds

    check_int("n", np.int64(3))
    check_number("lr", np.float32(0.1), strict=True)
    assert check_seeds("seeds", np.arange(3)) == [0, 1, 2]
    assert all(type(s) is int for s in check_seeds("seeds", (np.int64(4), 5)))
    for bad in (np.bool_(True), 10**400, "1"):
        with pytest.raises(ConfigError, match="`x` must be a non-negative finite number"):
            check_number("x", bad)
    with pytest.raises(ConfigError, match="`seeds`"):
        check_seeds("seeds", "01")
    # A YAML key with only comments under it reads as None: an empty mapping, not a crash.
    config = RunConfig.from_dict({"method": "stl", "method_kwargs": None, "agent": None})
    assert config.method_kwargs == {} and config.agent == {}
    check_run(config)


def test_cli_reports_bad_config(tmp_path, capsys):
    from harness.train import main as train_main

    assert cli_main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["run", str(tmp_path)]) == 2
    assert "is a directory; give a YAML file" in capsys.readouterr().err
    # python -m harness.train reports bad input in one line too, and asks for a config.
    assert train_main([str(tmp_path / "missing.yaml")]) == 2
    assert "harness.train: error: Config file" in capsys.readouterr().err
    assert train_main([]) == 2 and "usage:" in capsys.readouterr().err
    # So is bad input a run finds (a resume over a run of another config).
    ew = tmp_path / "ew.yaml"
    ew.write_text(
        f"method: ew\nenv_id: LossWeighting-Cubic-v1\nepochs: 1\noutput_dir: {tmp_path / 'o'}\n"
        "progress: false\ntensorboard: false\nenv_kwargs: {device: cpu}\n"
    )
    assert train_main([str(ew)]) == 0
    capsys.readouterr()
    assert train_main([str(ew), "resume=true", "env_kwargs.lr=0.1"]) == 2
    assert "harness.train: error: resume=true found" in capsys.readouterr().err
    # A config that leaves `method` to its default on another family's id says so.
    lw = tmp_path / "lw.yaml"
    lw.write_text("env_id: LossWeighting-Cubic-v1\n")
    assert cli_main(["run", str(lw)]) == 2
    assert "`method` defaults to 'ppo'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: ew\nenv_id: LossWeighting-Cubic-v1\nepoch: 3\n")
    assert cli_main(["run", str(bad)]) == 2
    assert "epochs" in capsys.readouterr().err
    bad.write_text("method: ew\nenv_id: LossWeighting-Cubik-v1\n")
    assert cli_main(["run", str(bad)]) == 2
    assert "Did you mean 'LossWeighting-Cubic-v1'" in capsys.readouterr().err
    assert cli_main(["probe", "LossWeighting-Cubik-v1", "--seeds", "1"]) == 2
    assert "Did you mean 'LossWeighting-Cubic-v1'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "method, options, match",
    [
        ("maxl", {"first_order": "false"}, "`method_kwargs.first_order` must be True or False"),
        ("maxl", {"lr": -1.0}, "`method_kwargs.lr` must be a positive finite number"),
        ("maxl", {"weight_decay": float("nan")}, "`method_kwargs.weight_decay`"),
        ("maxl", {"entropy_coef": "abc"}, "`method_kwargs.entropy_coef`"),
        # Reversed, eq. 8's bins would map the other way round.
        ("wa_maxl", {"exponent_range": [5, -5]}, "`method_kwargs.exponent_range` must be"),
        ("wa_maxl", {"exponent_range": [1, 2, 3]}, "`method_kwargs.exponent_range` must be"),
        ("maxl", {"alternation": "step"}, "`method_kwargs.alternation`"),
    ],
)
def test_maxl_options_are_checked_before_any_method_trains(method, options, match):
    from harness.registry import check_run

    config = RunConfig(method=["stl", method], env_id="AuxLabel-Digits-v1", method_kwargs=options)
    with pytest.raises(ConfigError, match=match):
        check_run(config)


def test_wa_maxl_scales_its_weights_as_the_envs_eq8():
    from baselines.maxl import maxl_options

    env = {"weight_exponent_range": [-3, 5]}
    config = RunConfig(method="wa_maxl", env_id="AuxLabel-Digits-v1", env_kwargs=env)
    assert maxl_options(config, weight_aware=True)["exponent_range"] == [-3, 5]
    assert "exponent_range" not in maxl_options(config, weight_aware=False)
    config.method_kwargs = {"exponent_range": [-5, 5]}
    with pytest.raises(ConfigError, match="differs from `env_kwargs.weight_exponent_range`"):
        maxl_options(config, weight_aware=True)


def test_ppo_refuses_a_learned_entropy_coefficient_and_quoted_bools():
    """SB3's PPO takes no 'auto' entropy coefficient (SAC does): it failed mid-training. A
    quoted "false" read as True."""
    from agents.ppo_auxlabel import check_config
    from agents.sac_lossweighting import check_config as check_sac

    for agent, match in (
        ({"ent_coef": "auto"}, "`agent.ent_coef` must be a non-negative number; got 'auto'"),
        ({"normalize_advantage": "false"}, "`agent.normalize_advantage` must be True or False"),
    ):
        config = RunConfig(method="ppo", env_id="AuxLabel-Digits-v1", agent=agent)
        with pytest.raises(ConfigError, match=match):
            check_config(config)
    sac = RunConfig(method="igbv2", env_id="LossWeighting-Cubic-v1", agent={"ent_coef": "auto_0.1"})
    check_sac(sac)  # SAC learns it
