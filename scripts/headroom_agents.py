"""Train the project's agents on the headroom ids and score them like the reference policies.

    python scripts/headroom_agents.py [--seeds 0 1 2 3 4] [--out docs/results/headroom_agents]
        [--only sac ppo] [--lr LR] [--episodes 15 [--score-at 5 10 15]]

* ``LossWeighting-CubicScales-v1``: SB3 SAC over ``--episodes`` whole training runs (one
  episode each); the deterministic policy then runs one more episode, whose final test
  ``mean_nmse`` is its score. ``--score-at`` also scores it after fewer runs of the same
  training, one result per count (setting ``runs=<count>``).
* ``TaskGrouping-Digits10Scarce-v1``: SB3 PPO on rewards from the validation gains (the
  env's default), ``--grouping-steps`` env steps; its deterministic selection is scored on
  the test gains.

Tuning budget: the learning rate only, from a small grid, chosen on the validation metric of
one tuning seed that is not among the reported seeds. Each (agent, seed) writes a result in
the common schema (``mtl-envs compare`` reads it; ``mtl_envs.normalized_score`` maps it onto
the reference policies' scale) with its learning curve (return per episode), and a PNG of
the curves of every result kept in ``--out`` lands beside them.

PPO on ``AuxLabel-CIFAR100Small-v0`` runs through the harness, with RL-AUX's agent settings
and no tuning (about 25 minutes per seed on one thread)::

    mtl-envs run configs/auxlabel_cifar100small_ppo.yaml output_dir=results/auxlabel_small
    python scripts/docs_tables.py keep results/auxlabel_small headroom_agents
    python scripts/headroom_agents.py --plot-only

Its curve is the mean reward per batch of each train-agent epoch (its episodes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import mtl_envs
from harness.config import RunConfig, float_above, positive_int
from harness.results import make_result, run_dir
from mtl_envs.io import atomic_save, atomic_write_json, read_json
from mtl_envs.utils import check_seeds

LW_ID = "LossWeighting-CubicScales-v1"
TG_ID = "TaskGrouping-Digits10Scarce-v1"
TUNING_SEED = 100
SAC_GRID = (3e-4, 1e-3)
PPO_GRID = (3e-4, 1e-3)


def episode_returns(env: gym.Env) -> list[float]:
    return [float(r) for r in env.get_episode_rewards()]


def play(model, env: gym.Env, seed: int) -> tuple[float, dict[str, Any]]:
    """One episode of ``model``'s deterministic policy: its return and the last info."""
    obs, info = env.reset(seed=seed)
    done, total = False, 0.0
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        done = terminated or truncated
    return total, info


def check_score_at(counts: list[int], episodes: int) -> None:
    if counts != sorted(set(counts)) or counts[0] < 1 or counts[-1] != episodes:
        raise ValueError(
            f"`score_at` ({counts}) must increase from 1 or more and end at `episodes` "
            f"({episodes})."
        )


def run_sac(
    seed: int, lr: float, episodes: int, score_at: list[int] | None = None
) -> dict[str, Any]:
    """SAC over ``episodes`` training runs, then one deterministic run on a new seed.

    With ``score_at`` (increasing run counts, the last one ``episodes``), the policy is
    also scored after each of those many training runs: ``scored_after`` maps each count
    to its run. Scoring does not touch the agent's state or the training env, so the policy
    after 15 of 45 runs is the one a 15-run training gives. SB3 trains in rounds of 50
    steps, so a count ends at the first round boundary past its last step (up to 49 steps
    into the next run).
    """
    from stable_baselines3 import SAC
    from stable_baselines3.common.monitor import Monitor

    counts = list(score_at or [episodes])
    check_score_at(counts, episodes)
    env = Monitor(gym.make(LW_ID))
    steps_per_episode = env.unwrapped.learner.num_batches * (
        env.unwrapped.epochs - env.unwrapped.warmup_epochs
    )
    model = SAC(
        "MlpPolicy",
        env,
        seed=seed,
        learning_rate=lr,
        buffer_size=10_000,
        gamma=0.99,
        train_freq=(50, "step"),
        gradient_steps=50,
        learning_starts=steps_per_episode,  # the first run acts at random
        device="cpu",
        verbose=0,
    )
    scored_runs, done, start = {}, 0, time.perf_counter()
    for count in counts:
        # Later calls continue the step count, so learning_starts is not applied again.
        model.learn((count - done) * steps_per_episode, reset_num_timesteps=done == 0)
        done = count
        scored = gym.make(LW_ID)
        total, info = play(model, scored, 1000 + seed)
        test, val = scored.unwrapped.evaluate("test"), scored.unwrapped.evaluate("val")
        scored.close()
        scored_runs[count] = {
            "final": {"test/mean_nmse": test["mean_nmse"], "val/mean_nmse": val["mean_nmse"]},
            "curve": episode_returns(env)[:count],
            "scored_return": total,
            "scored_weights": info["weights"],  # the task weights of the scored run's last step
            "wall_s": time.perf_counter() - start,
        }
    env.close()
    return {**scored_runs[episodes], "scored_after": scored_runs}


