"""Write the package's reference scores from kept probe results.

    python scripts/reference_scores.py [docs/results/probe/*.json]

Every probe file (``mtl-envs probe ENV_ID --out docs/results/probe/ENV_ID.json``) becomes one
entry of ``mtl_envs/reference_scores.json``: each policy's mean, std and number of seeds of
the test metric, the probe's protocol, the random policy and the best reference policy (the
two ends of ``mtl_envs.normalized_score``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtl_envs.io import atomic_write_json, read_json

ROOT = Path(__file__).resolve().parents[1]


def entry(probe: dict) -> dict:
    policies = {
        name: {k: p[k] for k in ("mean", "std", "n", "oracle")}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "probes", nargs="*", type=Path, default=sorted((ROOT / "docs/results/probe").glob("*.json"))
    )
    args = parser.parse_args()
    table = {}
    for path in args.probes:
        probe = read_json(path)
        table[probe["env_id"]] = entry(probe)
    out = ROOT / "mtl_envs" / "reference_scores.json"
    atomic_write_json(out, table)
    print(f"wrote {out} ({len(table)} ids: {', '.join(sorted(table))})")


if __name__ == "__main__":
    main()
