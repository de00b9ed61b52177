"""MultiTaskLearner against hand-worked cases: task-balanced and uniform batches, per-task
loss means, multi-output regression, nMSE per task, masked accuracy, and a resume that keeps
the schedule and the base losses."""

import copy

import pytest
import torch
from torch import nn

from mtl_envs.data.base import MultiTaskDataset, MultiTaskSplit
from mtl_envs.training.multitask_learner import MultiTaskLearner, MultiTaskLearnerConfig


def toy_split(tasks, targets, num_tasks, outputs=1):
    """One sample per entry of ``tasks``; ``targets`` are each sample's own task's targets."""
    mask = torch.nn.functional.one_hot(torch.tensor(tasks), num_tasks).bool()
    y = torch.zeros(len(tasks), num_tasks, outputs)
    y[torch.arange(len(tasks)), torch.tensor(tasks)] = torch.tensor(
        targets, dtype=torch.float32
    ).reshape(len(tasks), outputs)
    inputs = torch.linspace(-1, 1, len(tasks))[:, None]
    return MultiTaskSplit(inputs, y if outputs > 1 else y[..., 0], mask)


def toy_data(train, test=None, num_tasks=2, outputs=1, task_type="regression", num_classes=1):
    train = toy_split(*train, num_tasks, outputs)
    test = train if test is None else toy_split(*test, num_tasks, outputs)
    return MultiTaskDataset(
        name="toy",
        train=train,
        val=train,
        test=test,
        task_type=task_type,
        num_classes=num_classes,
        task_names=[f"t{i}" for i in range(num_tasks)],
        shared_inputs=False,
    )


class Constant(nn.Module):
    """A task network predicting ``value`` for every task and sample."""

    def __init__(self, num_tasks, value):
        super().__init__()
        self.num_tasks, self.value = (
            num_tasks,
            torch.as_tensor(value, dtype=torch.float32),
        )

    def forward(self, x, task):
        return self.value.expand(len(x), -1).clone()

    def forward_all(self, x):
        return self.value.expand(len(x), self.num_tasks, -1).clone()


def test_balanced_batches_take_batch_size_div_n_of_every_task_and_cover_each_task():
    # Tasks of 5, 3 and 4 training samples, batch_size 10: k = 10 // 3 = 3 per task and
    # ceil(12 / 9) = 2 batches; each task cycles through its own permutation.
    data = toy_data(([0] * 5 + [1] * 3 + [2] * 4, [0.0] * 12), num_tasks=3)
    config = MultiTaskLearnerConfig(model="per_task", batch_size=10, device="cpu")
    learner = MultiTaskLearner(config, seed=0, dataset=data)
    learner.begin_epoch()
    assert learner.num_batches == 2 and learner.batches.shape == (2, 9)
    task = data.train.mask.float().argmax(1)
    for b in range(2):
        assert torch.bincount(task[learner.batch_indices(b)], minlength=3).tolist() == [
            3,
            3,
            3,
        ]
    seen = learner.batches.flatten()
    counts = torch.bincount(seen, minlength=12)
    for t in range(3):
        own = counts[task == t]
        assert int(own.min()) >= 1 and int(own.max() - own.min()) <= 1, t  # 6 slots cycle


def test_uniform_batches_of_a_task_subset_hold_only_that_tasks_samples():
    data = toy_data(([0] * 6 + [1] * 10, [1.0] * 16))
    config = MultiTaskLearnerConfig(
        model="per_task", batching="uniform", batch_size=4, device="cpu"
    )
    learner = MultiTaskLearner(config, seed=0, dataset=data, tasks=[0])
    learner.begin_epoch()
    assert [len(b) for b in learner.batches] == [4, 2]
    assert sorted(torch.cat(learner.batches).tolist()) == list(range(6))


def test_resumed_learner_has_the_same_schedule_and_base_losses():
    data = toy_data(([0] * 6 + [1] * 6, [float(i) for i in range(12)]))
    config = MultiTaskLearnerConfig(
        model="per_task", batch_size=4, scheduler_step_epochs=2, device="cpu"
    )
    learner = MultiTaskLearner(config, seed=0, dataset=data)
    for _ in range(3):
        learner.train_epoch()
    learner.begin_epoch()
    learner.train_batch(learner.next_indices())
    resumed = MultiTaskLearner(config, seed=1, dataset=data)
    resumed.load_state_dict(copy.deepcopy(learner.state_dict()))
    assert resumed.scheduler.state_dict() == learner.scheduler.state_dict()
    assert resumed.base_losses is not None
    assert torch.equal(resumed.base_losses, learner.base_losses)
    for run in (learner, resumed):
        while not run.epoch_done:
            run.train_batch(run.next_indices())
        run.end_epoch()  # epoch 4 ends: StepLR(2) halves the rate
    assert resumed.lr == learner.lr == pytest.approx(1e-3 / 4)


def test_regression_losses_average_a_tasks_outputs():
    data = toy_data(([0, 1], [[0.0, 0.0], [0.0, 0.0]]), outputs=2)
    learner = MultiTaskLearner(
        MultiTaskLearnerConfig(model="per_task", batch_size=2, device="cpu"), 0, data
    )
    targets = torch.tensor([[[1.0, 3.0]], [[2.0, 0.0]]])  # (B=2, n=1, d=2)
    (losses,) = learner.per_sample_losses([torch.zeros(2, 2)], targets)
    assert losses.tolist() == pytest.approx([(1 + 9) / 2, (4 + 0) / 2])