def run_ppo(seed: int, lr: float, steps: int) -> dict[str, Any]:
    """PPO on the grouping env's validation-gain rewards; its selection on the test gains."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(gym.make(TG_ID))
    model = PPO(
        "MultiInputPolicy",
        env,
        seed=seed,
        learning_rate=lr,
        n_steps=256,
        batch_size=64,
        n_epochs=10,
        gamma=1.0,
        ent_coef=0.01,
        device="cpu",
        verbose=0,
    )
    model.learn(steps)
    curve = episode_returns(env)
    total, info = play(model, env, seed)
    grouping = env.unwrapped
    final = {
        "test/total_gain": grouping.evaluate("test")["total_gain"],
        "val/total_gain": grouping.evaluate("val")["total_gain"],
    }
    return {"final": final, "curve": curve, "scored_return": total, "groups": info["selected"]}


def tune(train, grid, metric: str, higher: bool, **kwargs) -> float:
    """The learning rate of ``grid`` with the best validation ``metric`` on the tuning seed."""
    scores = {}
    for lr in grid:
        print(f"  tuning on seed {TUNING_SEED}: lr {lr:g} ...", flush=True)
        scores[lr] = train(TUNING_SEED, lr, **kwargs)["final"][metric]
        print(f"  tuning ({metric}): lr {lr:g}: {scores[lr]:.4f}", flush=True)
    return (max if higher else min)(scores, key=scores.get)


def write(
    out: Path,
    env_id: str,
    method: str,
    seed: int,
    run: dict,
    agent: dict,
    wall: float,
    setting: str | None = None,
):
    config = RunConfig(method=method, env_id=env_id, seeds=[seed], output_dir=str(out), agent=agent)
    result = make_result(
        config,
        method,
        seed,
        final=run["final"],
        setting=setting,
        wall_time_s=wall,
        extra={key: run[key] for key in ("curve", "scored_return", "scored_weights") if key in run},
    )
    atomic_write_json(run_dir(config, method, seed, setting) / "result.json", result)
    return result


def kept_curves(out: Path) -> dict[str, tuple[str, dict[int, list[float]]]]:
    """Learning curves of every result kept below ``out``: panel title -> (y label, curve by
    seed). A result's ``curve`` holds its episode returns; the AuxLabel PPO runs' per-epoch
    ``agent/reward`` is the mean reward per batch of each train-agent episode. A result with
    neither (a baseline's run beside the agents) has no curve and is left out. Where one
    training was scored at several run counts (settings ``runs=<count>``), its longest curve
    stands for it."""
    found: dict[tuple[str, int], tuple[str, list[float]]] = {}
    for path in sorted(out.glob("**/seed*/result.json")):
        result = read_json(path)
        if "curve" in result:
            label, curve = "episode return", result["curve"]
        else:
            label = "mean reward per batch of an episode"
            curve = [e["agent/reward"] for e in result.get("epochs", []) if "agent/reward" in e]
        if not curve:
            continue
        title = f"{result['method'].upper()} on {result['env_id']}"
        key = (title, result["seed"])
        if key not in found or len(curve) > len(found[key][1]):
            found[key] = (label, curve)
    panels: dict[str, tuple[str, dict[int, list[float]]]] = {}
    for (title, seed), (label, curve) in sorted(found.items()):
        panels.setdefault(title, (label, {}))[1][seed] = curve
    return panels


def plot_curves(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = kept_curves(out)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (title, (label, runs)) in zip(axes[0], panels.items()):
        for seed, curve in runs.items():
            y = np.asarray(curve, dtype=float)
            window = max(1, len(y) // 50)  # PPO's thousands of short episodes: a moving mean
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(len(smooth)) + window, smooth, alpha=0.8, label=f"seed {seed}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("episode")
        ax.set_ylabel(label + (f" (mean of {window})" if window > 1 else ""))
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        return atomic_save(
            out / "learning_curves.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png")
        )
    finally:
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--episodes", type=positive_int, default=15, help="SAC training runs")
    parser.add_argument(
        "--score-at",
        type=int,
        nargs="+",
        help="also score SAC's policy after these many training runs (the last one "
        "--episodes), one result per count under the setting runs=<count>",
    )
    parser.add_argument("--grouping-steps", type=positive_int, default=20_000, help="PPO env steps")
    parser.add_argument(
        "--only", choices=("sac", "ppo"), nargs="+", default=["sac", "ppo"], help="agents to run"
    )
    parser.add_argument(
        "--lr", type=float_above(0), help="learning rate to use instead of tuning it on seed 100"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results/headroom_agents"))
    parser.add_argument(
        "--plot-only", action="store_true", help="only redraw the curves of the kept results"
    )
    args = parser.parse_args()
    try:
        args.seeds = check_seeds("--seeds", args.seeds)  # distinct seeds >= 0
    except ValueError as error:
        parser.error(str(error))
    if args.lr is None and TUNING_SEED in args.seeds and not args.plot_only:
        parser.error(
            f"--seeds: {TUNING_SEED} is the seed the learning rate is tuned on; report other "
            "seeds, or give --lr"
        )
    if args.score_at:
        try:  # before any training
            check_score_at(args.score_at, args.episodes)
        except ValueError as error:
            parser.error(
                str(error).replace("`score_at`", "--score-at").replace("`episodes`", "--episodes")
            )
    if args.plot_only:
        if not kept_curves(args.out):
            parser.error(f"--out {args.out}: no kept results (seed*/result.json) to plot")
        print(f"plot: {plot_curves(args.out)}")
        return
    torch.set_num_threads(1)

    sac_budget = {"episodes": args.episodes}
    experiments = (
        # id, method, train function, its budget, learning-rate grid, tuning metric, higher
        (LW_ID, "sac", run_sac, sac_budget, SAC_GRID, "mean_nmse", False),
        (TG_ID, "ppo", run_ppo, {"steps": args.grouping_steps}, PPO_GRID, "total_gain", True),
    )
    for env_id, method, train, budget, grid, metric, higher in experiments:
        if method not in args.only:
            continue
        print(f"{env_id}: {method.upper()}")
        tuned = args.lr is None
        lr = tune(train, grid, f"val/{metric}", higher, **budget) if tuned else args.lr
        extra = {"score_at": args.score_at} if method == "sac" and args.score_at else {}
        agent = {"algorithm": method.upper(), "learning_rate": lr, "tuned": tuned, **budget}
        for seed in args.seeds:
            start = time.perf_counter()
            run = train(seed, lr, **budget, **extra)
            wall = time.perf_counter() - start
            # One result per scored run count, or the one result of the whole training.
            if extra:
                runs = {f"runs={k}": v for k, v in run["scored_after"].items()}
            else:
                runs = {None: run}
            for setting, one in runs.items():
                config = {**agent, **extra}
                write(args.out, env_id, method, seed, one, config, one.get("wall_s", wall), setting)
                value = one["final"][f"test/{metric}"]
                score = mtl_envs.normalized_score(env_id, value)
                where = f" {setting}" if setting else ""
                print(f"  seed {seed}{where}: test {metric} {value:.4f} (normalized {score:.2f})")
    print(f"plot: {plot_curves(args.out)}")


if __name__ == "__main__":
    main()
