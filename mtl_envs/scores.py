"""Reference scores: what the reference policies reach on an env id, and scores normalised
to them, as D4RL does (random policy = 0, best reference policy = 1).

The scores are package data (``mtl_envs/reference_scores.json``), written by
``scripts/reference_scores.py`` from ``mtl-envs probe`` results kept in ``docs/results/probe``.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any

from mtl_envs.errors import ConfigError
from mtl_envs.utils import suggest


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    path = resources.files("mtl_envs") / "reference_scores.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def reference_ids() -> list[str]:
    """Env ids that have reference scores."""
    return sorted(_table())


def reference_scores(env_id: str) -> dict[str, Any]:
    """Each reference policy's test metric on ``env_id``: ``{"metric", "higher_is_better",
    "protocol", "random", "best", "policies": {name: {"mean", "std", "n", "oracle",
    "values"}}}``, ``values`` being the per-seed scores in seed order."""
    table = _table()
    if env_id not in table:
        raise ConfigError(
            f"No reference scores for {env_id!r}.{suggest(env_id, table)} Ids with reference "
            f"scores: {sorted(table)}."
        )
    return table[env_id]


def normalized_score(env_id: str, value: float) -> float:
    """``(value - random) / (best - random)`` on ``env_id``'s headline test metric: 0 is the
    random reference policy's mean, 1 the best reference policy's (D4RL's normalisation)."""
    scores = reference_scores(env_id)
    low = scores["policies"][scores["random"]]["mean"]
    high = scores["policies"][scores["best"]]["mean"]
    return (float(value) - low) / (high - low)


def scale_errors(env_id: str) -> tuple[float, float]:
    """The standard errors of the normalised scale's two ends, in normalised units:
    ``(std_random / sqrt(n_random), std_best / sqrt(n_best)) / |best - random|``.

    The ends are means over a few seeds, so they carry noise of their own that a normalised
    score's bootstrap interval (over the method's seeds) does not hold: on an id where the
    reference policies lie close together, a normalised score moves by about this much with
    the references alone. ``mtl-envs compare`` resamples the ends' seeds beside a method's
    (the column "95% CI, ends resampled")."""
    scores = reference_scores(env_id)
    ends = [scores["policies"][scores[k]] for k in ("random", "best")]
    width = abs(ends[1]["mean"] - ends[0]["mean"])
    low, high = (end["std"] / math.sqrt(end["n"]) / width for end in ends)
    return low, high