def test_evaluated_mse_of_a_multi_output_task_is_the_mean_over_its_outputs():
    train = ([0, 0, 1, 1], [[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    test = ([0, 1], [[1.0, 3.0], [2.0, 0.0]])
    data = toy_data(train, test, outputs=2)
    learner = MultiTaskLearner(
        MultiTaskLearnerConfig(model="per_task", batch_size=4, device="cpu"), 0, data
    )
    learner.net = Constant(2, [0.0, 0.0])
    metrics = learner.evaluate("test")
    assert metrics["t0/mse"] == pytest.approx(5.0) and metrics["t1/mse"] == pytest.approx(2.0)


def test_mean_nmse_divides_each_tasks_mse_by_its_own_target_variance():
    # Training variances 1 (task 0: 1, -1) and 4 (task 1: 2, -2); test targets 1 everywhere,
    # so both MSEs of the zero predictor are 1: nMSE = (1/1 + 1/4) / 2 = 0.625.
    data = toy_data(([0, 0, 1, 1], [1.0, -1.0, 2.0, -2.0]), ([0, 0, 1, 1], [1.0] * 4))
    learner = MultiTaskLearner(
        MultiTaskLearnerConfig(model="per_task", batch_size=4, device="cpu"), 0, data
    )
    learner.net = Constant(2, [0.0])
    assert learner.evaluate("test")["mean_nmse"] == pytest.approx(0.625)


def test_a_learner_of_some_tasks_scales_a_task_as_the_all_task_learner_does():
    # Task 1 has one training sample, no spread of its own: it takes the variance of all
    # training targets pooled, (1, -1, 2): mean 2/3, variance (1 + 25 + 16) / 27 = 14/9. The
    # zero predictor's MSE on its test target 1 is 1, so its nMSE is 9/14, for the learner
    # of task 1 alone (one network per task) as for the learner of both; pooling over the
    # learner's own tasks alone would divide by the floor, 1e-12.
    data = toy_data(([0, 0, 1], [1.0, -1.0, 2.0]), ([0, 1], [1.0, 1.0]))
    config = MultiTaskLearnerConfig(model="per_task", batch_size=2, device="cpu")
    both = MultiTaskLearner(config, 0, data)
    both.net = Constant(2, [0.0])
    assert both.evaluate("test")["mean_nmse"] == pytest.approx((1.0 + 9 / 14) / 2)
    alone = MultiTaskLearner(config, 0, data, tasks=[1])
    alone.net = Constant(1, [0.0])
    assert alone.evaluate("test")["mean_nmse"] == pytest.approx(9 / 14)


def test_accuracy_counts_only_each_tasks_labelled_samples():
    # A classifier always predicting class 0: task 0's two test labels are 1 (accuracy 0),
    # task 1's one label is 0 (accuracy 1). The unlabelled entries hold the placeholder 0.
    data = toy_data(
        ([0, 0, 1, 1], [1.0, 0.0, 0.0, 1.0]),
        ([0, 0, 1], [1.0, 1.0, 0.0]),
        task_type="classification",
        num_classes=2,
    )
    learner = MultiTaskLearner(
        MultiTaskLearnerConfig(model="per_task", batch_size=4, device="cpu"), 0, data
    )
    learner.net = Constant(2, [5.0, 0.0])
    metrics = learner.evaluate("test")
    assert metrics["t0/accuracy"] == 0.0 and metrics["t1/accuracy"] == 1.0
    assert metrics["mean_accuracy"] == pytest.approx(0.5)


def test_balanced_task_losses_are_per_task_means_with_a_shared_encoder():
    # One task per sample, model=None (shared encoder + heads): each task's loss is the mean
    # over the batch's samples of that task (k of them), not over the whole batch.
    data = toy_data(([0] * 4 + [1] * 4, [float(i) for i in range(8)]))
    config = MultiTaskLearnerConfig(
        backbone="mlp",
        backbone_kwargs={"hidden": [4]},
        head_hidden=4,
        batch_size=4,
        device="cpu",
    )
    learner = MultiTaskLearner(config, 0, data)
    learner.begin_epoch()
    idx = learner.batch_indices(0)
    losses, _ = learner.task_losses(idx)
    split = data.train
    with torch.no_grad():
        outputs = learner.net(split.inputs[idx])
    task = split.mask[idx].float().argmax(1)
    for t in range(2):
        own = task == t
        expected = ((outputs[t][own, 0] - split.targets[idx][own, t]) ** 2).mean()
        assert float(losses[t].detach()) == pytest.approx(float(expected), rel=1e-5)


def test_balanced_batches_of_shared_inputs_drop_the_last_partial_batch():
    # Every sample labelled for both tasks: 10 samples, batch_size 4 -> 2 full batches of
    # distinct samples (the remainder is dropped), not a crash on a third, partial one.
    mask = torch.ones(10, 2, dtype=torch.bool)
    split = MultiTaskSplit(torch.linspace(-1, 1, 10)[:, None], torch.zeros(10, 2), mask)
    data = MultiTaskDataset(
        name="toy",
        train=split,
        val=split,
        test=split,
        task_type="regression",
        num_classes=1,
        task_names=["a", "b"],
        shared_inputs=True,
    )
    config = MultiTaskLearnerConfig(backbone="mlp", batch_size=4, device="cpu")
    learner = MultiTaskLearner(config, 0, data)
    learner.begin_epoch()
    assert learner.num_batches == 2 and learner.batches.shape == (2, 4)
    assert len(set(learner.batches.flatten().tolist())) == 8
