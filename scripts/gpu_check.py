"""GPU readiness in minutes: the device, the batched vector form, the paper protocol's
timings, the precision options and every id, on the device.

    python scripts/gpu_check.py --data-root DIR [--full-size] [--budget-s 420] [--out gpu.json]

Sections (``--sections`` picks some), in order of what matters most. Each gets a share of
the time ``--budget-s`` has left when it starts (what one leaves over goes to the next); a
run that no longer fits says so and is skipped, and one that fails records its error, so the
sections after it still run. The JSON is rewritten after every section, so a run cut short
keeps what it did.

1. device: torch, CUDA, the device's name and memory, bfloat16 support;
2. batched vector form: LossWeighting-Cubic-v1 and -Digits10-v1 with K = 4 stacked runs on
   ``device="auto"`` against four single envs seeded seed + k on the same device (the largest
   relative differences of observations and rewards over 9 steps), and env steps per second
   of a single env and of K = 8 and 32 stacked runs;
3. protocol: RL-AUX's protocol on AuxLabel-CIFAR100-v1 (VGG16 main network, B_T = 100):
   ``stl``, ``ppo`` (alternating cycles), ``human`` and ``maxl`` for up to
   ``--protocol-epochs`` epochs each: the seconds of every training epoch (cycle), of one
   validation + test evaluation, and PPO's cycle split into agent updates, rollout and
   train-main. ``--full-size`` tiles the data to CIFAR-100's 50,000 + 10,000 images, so a
   carried subset (``scripts/offline_bundle.py``) gives timings at the paper's scale;
4. precision: ``amp`` (bfloat16 autocast) x ``channels_last``, ``stl`` for ``--epochs``
   epochs each from one seed on the data as given (never tiled): seconds per epoch and test
   accuracy;
5. ids: every registered id built on ``device="auto"`` and stepped three times with random
   actions (ids whose data or optional package is missing are reported, not failed).

Without CUDA it says so and runs on the CPU with the small CNN on ``--subset`` training
images (default 500), so the script itself is checked anywhere. The tables printed at the
end are ``harness.gpu_report``'s, which also renders a kept report into ``docs/gpu.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO

import mtl_envs
from harness.bench import positive_int
from harness.config import float_above
from harness.gpu_report import format_gpu_report
from harness.recording import EpochRecorder
from harness.registry import run_quietly
from harness.timing import TIMERS, reset_timers, time_method
from mtl_envs.data import DatasetNotFoundError
from mtl_envs.data.images import read_cifar100, tile_cifar100
from mtl_envs.families import family_of
from mtl_envs.io import atomic_write_json
from mtl_envs.models import BACKBONES
from mtl_envs.training import AuxLearnerConfig
from mtl_envs.utils import resolve_data_root

PROTOCOL_ID = "AuxLabel-CIFAR100-v1"
# Shares of the time left when a section starts (later sections' shares included).
SECTIONS = {"batched_vector": 0.08, "protocol": 0.6, "precision": 0.17, "ids": 0.15}
# Within the protocol: each method's share, and an epoch's (cycle's) cost against an stl
# epoch before one is measured (a PPO cycle is one train-agent epoch with 10 PPO epochs per
# batch plus one train-main epoch: about 14 plain epochs on the CPU, benchmarks/ppo_cycle.py).
METHOD_SHARES = {"stl": 0.15, "ppo": 0.5, "human": 0.1, "maxl": 0.25}
METHOD_COSTS = {"stl": 1.0, "ppo": 14.0, "human": 1.2, "maxl": 3.0}

# Seconds the ids section must have left to build an ETAP-fitted id.
ETAP_SECONDS = 120.0
# torch's cuDNN flags as the process starts. SB3's seeding sets deterministic=True and
# benchmark=False for the whole process (stable_baselines3.common.utils.set_random_seed);
# the check puts these back after it and before every run, so every method, PPO included,
# is timed under the same flags.
CUDNN_DEFAULTS = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)


class OutOfTime(Exception):
    """Raised at an epoch's end once the check's whole budget is spent."""


class EpochClock:
    """The training seconds of every epoch recorded while installed, from the end of one
    ``EpochRecorder.record`` to the start of the next. With no checkpoints
    (``run_quietly``) that is exactly one ``train_epoch``: an epoch, or for PPO an
    alternating cycle with its two saves. Past ``stop_at`` (the run's own deadline, never
    later than ``end``, the whole check's) it ends the run at the next epoch's end that
    another epoch would follow, by raising :class:`OutOfTime`; a run whose last epoch is
    done goes on to its evaluation."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.timers: list[dict[str, float]] = []  # TIMERS at each epoch's end
        self.end = self.stop_at = float("inf")
        self.epochs = 0  # the current run's planned epochs

    def deadline(self, epochs: int, seconds: float) -> None:
        """Stop the next run, of ``epochs`` epochs, at the first epoch's end after
        ``seconds`` from now: a run whose epochs cost more than foreseen overruns its share
        by one epoch (and its evaluation) at most."""
        self.epochs = epochs
        self.stop_at = min(self.end, time.perf_counter() + seconds)

    def clear(self) -> None:
        self.seconds.clear()
        self.timers.clear()
        reset_timers()

    def install(self) -> None:
        record, clock = EpochRecorder.record, self

        def timed_record(recorder, epoch, metrics):
            _sync()
            now = time.perf_counter()
            clock.seconds.append(now - getattr(recorder, "_clock", recorder.start))
            clock.timers.append(dict(TIMERS))
            if now > clock.stop_at and len(clock.seconds) < clock.epochs:
                raise OutOfTime(f"stopped after {len(clock.seconds)} epochs: out of time")
            out = record(recorder, epoch, metrics)
            _sync()
            recorder._clock = time.perf_counter()
            return out

        EpochRecorder.record = timed_record


CLOCK = EpochClock()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _restore_cudnn_flags_after_seeding() -> None:
    """SB3 PPO's seeding switches cuDNN to deterministic algorithms for the whole process;
    put the flags back right after it, so its cycles are timed as the plain runs are."""
    original = PPO.set_random_seed

    def set_random_seed(self, seed=None):
        original(self, seed)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = CUDNN_DEFAULTS

    PPO.set_random_seed = set_random_seed


@contextlib.contextmanager
def _float32_exact():
    """TF32 off (float32 convolutions and matmuls at full precision) for a block, so that
    comparing two computations of the same numbers sees float32 rounding only."""
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _reason(outcome: dict[str, Any]) -> str:
    return outcome.get("error") or outcome.get("skipped") or "unknown"


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type when the message is empty)."""
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


class Budget:
    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def share(self, name: str, weights: dict[str, float]) -> float:
        """``name``'s share of the time left, against it and the names after it."""
        names = list(weights)
        rest = sum(weights[n] for n in names[names.index(name) :])
        return max(self.left(), 0.0) * weights[name] / rest


