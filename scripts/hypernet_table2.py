"""Markdown table of tabular results beside the hypernetwork paper's Table 2.

    python scripts/hypernet_table2.py results/hypernet_table2 [results/hypernet_schools]
        [--selection across_seeds] [--within mrn:prior_weight=0]

Rows are methods, columns dataset x setting: test MSE in the data's units, mean +- standard
error over seeds, then the paper's number where Table 2 has one
(:func:`harness.paper_tables.format_table2`). ``--selection across_seeds`` picks one grid
point per cell from the validation loss averaged over the seeds instead of one per run;
``--within METHOD:KEY=VALUE`` adds a row of that method's runs, each read at its best
validation fit among the grid points with KEY = VALUE (a sub-grid, such as MRN without its
prior); ``KEY<=VALUE`` and ``KEY>=VALUE`` keep a numeric range (a widened grid's run read
within the reference grid, ``mrn:prior_weight<=0.01``).
"""

from __future__ import annotations

import argparse

from harness.paper_tables import SELECTIONS, format_table2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--metric", default="test/raw_mse")
    parser.add_argument("--selection", default="per_seed", choices=SELECTIONS)
    parser.add_argument("--within", action="append", default=[], metavar="METHOD:KEY=VALUE")
    args = parser.parse_args()
    print(format_table2(args.results, args.metric, args.selection, args.within), end="")


if __name__ == "__main__":
    main()
