"""Text frames (``render_mode="ansi"``) shared by the envs: a few lines on the training run.

A frame of these envs is the state of a training run, not a picture, so the one render mode
is Gymnasium's ``"ansi"``: ``env.render()`` returns a string, as the toy-text envs' does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from mtl_envs.errors import ConfigError, RenderModeError
from mtl_envs.utils import check_choice

RENDER_MODES = ["ansi"]
# Gymnasium's checker asks every env with render modes for a frame rate; a text frame has
# none of its own, so this is the toy-text envs' value, read by nothing here.
RENDER_FPS = 4


def check_render_mode(render_mode: str | None) -> str | None:
    """``render_mode`` if it is None or ``"ansi"``, else a :class:`RenderModeError` (a
    ``ConfigError``) naming the choices."""
    try:
        check_choice("render_mode", render_mode, [None, *RENDER_MODES])
    except ConfigError as err:
        raise RenderModeError(str(err)) from None
    return render_mode


def spread(label: str, values: Sequence[float] | np.ndarray | None) -> str:
    """One line: the smallest, median and largest of the finite per-task ``values``, with the
    tasks of the extremes, then the tasks whose value is not finite (a diverging task; ``-``
    before there are any values)."""
    if values is None or len(values) == 0:
        return f"{label:<14}-"
    v = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(v))
    not_finite = f"not finite in task{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))}"
    if len(bad) == len(v):
        return f"{label:<14}{not_finite}"
    finite = np.where(np.isfinite(v), v, np.nan)
    lo, hi = int(np.nanargmin(finite)), int(np.nanargmax(finite))
    line = (
        f"{label:<14}min {v[lo]:.4g} (task {lo})  median {np.nanmedian(finite):.4g}  "
        f"max {v[hi]:.4g} (task {hi})"
    )
    return line + (f"  {not_finite}" if len(bad) else "")


class TextRender:
    """``render()`` for the envs' ``"ansi"`` mode.

    The env calls :meth:`_note_reset` in ``reset`` and :meth:`_note_step` before each
    ``step`` returns, and gives its own lines through :meth:`render_lines`; the frame adds the
    env's id, the last reward, the return since the reset and how the episode ended. Knowing
    whether the episode is over, it also refuses a step after the end
    (:meth:`_check_episode_running`), as Gymnasium's contract asks for a reset there.
    """

    render_mode: str | None = None
    _last_step: dict[str, Any] | None = None
    _return = 0.0
    _over: bool | None = None  # None: never reset

    def render_lines(self) -> list[str]:
        raise NotImplementedError

    def _note_reset(self) -> None:
        self._last_step, self._return, self._over = None, 0.0, False

    def _check_episode_running(self) -> None:
        """``ConfigError`` for a step before the first reset or after the episode ended (the
        run is over, or cut short): the next call must be ``reset()``."""
        if self._over is None:
            raise ConfigError("step() before reset(): call reset() to start an episode.")
        if self._over:
            raise ConfigError(
                "step() after the episode ended (terminated or truncated): call reset() to "
                "start the next one."
            )

    def _note_step(self, reward: float, terminated: bool, truncated: bool, info: dict) -> None:
        self._over = bool(terminated or truncated)
        if self.render_mode is None:
            return  # nothing will read it: no work on the step path
        self._return += reward
        flags = {"terminated": terminated, "truncated": truncated, "diverged": info.get("diverged")}
        self._last_step = {"reward": reward, "ended": [name for name, on in flags.items() if on]}

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn(
                "render() was called without a render mode; make the env with "
                "render_mode='ansi' for a text frame of the run."
            )
            return None
        spec = getattr(self, "spec", None)
        name = spec.id if spec is not None else type(self).__name__
        if self._over is None:  # no run to read yet
            return f"{name}\nnot reset: call reset() to start a run\n"
        lines = [name, *self.render_lines()]
        last = self._last_step
        if last is not None:
            ended = f" ({', '.join(last['ended'])})" if last["ended"] else ""
            lines.append(f"last reward {last['reward']:.6g}, return {self._return:.6g}{ended}")
        return "\n".join(lines) + "\n"