def device_report() -> dict[str, Any]:
    report: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if report["cuda"]:
        props = torch.cuda.get_device_properties(0)
        report.update(
            device=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            bf16=torch.cuda.is_bf16_supported(),
            cuda_version=torch.version.cuda,
            # TF32 rounds float32 convolutions (and matmuls, when on) to a 10-bit mantissa;
            # the batched-vs-single comparison turns it off, the timings keep the default.
            tf32_convolutions=torch.backends.cudnn.allow_tf32,
            tf32_matmuls=torch.backends.cuda.matmul.allow_tf32,
        )
    return report


def _max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference over the largest magnitude of ``b`` (a reward near 0 does not
    turn rounding into a large relative error)."""
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def _steps_per_second(env: gym.Env | gym.vector.VectorEnv, n: int, seconds: float) -> float:
    """Env steps per second over about ``seconds`` (``n`` runs per step), resets included."""
    single = isinstance(env, gym.Env)
    env.reset(seed=0)
    env.step(env.action_space.sample())  # first step: lazy initialisation
    _sync()
    start, steps = time.perf_counter(), 0
    while steps == 0 or time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if single and (terminated or truncated):
            env.reset()  # the vector form resets its runs itself
        steps += 1
    _sync()
    return n * steps / (time.perf_counter() - start)


BATCHED_KWARGS = {"device": "auto", "warmup_epochs": 1, "epochs": 3}


def _stacked(env_id: str, k: int) -> gym.vector.VectorEnv:
    return gym.make_vec(
        env_id, num_envs=k, vectorization_mode="vector_entry_point", **BATCHED_KWARGS
    )


def check_stacked_runs(env_id: str, seconds: float) -> dict[str, Any]:
    """K = 4 stacked runs against single envs seeded seed + k, both on ``device="auto"`` and
    with TF32 off; then env steps per second (single env, K = 8 and 32, the device's default
    precision), about ``seconds`` each."""
    vector = _stacked(env_id, 4)
    singles = [gym.make(env_id, **BATCHED_KWARGS) for _ in range(4)]
    with _float32_exact():
        v_obs, _ = vector.reset(seed=0)
        s_obs = np.stack([env.reset(seed=k)[0] for k, env in enumerate(singles)])
        obs_diff, reward_diff = _max_rel_diff(v_obs, s_obs), 0.0
        rng = np.random.default_rng(0)
        for _ in range(9):  # across an autoreset (3 batches per epoch on Cubic)
            actions = rng.uniform(-0.9, 0.9, vector.action_space.shape).astype(np.float32)
            v_obs, v_rew, *_ = vector.step(actions)
            steps = [env.step(a) for env, a in zip(singles, actions)]
            # Same-step autoreset: a single env that ended starts its next run at once.
            s_obs = np.stack(
                [env.reset()[0] if s[2] or s[3] else s[0] for env, s in zip(singles, steps)]
            )
            obs_diff = max(obs_diff, _max_rel_diff(v_obs, s_obs))
            rewards = np.array([s[1] for s in steps])
            reward_diff = max(reward_diff, _max_rel_diff(v_rew, rewards))
    rates = {}
    for k in (8, 32):
        env = _stacked(env_id, k)
        rates[str(k)] = _steps_per_second(env, k, seconds)
        env.close()
    result = {
        "where": str(vector.unwrapped.learner.flat.device),
        "max_rel_diff_obs": obs_diff,
        "max_rel_diff_reward": reward_diff,
        "single_steps_per_s": _steps_per_second(singles[0], 1, seconds),
        "steps_per_s": rates,
    }
    for env in (vector, *singles):
        env.close()
    return result


def check_batched_vector(budget: float, results: dict[str, Any]) -> dict[str, Any]:
    """The LossWeighting batched vector form on Cubic and Digits10 (:func:`check_stacked_runs`)
    into ``results``, each measurement a tenth of ``budget``."""
    for env_id in ("LossWeighting-Cubic-v1", "LossWeighting-Digits10-v1"):
        results[env_id] = guarded(check_stacked_runs, env_id, budget / 10)
        print(f"  {env_id}: {results[env_id]}", flush=True)
    return results


def ppo_split(seconds: list[float], timers: list[dict[str, float]]) -> dict[str, float]:
    """Seconds of PPO's updates, the rollout (policy forwards and env steps, which train the
    main network's copy) and the train-main epoch, per cycle: the mean over the cycles after
    the first (the first alone when it is the only one)."""
    rows, before = [], {"learn": 0.0, "ppo_updates": 0.0}
    for total, after in zip(seconds, timers):
        learn = after.get("learn", 0.0) - before["learn"]
        update = after.get("ppo_updates", 0.0) - before["ppo_updates"]
        rows.append({"ppo updates": update, "rollout": learn - update, "train-main": total - learn})
        before = {"learn": after.get("learn", 0.0), "ppo_updates": after.get("ppo_updates", 0.0)}
    later = rows[1:] or rows
    return {k: sum(r[k] for r in later) / len(later) for k in later[0]}


def timed_run(
    method: str, env_kwargs: dict[str, Any], epochs: int, out: str, seconds: float
) -> dict[str, Any]:
    """One quiet run through the harness with the epochs clocked; evaluation once, at the
    end (validation, then test on the final network). A run still training ``seconds``
    from now stops at the end of an epoch that is not its last, keeping its epochs'
    seconds, with no evaluation."""
    CLOCK.clear()
    CLOCK.deadline(epochs, seconds)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = CUDNN_DEFAULTS
    start = time.perf_counter()
    try:
        result = run_quietly(
            method,
            PROTOCOL_ID,
            env_kwargs=env_kwargs,
            epochs=epochs,
            eval_every=epochs,
            output_dir=out,
        )
        run = {
            "eval_seconds": result["eval_time_s"],
            "test_accuracy": result["final"]["test/accuracy"],
        }
    except OutOfTime as stop:  # the epochs trained in full; only their records are missing
        run = {"stopped": str(stop), "eval_seconds": None}
    run.update(
        epoch_seconds=list(CLOCK.seconds),
        wall_seconds=time.perf_counter() - start,
        cudnn_deterministic=torch.backends.cudnn.deterministic,
    )
    if method == "ppo":
        run["split"] = ppo_split(CLOCK.seconds, CLOCK.timers)
        run["agent_backbone"] = env_kwargs["backbone"]  # it mirrors the main network's
    return run


def guarded(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)``, or ``{"error": ...}`` with the traceback printed: one failing part of
    a first run on a new device must not cost the parts after it."""
    try:
        return fn(*args)
    except DatasetNotFoundError as err:  # data not there: say so, nothing to trace
        return {"skipped": first_line(err)}
    except Exception as err:
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {first_line(err)}"}


