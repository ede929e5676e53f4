"""Draw every activation and its derivative on one sheet (the book's saturation figure).

``python scripts/plot_activations.py`` writes ``activations.png`` into a new run folder,
``logs/runs/activations/<date>_<time>/``, and copies it to ``docs/activations.png`` for README.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's code, whatever is installed

from dnnlab.evaluate.plots import PLOTTED, plot_activations  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=PLOTTED, help="activations (default: all)")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="folder of README's copy")
    args = parser.parse_args(argv)
    log_dir = Path(os.environ.get("DNNLAB_ROOT", ".")) / "logs"
    run_dir = log_dir / "runs" / "activations" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    path = plot_activations(run_dir / "activations.png", args.names)
    Path(args.docs).mkdir(parents=True, exist_ok=True)
    shutil.copy(path, Path(args.docs) / "activations.png")
    print(f"wrote {path} and {Path(args.docs) / 'activations.png'}")
    return path


if __name__ == "__main__":
    main()
