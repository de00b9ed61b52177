"""Recording a run: the per-epoch evaluate-log-record cycle, TensorBoard and the result."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.config import RunConfig
from harness.results import make_result, run_dir
from mtl_envs.families import family_of
from mtl_envs.io import atomic_write_json, is_numpy_scalar


class TensorBoardLog:
    """A SummaryWriter that can be switched off; tags are namespaced ``train/``, ``eval/``..."""

    def __init__(self, log_dir: Path | None, purge_step: int | None = None):
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops the folder's events from that step on (TensorBoard hides them).
            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class EpochRecorder:
    """Evaluate, log and keep the best epoch of a run; write the result.

    Validation is evaluated every ``config.eval_every`` epochs and after the last one; it
    picks the best epoch. The test split is evaluated twice per run, at the end: on the final
    network, and on the network of the best epoch, which the recorder keeps a copy of
    (``models``; without them the test split is evaluated whenever validation improves).
    For loops that do not train epoch by epoch themselves (an SB3 ``learn`` call spanning a
    whole run calls :meth:`record` from a callback); :func:`run_epochs` wraps the common case.
    Training time is the wall time minus the time spent evaluating.
    """

    def __init__(
        self,
        config: RunConfig,
        method: str,
        seed: int,
        evaluate: Callable[[str], dict[str, float]],
        total_epochs: int | None = None,
        first_epoch: int = 0,
        models: Sequence[torch.nn.Module] | Callable[[], Sequence[torch.nn.Module]] | None = None,
    ):
        from tqdm.auto import tqdm

        self.config, self.method, self.seed, self.evaluate = config, method, seed, evaluate
        self.total_epochs = total_epochs or config.epochs
        self.family = family_of(config.env_id)  # its validation score picks the best epoch
        # A callable is read at every use: an env's seeded reset builds a new network, so a
        # list taken before it would hold one that never trains.
        self._models = models if callable(models) else (lambda fixed=list(models or []): fixed)
        self.out = run_dir(config, method, seed)
        # A resumed run drops the events past its checkpoint, a fresh one every earlier
        # run's in the folder (TensorBoard would overlay them under the run's one name).
        purge = first_epoch + 1 if first_epoch else 0
        self.tb = TensorBoardLog(self.out / "tb" if config.tensorboard else None, purge)
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {}
        self.best_weights: list[dict[str, Any]] | None = None
        self.diverged_epoch: int | None = None
        self.start = time.perf_counter()
        self.eval_time = 0.0
        self.checkpoint_time = 0.0
        """Seconds spent writing checkpoints (``save_run``): neither training nor evaluation."""
        self.bar = tqdm(
            total=self.total_epochs,
            desc=f"{method} seed {seed}",
            disable=not config.progress,
        )

    def _evaluate(self, split: str) -> dict[str, float]:
        tick = time.perf_counter()
        metrics = {f"{split}/{k}": v for k, v in self.evaluate(split).items()}
        self.eval_time += time.perf_counter() - tick
        # NumPy scalars become Python numbers: the history goes into checkpoints, which hold
        # only plain data (see save_checkpoint), and into JSON.
        return {k: v.item() if is_numpy_scalar(v) else v for k, v in metrics.items()}

    def record(self, epoch: int, train_metrics: dict[str, float]) -> dict[str, float]:
        """Record (0-based) ``epoch`` with its training metrics, evaluating validation when
        it is due."""
        metrics = {k: v.item() if is_numpy_scalar(v) else v for k, v in train_metrics.items()}
        metrics["epoch"] = epoch + 1
        every = self.config.eval_every
        last = len(self.history) + 1 >= self.total_epochs  # epochs count from a warm-up
        due = (epoch + 1) % every == 0 or last
        if due:
            metrics.update(self._evaluate("val"))
        finite = all(math.isfinite(v) for v in metrics.values() if isinstance(v, (int, float)))
        if not finite and self.diverged_epoch is None:
            self.diverged_epoch = epoch + 1  # NaN/inf losses: the runner stops here
        if due:
            key, sign = self.family.selection_metric(metrics)
            # A diverged network never counts as the best one, whatever its (e.g. all-one-
            # class) validation accuracy.
            if finite and (not self.best or sign * metrics[key] > sign * self.best[key]):
                if self.models:
                    tick = time.perf_counter()
                    self.best_weights = [copy.deepcopy(m.state_dict()) for m in self.models]
                    self.eval_time += time.perf_counter() - tick
                else:
                    metrics.update(self._evaluate("test"))
                self.best = dict(metrics)
            self.bar.set_postfix({key: f"{metrics[key]:.4f}"})
        self.history.append(metrics)
        self.tb.scalars(metrics, epoch + 1)
        self.bar.update(1)
        return metrics

    def _evaluate_test(self) -> None:
        """Test metrics of the final network, and of the best epoch's network (restored for
        the evaluation, then the final one put back)."""
        last = self.history[-1]
        if not any(k.startswith("test/") for k in last):
            last.update(self._evaluate("test"))
            self.tb.scalars({k: v for k, v in last.items() if k.startswith("test/")}, last["epoch"])
        if not self.best and self.diverged:
            # No finite epoch was validated before the run diverged: there is no
            # best-validation network, so its test metrics are NaN (a diverged run's score
            # in the comparisons), never the diverged network's.
            tests = {k: math.nan for k in last if k.startswith("test/")}
            self.best = {"epoch": last["epoch"], **tests}
        elif not self.best:
            self.best = dict(last)
        elif self.best["epoch"] == last["epoch"]:
            self.best.update({k: v for k, v in last.items() if k.startswith("test/")})
        elif not any(k.startswith("test/") for k in self.best) and self.best_weights:
            final = [copy.deepcopy(m.state_dict()) for m in self.models]
            for model, weights in zip(self.models, self.best_weights):
                model.load_state_dict(weights)
            test = self._evaluate("test")
            for model, weights in zip(self.models, final):
                model.load_state_dict(weights)
            self.best.update(test)
            next(h for h in self.history if h["epoch"] == self.best["epoch"]).update(test)

    @property
    def models(self) -> list[torch.nn.Module]:
        """The networks whose best-epoch weights the recorder keeps, as they are now."""
        return list(self._models())

    @property
    def diverged(self) -> bool:
        return self.diverged_epoch is not None

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best": self.best,
            "best_weights": self.best_weights,
            "eval_time": self.eval_time,
            "checkpoint_time": self.checkpoint_time,
            "elapsed": time.perf_counter() - self.start,
            "diverged_epoch": self.diverged_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.best = state["history"], state["best"]
        self.best_weights = state["best_weights"]
        self.eval_time, self.diverged_epoch = state["eval_time"], state["diverged_epoch"]
        self.checkpoint_time = state.get("checkpoint_time", 0.0)  # older checkpoints lack it
        self.start = time.perf_counter() - state["elapsed"]
        self.bar.update(len(self.history))

    def mark_diverged(self, epoch: int) -> None:
        """Record that training diverged during (1-based) ``epoch`` (e.g. the env said so)."""
        if self.diverged_epoch is None:
            self.diverged_epoch = epoch

    def close(self) -> None:
        self.tb.close()
        self.bar.close()

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``result.json`` atomically and return the result dict.

        ``final`` holds the test metrics after the last epoch, ``best`` those of the epoch
        with the best validation score (the papers report early-stopped numbers);
        ``train_time_s`` the time spent training (IGB's T compares it across methods), apart
        from ``eval_time_s`` (evaluation) and ``checkpoint_time_s`` (checkpoint writes);
        ``status`` is ``"completed"`` or ``"diverged"`` (with ``diverged_epoch``: a NaN or
        infinite loss stopped the run, and ``final`` holds that epoch's metrics).
        """
        if not self.history:
            self.close()
            raise RuntimeError(f"{self.method} seed {self.seed}: no epoch was recorded.")
        self._evaluate_test()
        self.close()
        wall = time.perf_counter() - self.start
        result = make_result(
            self.config,
            self.method,
            self.seed,
            final={k: v for k, v in self.history[-1].items() if k.startswith("test/")},
            best={
                k: v
                for k, v in self.best.items()
                if k.startswith(("test/", "val/")) or k == "epoch"
            },
            epochs=self.history,
            wall_time_s=wall,
            train_time_s=wall - self.eval_time - self.checkpoint_time,
            status="diverged" if self.diverged else "completed",
            diverged_epoch=self.diverged_epoch,
            extra={
                "eval_time_s": self.eval_time,
                "checkpoint_time_s": self.checkpoint_time,
                **(extra or {}),
            },
        )
        atomic_write_json(self.out / "result.json", result)
        return result
