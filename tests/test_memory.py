"""Memory stays flat over many episodes."""

import os
from pathlib import Path

import gymnasium as gym
import pytest

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
    before = rss_bytes()
    for seed in range(50):
        episode(seed)
    growth = (rss_bytes() - before) / before
    assert growth < 0.10, f"RSS grew {100 * growth:.1f}% over 50 episodes"
