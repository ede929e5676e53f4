"""Sweep reports: one row per run of a multirun, only the overrides that varied as columns.

Reads each member folder's ``.hydra/overrides.yaml`` (what was asked), ``metrics.json`` (what
came out) and its TensorBoard events (validation curves). ``dnnlab.train.run`` writes
``metrics.json`` only when a run finishes, so a folder without it is a failed or unfinished run,
whose reason comes from its ``FAILED`` file or ``train.log``. Seeds are aggregated as mean ± std
over otherwise identical runs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dnnlab.files import FAILED_FILE, atomic_write, atomic_write_text

COLUMNS = {  # report column -> key in metrics.json's metrics
    "val_acc_best": "val/acc_best",
    "val_acc": "val/acc",
    "val_loss": "val/loss",
    "test_acc": "test/acc",
}
SEED_KEYS = ("seed",)


@dataclass
class Member:
    """One run of a sweep: its overrides and, when it finished, its summary."""

    folder: Path
    overrides: dict[str, str]
    summary: dict | None = None
    error: str = ""
    values: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.summary is not None


def member_number(name: str) -> tuple[int, str]:
    """A member folder's job number (the sweep names it ``<num>_<setting>``, see
    :mod:`dnnlab.app.members`), for sorting ``10_...`` after ``9_...``."""
    head = name.split("_", 1)[0]
    return (int(head) if head.isdigit() else -1, name)


def _overrides(folder: Path) -> dict[str, str]:
    path = folder / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) or [] if path.exists() else []
    return dict(item.lstrip("+~").split("=", 1) for item in items if "=" in item)


def _failure(folder: Path) -> str:
    """The run's own one-line reason if it left one, else the last error line of its log."""
    reason = folder / FAILED_FILE
    if reason.exists():
        return reason.read_text().strip().splitlines()[0]
    log = folder / "train.log"
    errors = [ln for ln in log.read_text().splitlines() if "ERROR" in ln] if log.exists() else []
    if errors:
        return errors[-1].split("] - ", 1)[-1][:200]
    return "no metrics.json: the run did not finish"


def load_member(folder: Path) -> Member:
    """A run folder as a report row's input: its values if it finished, else why it failed."""
    member = Member(folder, _overrides(folder))
    summary_path = folder / "metrics.json"
    if not summary_path.exists():
        member.error = _failure(folder)
        return member
    member.summary = json.loads(summary_path.read_text())
    metrics = member.summary["metrics"]
    member.values = {col: metrics[key] for col, key in COLUMNS.items() if key in metrics}
    member.values["epochs"] = member.summary["epochs"]
    member.values["wall_time_s"] = member.summary["wall_time_s"]
    return member


def load_members(sweep: Path) -> list[Member]:
    folders = sorted(sweep.iterdir(), key=lambda p: member_number(p.name))
    return [load_member(folder) for folder in folders if (folder / ".hydra").is_dir()]


def varied_keys(members: list[Member]) -> list[str]:
    keys = sorted({k for m in members for k in m.overrides})
    return [k for k in keys if len({m.overrides.get(k) for m in members}) > 1]


def _cell(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return ""
    if all(float(v).is_integer() for v in values) and len(set(values)) == 1:
        return str(int(values[0]))  # epochs: 10, not 10.0000
    if len(values) == 1:
        return f"{values[0]:.4f}" if abs(values[0]) < 10 else f"{values[0]:.1f}"
    mean, std = statistics.mean(values), statistics.stdev(values)
    return f"{mean:.4f} ± {std:.4f}" if abs(mean) < 10 else f"{mean:.1f} ± {std:.1f}"


def build_rows(members: list[Member]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per distinct setting (seeds pooled), failures kept as rows."""
    keys = [k for k in varied_keys(members) if k not in SEED_KEYS]
    metrics = [*COLUMNS, "epochs", "wall_time_s"]
    header = [*keys, "runs", *metrics, "status"]
    groups: dict[tuple, list[Member]] = {}
    for member in members:
        groups.setdefault(tuple(member.overrides.get(k, "") for k in keys), []).append(member)
    rows = []
    for setting, group in groups.items():
        done = [m for m in group if m.ok]
        failed = [m for m in group if not m.ok]
        cells = [_cell([m.values.get(col, math.nan) for m in done]) for col in metrics]
        status = (
            "ok" if not failed else "; ".join(f"failed: {m.folder.name}: {m.error}" for m in failed)
        )
        rows.append([*setting, str(len(done)), *cells, status])
    return header, rows


def val_curves(member: Member) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its file-by-file chatter
    events = EventAccumulator(str(member.folder), size_guidance={"scalars": 0})
    events.Reload()
    if "val/acc" not in events.Tags().get("scalars", []):
        return []
    return [e.value for e in events.Scalars("val/acc")]


def plot_curves(members: list[Member], keys: list[str], path: Path) -> None:
    """Validation accuracy per epoch, one line per run; after a single epoch, one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = {}
    for member in members:
        curve = val_curves(member) if member.ok else []
        if curve:
            label = (
                ", ".join(f"{k}={member.overrides.get(k, '')}" for k in keys) or member.folder.name
            )
            curves[label] = curve
    fig, ax = plt.subplots(figsize=(8, 5))
    epochs = max((len(c) for c in curves.values()), default=0)
    if epochs == 1:  # a line needs two epochs: a bar per run says the same thing readably
        ax.bar(range(len(curves)), [c[0] for c in curves.values()], color="tab:blue")
        ax.set_xticks(range(len(curves)), list(curves), rotation=20, ha="right", fontsize=8)
        ax.set_title(f"validation accuracy after 1 epoch: {path.parent.name}")
    else:
        for label, curve in curves.items():
            ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(f"validation accuracy per epoch: {path.parent.name}")
        if ax.lines:
            ax.legend(fontsize=7)
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def write_report(sweep: str | Path) -> Path:
    """Write report.md, report.csv and val_curves.png into the sweep folder; returns report.md.

    Each file is replaced whole (written beside it, then renamed): a full disk keeps the old one.
    """
    sweep = Path(sweep)
    members = load_members(sweep)
    if not members:
        raise FileNotFoundError(f"{sweep}: no run folders (with .hydra/) inside")
    header, rows = build_rows(members)
    table = io.StringIO(newline="")
    csv.writer(table).writerows([header, *rows])
    atomic_write_text(sweep / "report.csv", table.getvalue())
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    failed = sum(not m.ok for m in members)
    title = f"# Sweep report: {sweep}\n\n{len(members)} runs, {failed} failed.\n\n"
    atomic_write_text(sweep / "report.md", title + "\n".join(lines) + "\n\n![](val_curves.png)\n")
    plot_curves(members, [k for k in varied_keys(members)], sweep / "val_curves.png")
    return sweep / "report.md"
