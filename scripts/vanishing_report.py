"""Summarize a sweep of ``experiment=vanishing_sigmoid``: a Markdown table and one figure.

    python scripts/vanishing_report.py logs/multiruns/vanishing_sigmoid/<time> \
        --figure docs/vanishing_sigmoid_grad_norm_vs_depth.png

Per member (one depth): final training accuracy, best validation and test accuracy, the verdict's
first-to-last RMS gradient ratio, and the mean absolute weight change of the first and the output
layer in the last epoch; the figure has one epoch's gradient norm vs depth, a line per net.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from dnnlab.callbacks.diagnostics.callback import VERDICT_FILE
from dnnlab.callbacks.diagnostics.figures import close, grad_norm_vs_depth


def final_metrics(folder: Path) -> dict[str, float]:
    """The run's final metrics from its ``metrics.json``; none for a run that did not finish.

    A run stopped by the divergence monitor still leaves its verdict, so it keeps its row.
    """
    path = folder / "metrics.json"
    return json.loads(path.read_text())["metrics"] if path.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--epoch", type=int, default=0, help="epoch of the figure (0: the last)")
    args = parser.parse_args()
    members = sorted(p.parent for p in args.sweep.glob(f"*/{VERDICT_FILE}"))
    print(
        "| hidden layers | epochs | train acc | best val acc | test acc "
        "| layer 1 / last RMS gradient | mean abs weight change, last epoch: layer 1, output |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    lines = {}
    for member in members:
        config = yaml.safe_load((member / ".hydra" / "config.yaml").read_text())
        depth = len(config["model"]["hidden"])
        report = json.loads((member / VERDICT_FILE).read_text())
        found = final_metrics(member)
        changes = report["weight_change_per_epoch"]
        first, last = changes[report["layers"][0]][-1], changes[report["layers"][-1]][-1]
        ratio = report.get("first_to_last_ratio", float("nan"))
        print(
            f"| {depth} | {report['epochs'][-1]} | {found.get('train/acc', float('nan')):.3f} "
            f"| {found.get('val/acc_best', float('nan')):.3f} "
            f"| {found.get('test/acc', float('nan')):.3f} | {ratio:.2g} | {first:.1e}, {last:.1e} |"
        )
        norms = report["grad_norm_per_epoch"]
        index = args.epoch - 1 if args.epoch else -1
        lines[f"{depth} hidden layer{'s' * (depth > 1)}"] = [v[index] for v in norms.values()]
        for line in report["verdict"]:
            print(f"<!-- {depth} hidden: {line} -->")
    if args.figure and lines:
        figure = grad_norm_vs_depth(lines, f"gradient norm vs depth, epoch {args.epoch or 'last'}")
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.figure)
        close(figure)


if __name__ == "__main__":
    main()
