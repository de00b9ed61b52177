"""Write the package's reference scores from kept probe results.

    python scripts/reference_scores.py [docs/results/probe/*.json]

Every probe file (``mtl-envs probe ENV_ID --out docs/results/probe/ENV_ID.json``) becomes one
entry of ``mtl_envs/reference_scores.json``: each policy's mean, std, number of seeds and
per-seed values (in seed order) of the test metric, the probe's protocol, the random policy
and the best reference policy (the two ends of ``mtl_envs.normalized_score``; their values let
``mtl-envs compare`` resample the ends with a method's runs).

A probe of an earlier version also scores the current version of the same id where the
reference policies make the same runs on both (:data:`SAME_REFERENCE_RUNS`); the entry says
which id it was measured on (``measured_on``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtl_envs.errors import ConfigError
from mtl_envs.io import atomic_write_json, read_json

ROOT = Path(__file__).resolve().parents[1]
KEPT_PROBES = sorted((ROOT / "docs/results/probe").glob("*.json"))

# AuxLabel v1 changed only the image the agent observes, which no reference policy reads
# (image_hash hashes the stored image): their runs on v1 are v0's to the last digit
# (tests/test_policies.py), so v0's probes score v1 as well.
SAME_REFERENCE_RUNS = {
    "AuxLabel-CIFAR100Small-v1": "AuxLabel-CIFAR100Small-v0",
    "AuxLabelWeighted-CIFAR100Small-v1": "AuxLabelWeighted-CIFAR100Small-v0",
}


def entry(probe: dict, path: Path) -> dict:
    if "headroom" not in probe:
        raise ConfigError(
            f"probe {path} has no random policy: reference scores put random at 0, so its "
            f"probe must run the policy 'random' (it ran {sorted(probe['policies'])})"
        )
    runs = sorted(probe["runs"], key=lambda run: run["seed"])
    policies = {
        name: {
            **{k: p[k] for k in ("mean", "std", "n", "oracle")},
            "values": [run["test"] for run in runs if run["policy"] == name],
        }
        for name, p in probe["policies"].items()
    }
    return {
        "metric": f"test/{probe['metric']}",
        "higher_is_better": probe["higher_is_better"],
        "protocol": {**probe["protocol"], "env_kwargs": probe["env_kwargs"]},
        "random": "random",
        "best": probe["headroom"]["best"],
        "policies": policies,
    }


def build_table(probes: list[Path]) -> dict[str, dict]:
    """The reference scores of the probe files ``probes``, by env id."""
    table = {}
    for path in probes:
        probe = read_json(path)
        table[probe["env_id"]] = entry(probe, path)
    # A probe measured on the id itself wins over the runs it shares with its earlier version.
    for env_id, measured_on in SAME_REFERENCE_RUNS.items():
        if measured_on in table and env_id not in table:
            table[env_id] = {**table[measured_on], "measured_on": measured_on}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probes", nargs="*", type=Path, default=KEPT_PROBES)
    args = parser.parse_args()
    table = build_table(args.probes)
    out = ROOT / "mtl_envs" / "reference_scores.json"
    atomic_write_json(out, table)
    print(f"wrote {out} ({len(table)} ids: {', '.join(sorted(table))})")


if __name__ == "__main__":
    main()
