"""Sweep report: ``python scripts/report.py logs/multiruns/<name>/<sweep folder>``.

Writes report.md, report.csv (one row per setting; only the overrides that varied as columns;
seeds pooled as mean ± std; failed runs listed as failed) and val_curves.png into the sweep folder.
"""

from __future__ import annotations

import argparse
import sys

from dnnlab.evaluate.report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a multirun folder holding numbered run folders")
    args = parser.parse_args()
    try:
        path = write_report(args.sweep)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    print(path.read_text())


if __name__ == "__main__":
    main()
