"""Reproduce the chapter: every book/* study over several seeds, next to the notebook's numbers.

    python scripts/chapter_results.py [--seeds 42 43 44] [--studies dropout l2 ...]
                                      [--out docs/results.md] [--force] [--list]

Each (member, seed) trains through ``train.py`` in its own process (OMP_NUM_THREADS=1) into
``--runs-dir``; its final numbers and wall time go into ``<out dir>/results/chapter.json`` at once,
so a long chapter can be stopped and started again: what is there is skipped (``--force`` redoes
the selected studies). The page (``--out``) and one figure per study (``results/<study>.png``)
are written from that file after every run, so the page always shows what exists and names the
command for what does not.

The book's numbers are the printed outputs of the 3rd edition notebook
(ageron/handson-ml3, 11_training_deep_neural_networks.ipynb), cited by execution count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "handson-ml3 `11_training_deep_neural_networks.ipynb`"
# |ours - book| beyond this many standard deviations of our seeds, and beyond MIN_GAP, is flagged
SPREAD = 2.0
MIN_GAP = 0.01  # one percentage point: seeds of a 2-epoch run can agree to 0.1 pp


@dataclass(frozen=True)
class Member:
    """One trained configuration of a study and the number the notebook printed for it."""

    key: str  # unique: names the run folder and the entry in chapter.json
    label: str
    experiment: str
    metric: str  # a key of metrics.json's "metrics"
    book: float | None
    cell: str  # where the notebook prints it
    overrides: tuple[str, ...] = ()
    needs: str | None = None  # the key of a member whose checkpoint (same seed) this one reuses
    note: str = ""


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    members: tuple[Member, ...]
    about: str = ""
    extra: tuple[Member, ...] = field(default=())  # more numbers of the same runs


def val(
    key: str, label: str, experiment: str, book: float, cell: str, *over: str, note: str = ""
) -> Member:
    return Member(key, label, experiment, "val/acc", book, cell, over, note=note)


OPTIMIZER_BOOK = {  # optimizer -> (final val_accuracy, execution count of the fit)
    "sgd": (0.8672, "47"),
    "momentum": (0.8672, "49"),
    "nesterov": (0.8708, "51"),
    "adagrad": (0.8424, "53"),
    "rmsprop": (0.8636, "55"),
    "adam": (0.8696, "57"),
    "adamax": (0.8780, "59"),
    "nadam": (0.8740, "61"),
    "adamw": (0.8702, "63"),
}
SGD_NOTE = (
    "the notebook's SGD cell ran with momentum 0.9 (its output equals cell 49's); ours is plain SGD"
)
DEEP = (
    "both rows: 100 layers trained 5 epochs with SGD 0.001 end far apart from seed to seed "
    "(each seed's number: docs/results/chapter.json); the notebook's is one run"
)

STUDIES: tuple[Study, ...] = (
    Study(
        "deep_nets",
        "100 hidden layers: SELU vs ReLU",
        (
            val("selu_100", "SELU + LeCun normal", "book/selu_100_layers", 0.8046, "19", note=DEEP),
            val("relu_100", "ReLU + He normal", "book/relu_100_layers", 0.7054, "23"),
        ),
        "5 epochs of SGD 0.001 on standardized inputs; val accuracy after epoch 5.",
    ),
    Study(
        "batch_norm",
        "Batch normalization",
        (
            val(
                "bn_after",
                "BN after the activation (+ input BN)",
                "book/batch_norm_after",
                0.8650,
                "29",
            ),
            val("bn_before", "BN before the activation", "book/batch_norm_before", 0.8646, "32"),
        ),
        "2 epochs of SGD 0.01; val accuracy after epoch 2.",
    ),
    Study(
        "transfer",
        "Transfer learning (tasks A and B)",
        (
            val("transfer_a", "model A (8 classes), val", "book/transfer_a", 0.9027, "35"),
            Member(
                "transfer_b",
                "model B from scratch, test",
                "book/transfer_b",
                "test/acc",
                0.9185,
                "36",
                note="2-way softmax head (the book: Dense(1, sigmoid))",
            ),
            Member(
                "transfer_b_on_a",
                "model B on A's layers, test",
                "book/transfer_b_on_a",
                "test/acc",
                0.9385,
                "43",
                needs="transfer_a",
                note="2-way softmax head (the book: Dense(1, sigmoid))",
            ),
        ),
        "A: 20 epochs on 8 classes; B: 20 epochs on 200 images; B on A: 4 frozen + 16 epochs.",
    ),
    Study(
        "optimizers",
        "Faster optimizers",
        tuple(
            val(
                f"opt_{name}",
                name,
                "book/optimizers",
                book,
                cell,
                f"optimizer={name}",
                note=SGD_NOTE if name == "sgd" else "",
            )
            for name, (book, cell) in OPTIMIZER_BOOK.items()
        ),
        "3 x Dense(100, relu), 10 epochs, the book's settings per optimizer; val accuracy after "
        "epoch 10.",
    ),
    Study(
        "schedules",
        "Learning-rate schedules",
        (
            val("sched_power", "power (InverseTimeDecay)", "book/schedule_power", 0.8714, "66"),
            val(
                "sched_exponential",
                "exponential (per step)",
                "book/schedule_exponential",
                0.8662,
                "69",
            ),
            val(
                "sched_piecewise",
                "piecewise constant (step boundaries)",
                "book/schedule_piecewise",
                0.8716,
                "80",
                note="its 50k/80k-step boundaries lie past 10 epochs (as in the notebook's code)",
            ),
            val(
                "sched_performance",
                "performance (ReduceLROnPlateau), 25 epochs",
                "book/schedule_performance",
                0.8868,
                "87",
            ),
            val(
                "sched_onecycle",
                "1cycle, batch 128, 25 epochs",
                "book/schedule_onecycle",
                0.8920,
                "95",
            ),
        ),
        "SGD on 3 x Dense(100, relu); val accuracy after the last epoch.",
    ),
    Study(
        "l2",
        "L2 regularization",
        (
            val(
                "l2",
                "l2(0.01) on every kernel, SGD 0.02",
                "book/l2",
                0.8182,
                "99",
                note="the book's head is he_normal, ours glorot_uniform",
            ),
        ),
        "2 epochs; val accuracy after epoch 2.",
    ),
    Study(
        "dropout",
        "Dropout and MC dropout",
        (val("dropout", "dropout 0.2, val", "book/mc_dropout", 0.8732, "102"),),
        "SGD 0.01 momentum 0.9, 10 epochs; one run per seed gives all three numbers.",
        extra=tuple(  # the same runs' test accuracy, plain and with 100 MC dropout passes
            Member("dropout", label, "book/mc_dropout", metric, book, cell)
            for label, metric, book, cell in (
                ("dropout 0.2, test (final weights)", "test/acc", 0.8700, "104"),
                ("MC dropout, 100 passes, test", "mc/acc", 0.8717, "110"),
            )
        ),
    ),
    Study(
        "max_norm",
        "Max-norm regularization",
        (val("max_norm", "max_norm(1.) on the hidden kernels", "book/max_norm", 0.8578, "116"),),
        "SGD 0.01 momentum 0.9, 10 epochs; val accuracy after epoch 10.",
    ),
)
NOT_TRAINED = (
    "LeakyReLU, PReLU and ELU: the 3rd-edition notebook only builds such layers (cells 9-11); "
    "it trains none (the 2nd edition's did). `experiment=activations` compares them.",
    "Gradient clipping: cells 33-34 only compile SGD(clipvalue=1.0) / SGD(clipnorm=1.0). "
    "`experiment=clipping` trains them.",
    "Alpha dropout: a note only (after cell 104).",
)


def all_members(study: Study) -> list[Member]:
    return [*study.members, *study.extra]


def runs_of(study: Study) -> list[Member]:
    """The members that train (an ``extra`` row reads another member's runs)."""
    return list(study.members)


def load(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    return json.loads(path.read_text()) if path.is_file() else {}


def save(path: Path, results: dict[str, dict[str, dict[str, float]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)  # a killed script leaves the previous file whole


def run_dir(runs: Path, key: str, seed: int) -> Path:
    return runs / key / f"seed_{seed}"


def train(member: Member, seed: int, runs: Path) -> dict[str, float]:
    """One training through train.py in a fresh process; its metrics.json plus the wall time."""
    out = run_dir(runs, member.key, seed)
    overrides = [
        f"experiment={member.experiment}",
        *member.overrides,
        f"seed={seed}",
        f"hydra.run.dir={out}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "logger=csv",
    ]
    if member.needs:
        source = run_dir(runs, member.needs, seed) / "checkpoints" / "last.ckpt"
        overrides.append(f"transfer.ckpt_path={source}")
    if out.exists():  # a killed earlier run of this script: keep its folder, start afresh
        out.rename(out.with_name(f"{out.name}.killed-{time.strftime('%Y%m%d-%H%M%S')}"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    (out.parent).mkdir(parents=True, exist_ok=True)
    (out.parent / f"seed_{seed}.log").write_text(done.stdout + done.stderr)
    summary = out / "metrics.json"
    if done.returncode != 0 or not summary.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{member.key} seed {seed} failed ({done.returncode}): {tail[0]}")
    metrics = json.loads(summary.read_text())["metrics"]
    return {**{k: float(v) for k, v in metrics.items()}, "seconds": round(seconds, 1)}


def values_of(member: Member, results: dict, seeds: Sequence[int]) -> tuple[list, list]:
    """The member's metric and wall time per seed that has it (a run without the metric, e.g.
    a test that did not happen, counts as not run)."""
    runs = [results.get(member.key, {}).get(str(s)) for s in seeds]
    done = [r for r in runs if r and member.metric in r]
    return [r[member.metric] for r in done], [r["seconds"] for r in done]


def spread(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def flag(book: float | None, values: Sequence[float]) -> str:
    if book is None or not values:
        return ""
    gap = abs(statistics.fmean(values) - book)
    return "**differs**" if gap > max(SPREAD * spread(values), MIN_GAP) else "agrees"


def command(study: Study, seeds: Sequence[int]) -> str:
    listed = " ".join(map(str, seeds))
    return f"`python scripts/chapter_results.py --studies {study.name} --seeds {listed}`"


def study_table(study: Study, results: dict, seeds: Sequence[int]) -> list[str]:
    lines = [
        "| member | book (cell) | ours, mean ± std (seeds) | ours - book | verdict | time/run |",
        "|---|---|---|---|---|---|",
    ]
    for member in all_members(study):
        values, seconds = values_of(member, results, seeds)
        book = "—" if member.book is None else f"{member.book:.4f} ({member.cell})"
        label = member.label + (" ¹" if member.note else "")
        if not values:
            lines.append(f"| {label} | {book} | not run yet | | | |")
            continue
        mean = statistics.fmean(values)
        diff = "" if member.book is None else f"{100 * (mean - member.book):+.2f} pp"
        lines.append(
            f"| {label} | {book} | {mean:.4f} ± {spread(values):.4f} ({len(values)}) | {diff} | "
            f"{flag(member.book, values)} | {statistics.fmean(seconds):.0f} s |"
        )
    notes = [f"¹ {m.label}: {m.note}." for m in all_members(study) if m.note]
    return [*lines, "", *notes] if notes else lines


def figure(study: Study, results: dict, seeds: Sequence[int], path: Path) -> bool:
    """Ours (mean ± std, seeds as dots) beside the book's number, per member; False if no data."""
    rows = []
    for member in all_members(study):
        values, _ = values_of(member, results, seeds)
        if values:
            rows.append((member, values))
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.55 * len(rows) + 1.4))
    for i, (member, values) in enumerate(rows):
        ax.errorbar(
            statistics.fmean(values),
            i,
            xerr=spread(values),
            fmt="o",
            color="C0",
            capsize=4,
            label="ours (mean ± std)" if i == 0 else None,
        )
        ax.scatter(values, [i] * len(values), s=10, color="C0", alpha=0.4)
        if member.book is not None:
            ax.scatter(
                member.book, i, marker="x", s=60, color="C3", label="book" if i == 0 else None
            )
    ax.set_yticks(range(len(rows)), [m.label for m, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("accuracy")
    ax.set_title(study.title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_page(out: Path, results: dict, seeds: Sequence[int]) -> None:
    figures = out.parent / "results"
    lines = [
        "# The chapter's studies, reproduced",
        "",
        f"Every study the 3rd edition's notebook ({NOTEBOOK}) trains, at its settings "
        f"(`experiment=book/<study>`, `parity=keras`), over seeds {', '.join(map(str, seeds))}. "
        "The book's column is the number the notebook prints (its execution count in "
        "brackets); it is one run, ours the mean and sample standard deviation over the seeds.",
        "",
        f"**Verdict rule**: *differs* when |ours - book| > max({SPREAD:g} x std of our seeds, "
        f"{100 * MIN_GAP:g} pp), else *agrees*. The time is the mean wall time of one run "
        "(2 shared CPU cores, `OMP_NUM_THREADS=1`, startup included).",
        "",
        "Regenerate: `python scripts/chapter_results.py` (resumable: finished runs are kept in "
        "`docs/results/chapter.json`; `--force` redoes the selected `--studies`).",
        "",
    ]
    for study in STUDIES:
        lines += [f"## {study.title}", "", study.about, ""]
        lines += study_table(study, results, seeds)
        missing = [m for m in runs_of(study) if len(results.get(m.key, {})) < len(seeds)]
        if missing:
            lines += ["", f"Not run for every seed yet; fill it with {command(study, seeds)}."]
        if figure(study, results, seeds, figures / f"{study.name}.png"):
            lines += ["", f"![{study.title}](results/{study.name}.png)"]
        lines.append("")
    lines += ["## What the notebook does not train", ""]
    lines += [f"- {text}" for text in NOT_TRAINED]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def select(names: Sequence[str] | None) -> list[Study]:
    if not names:
        return list(STUDIES)
    known = {s.name: s for s in STUDIES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(
            f"error: unknown --studies {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return [known[n] for n in names]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--studies", nargs="+", help="default: all, in page order")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "logs" / "chapter")
    parser.add_argument("--force", action="store_true", help="retrain the selected studies")
    parser.add_argument("--list", action="store_true", help="list the studies and exit")
    args = parser.parse_args(argv)
    studies = select(args.studies)
    if args.list:
        for study in studies:
            print(f"{study.name}: {', '.join(m.key for m in runs_of(study))}")
        return 0
    store = args.out.parent / "results" / "chapter.json"
    results = load(store)
    runs = args.runs_dir.resolve()
    for study in studies:
        for member in runs_of(study):
            for seed in args.seeds:
                have = results.get(member.key, {}).get(str(seed))
                checkpoint = run_dir(runs, member.key, seed) / "checkpoints" / "last.ckpt"
                reused = any(m.needs == member.key for m in runs_of(study))
                if have and not args.force and (not reused or checkpoint.is_file()):
                    continue
                print(f"{study.name}: {member.key} seed {seed} ...", flush=True)
                results.setdefault(member.key, {})[str(seed)] = train(member, seed, runs)
                save(store, results)
                write_page(args.out, results, args.seeds)
                print(f"  {results[member.key][str(seed)]['seconds']:.0f} s", flush=True)
    write_page(args.out, results, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