def run_protocol(
    env_kwargs: dict[str, Any],
    tiled: bool,
    max_epochs: int,
    budget: float,
    out: str,
    results: dict[str, Any],
    save: Callable[[], None],
) -> dict[str, Any]:
    """As many epochs (cycles) of each method as its share of ``budget`` allows, into
    ``results``, calling ``save`` after each method."""
    clock = Budget(budget)
    scale: dict[str, float] = {}  # stl's measured epoch, evaluation and start-up seconds
    for method in METHOD_SHARES:
        share = clock.share(method, METHOD_SHARES)
        if method == "stl":  # runs whatever the budget: its epoch sets the scale
            epochs, deadline = max_epochs, clock.left()
        elif not scale:  # stl failed: one epoch each, while time is left
            epochs, deadline = (1 if clock.left() > 0 else 0), share
        else:
            fixed = scale["eval"] + scale["startup"]
            per_epoch = METHOD_COSTS[method] * scale["epoch"]
            epochs, deadline = min(max_epochs, int((share - fixed) // per_epoch)), share
            if method == "ppo" and epochs < 1 and fixed + per_epoch < 0.8 * clock.left():
                # The cycle is the protocol's headline: run one on the others' time.
                epochs, deadline = 1, 0.8 * clock.left()
        if epochs < 1:
            results[method] = {"skipped": "out of budget"}
        else:
            results[method] = {"running": f"{epochs} epochs from {budget - clock.left():.0f} s"}
            save()  # a check killed during this run still shows where it was
            run = guarded(timed_run, method, env_kwargs, epochs, f"{out}/{method}", deadline)
            if tiled:  # copies of test images were trained on: the accuracy means nothing
                run.pop("test_accuracy", None)
            results[method] = run
            if method == "stl" and run.get("eval_seconds") is not None:
                seconds = run["epoch_seconds"]
                scale = {
                    "epoch": statistics.median(seconds),
                    "eval": run["eval_seconds"],
                    "startup": run["wall_seconds"] - sum(seconds) - run["eval_seconds"],
                }
        print(f"  {method}: {results[method]}", flush=True)
        save()
    return results


def run_precision(
    env_kwargs: dict[str, Any],
    epochs: int,
    budget: float,
    out: str,
    results: dict[str, Any],
    save: Callable[[], None],
) -> dict[str, Any]:
    """``stl`` from one seed with each of amp x channels_last, into ``results``; each run
    starts only while the longest so far still fits."""
    clock = Budget(budget)
    for amp in (False, True):
        for channels_last in (False, True):
            name = f"amp={amp} channels_last={channels_last}"
            spent = [r["wall_seconds"] for r in results.values() if "wall_seconds" in r]
            if clock.left() <= max(spent, default=0.0):
                results[name] = {"skipped": "out of budget"}
            else:
                kwargs = {**env_kwargs, "amp": amp, "channels_last": channels_last}
                results[name] = {"running": f"from {budget - clock.left():.0f} s"}
                save()
                results[name] = guarded(
                    timed_run, "stl", kwargs, epochs, f"{out}/{name}", clock.left()
                )
            print(f"  {name}: {results[name]}", flush=True)
            save()
    return results


def step_every_id(data_root: str | None, cuda: bool, budget: float) -> Iterator[tuple[str, str]]:
    """Each registered id of its family's current version on ``device="auto"``, reset and
    stepped three times: its status as it finishes. Ids whose construction trains networks
    (ETAP's fitted gains: an affinity run and ten group runs on CIFAR-100) come last, only
    with ``ETAP_SECONDS`` to spare, and never on the CPU."""
    clock = Budget(budget)
    current = [i for i in mtl_envs.registered_ids() if i.endswith(f"-{family_of(i).version}")]
    ids = sorted(current, key=lambda i: gym.spec(i).kwargs.get("gains") == "etap")
    for env_id in ids:
        kwargs: dict[str, Any] = {"data_root": data_root} if data_root else {}
        etap = gym.spec(env_id).kwargs.get("gains") == "etap"
        if not cuda and etap:
            yield env_id, "skipped on CPU: building it trains the ETAP protocol's networks"
            continue
        if clock.left() <= (ETAP_SECONDS if etap else 0):
            yield env_id, "skipped: out of budget"
            continue
        if family_of(env_id).name == "LossWeighting":
            kwargs.update(warmup_epochs=1, epochs=3)
        start = time.perf_counter()
        try:
            env = gym.make(env_id, **kwargs)
            env.reset(seed=0)
            for _ in range(3):
                env.step(env.action_space.sample())
            learner = getattr(env.unwrapped, "learner", None)
            where = str(next(learner.net.parameters()).device) if learner else "table"
            status = f"ok on {where} ({time.perf_counter() - start:.1f} s)"
            env.close()
        except DatasetNotFoundError as err:
            status = f"skipped: {first_line(err)[:90]}"
        except ImportError as err:
            missing = f"{err.name} is not installed" if err.name else str(err)
            status = f"skipped: {missing}"
        except Exception as err:
            traceback.print_exc()
            status = f"error: {type(err).__name__}: {first_line(err)[:150]}"
        yield env_id, status


def report_progress(report: dict[str, Any], budget: Budget, path: str | None) -> None:
    report["elapsed_s"] = budget.elapsed()
    if path:
        atomic_write_json(path, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None, help="folder with cifar-100-python/")
    parser.add_argument("--full-size", action="store_true", help="tile the data to 50k + 10k")
    parser.add_argument("--subset", type=positive_int, default=None, help="training images to use")
    parser.add_argument(
        "--protocol-epochs", type=positive_int, default=3, help="most epochs per method"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=3, help="epochs of each precision run"
    )
    parser.add_argument("--budget-s", type=float_above(0), default=420.0, help="seconds for it all")
    parser.add_argument(
        "--backbone",
        default=None,
        choices=list(BACKBONES),
        help="main network (default: vgg16 on a GPU, small_cnn on CPU)",
    )
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=list(SECTIONS),
        default=list(SECTIONS),
        help="the sections to run (default: all, in this order)",
    )
    args = parser.parse_args()
    budget = Budget(args.budget_s)
    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {"device": device_report(), "budget_s": args.budget_s}
    print(json.dumps(report["device"], indent=2))
    if not cuda:
        print("No CUDA device: the checks below run on the CPU, on a small subset.")
    save = lambda: report_progress(report, budget, args.out)  # noqa: E731
    save()
    CLOCK.install()
    CLOCK.end = budget.start + args.budget_s
    _restore_cudnn_flags_after_seeding()
    time_method(PPO, "learn", "learn")
    time_method(PPO, "train", "ppo_updates")

    env_kwargs: dict[str, Any] = {
        "backbone": args.backbone or ("vgg16" if cuda else "small_cnn"),
        "device": "auto",
        "train_subset": args.subset or (None if cuda else 500),
    }
    if args.data_root:
        env_kwargs["data_root"] = args.data_root
    if args.subset is not None and args.subset < AuxLearnerConfig.eval_batch_size:
        env_kwargs["eval_batch_size"] = args.subset  # PPO's reward: B_R distinct images
    scratch = tempfile.TemporaryDirectory()

    def protocol(share: float, results: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        kwargs = dict(env_kwargs)
        data: dict[str, Any] = {"train_images": env_kwargs["train_subset"] or "all"}
        if args.full_size:
            root = args.data_root or resolve_data_root(None)
            data["tiled_from"] = len(read_cifar100(Path(root)).train)
            kwargs["data_root"] = f"{scratch.name}/data"
            tile_cifar100(root, kwargs["data_root"], 50_000, 10_000)
            data["train_images"] = env_kwargs["train_subset"] or 45_000
        report["data"] = data
        print(f"  {PROTOCOL_ID}, {env_kwargs['backbone']}, {data}", flush=True)
        share -= time.perf_counter() - start
        out = f"{scratch.name}/protocol"
        return run_protocol(kwargs, args.full_size, args.protocol_epochs, share, out, results, save)

    def precision(share: float, results: dict[str, Any]) -> dict[str, Any]:
        out = f"{scratch.name}/precision"
        return run_precision(env_kwargs, args.epochs, share, out, results, save)

    def ids(share: float, results: dict[str, Any]) -> dict[str, Any]:
        for env_id, status in step_every_id(args.data_root, cuda, share):
            print(f"  {env_id}: {status}", flush=True)
            results[env_id] = status
            save()  # building one can take minutes
        return results

    sections: dict[str, Callable[[float, dict[str, Any]], dict[str, Any]]] = {
        "batched_vector": check_batched_vector,
        "protocol": protocol,
        "precision": precision,
        "ids": ids,
    }
    chosen = {name: SECTIONS[name] for name in SECTIONS if name in args.sections}
    with scratch:
        for name in chosen:
            print(name, flush=True)
            part = report[name] = {}
            outcome = guarded(sections[name], budget.share(name, chosen), part)
            if outcome is not part:  # it raised: keep what it wrote, and why it stopped
                if part:
                    report.setdefault("errors", {})[name] = _reason(outcome)
                else:
                    report[name] = outcome
            save()
    print()
    print(format_gpu_report(report))
    if args.out:
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
