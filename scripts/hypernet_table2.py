"""Markdown table of tabular results beside the hypernetwork paper's Table 2.

    python scripts/hypernet_table2.py results/hypernet_table2 [results/hypernet_schools]

Rows are methods, columns dataset x setting: test MSE in the data's units, mean +- standard
error over seeds, then the paper's number where Table 2 has one
(:func:`harness.paper_tables.format_table2`).
"""

from __future__ import annotations

import argparse

from harness.paper_tables import format_table2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--metric", default="test/raw_mse")
    args = parser.parse_args()
    print(format_table2(args.results, args.metric), end="")


if __name__ == "__main__":
    main()
