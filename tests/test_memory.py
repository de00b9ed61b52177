"""Memory stays flat over many episodes."""

import gc
import os
from pathlib import Path

import gymnasium as gym
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"train_batch_size": 20, "eval_batch_size": 32}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("LossWeighting-Cubic-v1", {"warmup_epochs": 1, "epochs": 2}),
        ("AuxLabel-Digits-v1", {**SMALL, "max_batches": 2}),
    ],
)
def test_memory_stays_flat_over_50_episodes(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    env.action_space.seed(0)

    def episode(seed):
        env.reset(seed=seed)
        while True:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                return

    for seed in range(5):  # allocator and caches settle
        episode(seed)
    before, tensors = rss_bytes(), live_tensors()
    for seed in range(50):
        episode(seed)
    # No tensor outlives its episode (a kept snapshot per episode would add its parameters'
    # count 50 times), and the process grows by less than a leak of 1 MB per episode would.
    assert live_tensors() <= tensors + 5
    growth = rss_bytes() - before
    assert growth < 16 * 2**20, f"RSS grew {growth / 2**20:.1f} MB over 50 episodes"


def live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))
