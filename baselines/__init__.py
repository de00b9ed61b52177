"""Non-RL methods, one file each, in one registry: name -> ``run(config, seed) -> result``.

Auxiliary-learning methods (AuxLabel ids): ``stl``, ``human``, ``random``, ``maxl``,
``wa_maxl``.
Loss-weighting methods (LossWeighting ids): ``stl``, ``ew``, ``si``, ``uw``, ``rlw``,
``dwa``, ``igbv1``; each combines with a torchjd aggregator via
``env_kwargs: {aggregator: upgrad}`` (IGB Algorithm 3).
Grouping methods (TaskGrouping ids): ``etap``, ``tag``, ``random``, ``optimal``.
Tabular methods (LossWeighting ids of tabular data, the hypernetwork paper's protocol):
``hypernet``, ``hard_sharing``, ``stl_naive``, ``stl_task_info``, and ``stl`` with
``method_kwargs: {protocol: tabular}``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from baselines import etap, human, maxl, optimal, random_labels, stl, tag
from baselines.dwa import DWA
from baselines.ew import EW
from baselines.igbv1 import IGBv1
from baselines.loss_weighting import run_weighting_baseline
from baselines.rlw import RLW
from baselines.si import SI
from baselines.tabular import TABULAR_METHODS, run_tabular
from baselines.uw import UW

WEIGHTING_RULES = {"ew": EW, "si": SI, "uw": UW, "rlw": RLW, "dwa": DWA, "igbv1": IGBv1}

BASELINES: dict[str, Callable[..., dict[str, Any]]] = {
    "stl": stl.run,
    "human": human.run,
    "random": random_labels.run,
    "maxl": maxl.run,
    "wa_maxl": maxl.run_weight_aware,
    "etap": etap.run,
    "tag": tag.run,
    "optimal": optimal.run,
    **{
        name: partial(run_weighting_baseline, method=name, make_rule=rule)
        for name, rule in WEIGHTING_RULES.items()
    },
    **{name: partial(run_tabular, method=name) for name in TABULAR_METHODS if name != "stl"},
}

__all__ = ["BASELINES", "WEIGHTING_RULES"]
