"""Train the RL agent of a config: ``python -m harness.train CONFIG.yaml [key=value ...]``.

The config's ``method`` picks the agent (``ppo`` for AuxLabel ids, ``igbv2`` for LossWeighting
ids); each seed writes a JSON result, TensorBoard logs and checkpoints under ``output_dir``.
``mtl-envs run`` does the same and also runs baselines listed beside the agent.
"""

from __future__ import annotations

import sys

from harness.config import RunConfig
from harness.registry import METHODS, check_run, file_methods, is_agent, resolve
from harness.results import default_metric
from mtl_envs.errors import ConfigError
from mtl_envs.families import family_of


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if not argv:
        print(
            f"usage: python -m harness.train CONFIG.yaml [key=value ...]\n\n{__doc__}",
            file=sys.stderr,
        )
        return 2
    try:
        config = RunConfig.from_file(argv[0], argv[1:])
        check_run(config, siblings=file_methods(argv[0], config.env_id))
    except ConfigError as err:  # bad input is one line, as `mtl-envs` prints it
        print(f"python -m harness.train: error: {err}", file=sys.stderr)
        return 2
    family = family_of(config.env_id).name
    agents = [
        m for m in config.methods if (family, m) in METHODS and is_agent(family, m)
    ] or config.methods
    try:
        for name in agents:
            runner = resolve(config.env_id, name)
            for seed in config.seeds:
                result = runner(config, seed)
                metric = default_metric([result])
                print(f"{name} seed {seed}: {metric} {result['final'][metric]:.4f}")
    except ConfigError as err:  # found by a run (a resume over another config): one line too
        print(f"python -m harness.train: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
