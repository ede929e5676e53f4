"""Speed report: one epoch of each workload through ``train.py``'s code path against its floor.

For each workload (the book's LeakyReLU MLP, its BN MLP and the 100-layer SELU net), in this
process, on the same in-memory tensors, alternating so that machine noise hits every path:

- ``hand loop``: a minimal hand-written PyTorch loop, the same model, optimizer, batch order and
  validation pass: the floor;
- ``dnnlab``: ``dnnlab.train.run.run`` with the defaults (TensorBoard, checkpoints, divergence
  monitor, gradient diagnostics);
- ``dnnlab, diagnostics off``: the same with ``callbacks.gradient_diagnostics=null``;
- ``dnnlab, compile=true``: the defaults with the network's forward compiled; the second of two
  epochs, after the compilation in the first;
- ``Keras fit``: the same model in Keras 3, when ``keras`` is importable (never a dependency),
  in a process of its own (``scripts/keras_epoch.py``) between the other paths; its second
  epoch, after the tracing of the first.

Every path runs with the same torch thread count: ``threads=auto``'s for the workload (see
``dnnlab.train.threads``), or ``--threads N``.

With ``--long-epochs N``, first (while the process has run nothing else), one N-epoch run of the
default workload records each epoch's steps/s and the process's resident memory, to show that
neither drifts.

With ``--busy N``, the default workload's ``dnnlab`` epoch is timed idle and beside N busy
processes (spinning Python loops this script starts and stops), for ``threads=auto`` and for
torch's default thread count, alternating, in the same run.

With ``--memory``, the resident memory of one epoch of the default workload in a fresh process
each: ``dnnlab``, the hand loop on its own float tensors, and the imports alone.

    python scripts/benchmark.py [--repeats 5] [--workloads leaky_relu_mlp bn_mlp selu_100]
                                [--keras-repeats 1] [--long-epochs 50] [--busy 2] [--memory]
                                [--threads N] [--doc docs/speed.md]

``--doc`` writes the tables into that page (docs/speed.md) between ``<!-- benchmark:start -->`` and
``<!-- benchmark:end -->``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from dnnlab.app.compose import compose_config
from dnnlab.data import IdxDataModule
from dnnlab.model import build_mlp
from dnnlab.optim.optimizers import build_optimizer
from dnnlab.train.run import build_datamodule, plain, run
from dnnlab.train.threads import TORCH_DEFAULT, choose_threads

COMMON = [
    "trainer.max_epochs=1",
    "test=false",
    "trainer.num_sanity_val_steps=0",
]
NO_DIAGNOSTICS = "callbacks.gradient_diagnostics=null"
COMPILED = "dnnlab, compile=true (2nd epoch)"

# Name -> (what it is, overrides of the default experiment).
WORKLOADS: dict[str, tuple[str, list[str]]] = {
    "leaky_relu_mlp": ("LeakyReLU MLP 784-300-100-10 (the default experiment)", []),
    "bn_mlp": (
        "BN MLP: BN, 300, BN, 100, BN, 10 (ReLU, BN after the activation)",
        ["model.activation=relu", "model.input_batch_norm=true", "model.batch_norm=after"],
    ),
    "selu_100": (
        "100-layer SELU net (100 units each, LeCun normal)",
        ["experiment=selu_100_layers"],
    ),
}
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


class EpochTimer(L.Callback):
    """Per epoch: wall time from the epoch's start to the end of its validation, and memory."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.rss_mib: list[float] = []
        self.peak_mib: list[float] = []
        self.steps: list[int] = []  # optimizer steps of each epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._first_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.steps.append(trainer.global_step - self._first_step)
        self.rss_mib.append(current_rss_mib())
        self.peak_mib.append(peak_rss_mib())


def current_rss_mib() -> float:
    """Resident memory of this process now (Linux), else its peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return peak_rss_mib()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def high_water_mib() -> float:
    """Peak resident memory of this process since its exec (VmHWM; ru_maxrss would keep the
    forking parent's peak), else :func:`peak_rss_mib`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def gpu_peak_mib() -> str:
    if not torch.cuda.is_available():
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated() / 2**20:,.0f}"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def hand_loop_epoch(datamodule: IdxDataModule, cfg: DictConfig) -> float:
    """The floor: the same model, optimizer, batch order and validation pass, written by hand."""
    torch.manual_seed(cfg.seed)
    val_x, val_y = datamodule.inputs("val"), datamodule.tensors["val"][1]
    model = build_mlp(784, 10, **cfg.model).to(val_x.device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    train = datamodule.train_dataloader()
    synchronize()
    start = time.perf_counter()
    model.train()
    for x, y in train.batches():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = sum(
            (model(x).argmax(1) == y).sum()
            for x, y in zip(val_x.split(1000), val_y.split(1000), strict=True)
        )
    float(correct)
    return time.perf_counter() - start


def dnnlab_epoch(overrides: list[str], epochs: int = 1) -> float:
    """The last of ``epochs`` epochs of ``train.py``'s code path (the first, under
    ``compile=true``, includes the compilation)."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as out:
        cfg = compose_config([*COMMON, f"trainer.max_epochs={epochs}", *overrides], output_dir=out)
        timer = EpochTimer()
        run(cfg, extra_callbacks=[timer])
    return timer.seconds[-1]


def keras_backend() -> str:
    """The backend Keras runs on: ``KERAS_BACKEND``, else TensorFlow or JAX if installed, else
    PyTorch (Keras' own default, TensorFlow, fails without it)."""
    found = (m for m in ("tensorflow", "jax") if importlib.util.find_spec(m))
    return os.environ.get("KERAS_BACKEND") or next(found, "torch")


def keras_epoch_factory(
    datamodule: IdxDataModule, cfg: DictConfig, scratch: Path
) -> tuple[str, Callable[[], float]] | None:
    """The path's label and one epoch of the same model in Keras ``fit``, if Keras 3 is installed.

    Each epoch runs in a process of its own (``scripts/keras_epoch.py``) on the same arrays,
    written once into ``scratch``.
    """
    if importlib.util.find_spec("keras") is None:
        return None
    x, y, val_x, val_y = (
        t.cpu().flatten(1).numpy() if t.ndim > 1 else t.cpu().numpy()
        for split in ("train", "val")
        for t in (datamodule.inputs(split), datamodule.tensors[split][1])
    )
    data = scratch / "data.npz"
    np.savez(data, x=x, y=y, val_x=val_x, val_y=val_y)
    model = cfg.model
    spec = {
        "inputs": x.shape[1],
        "classes": datamodule.num_classes,
        "hidden": list(model.hidden),
        "activation": model.activation,
        "negative_slope": model.activation_params.leaky_relu.negative_slope,
        "init": model.init,
        "input_batch_norm": model.input_batch_norm,
        "batch_norm": model.batch_norm,
        "lr": cfg.optimizer.lr,
        "batch_size": cfg.data.batch_size,
        "eval_batch_size": datamodule.eval_batch_size,
        "seed": cfg.seed,
    }
    (spec_path := scratch / "spec.json").write_text(json.dumps(spec))
    backend = keras_backend()

    def epoch() -> float:
        child = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("keras_epoch.py")), data, spec_path],
            env={**os.environ, "KERAS_BACKEND": backend},
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        assert result["backend"] == backend, result
        return result["seconds"]

    return f"Keras {importlib.metadata.version('keras')} fit ({backend} backend)", epoch


def time_workload(
    name: str, repeats: int, keras_repeats: int, scratch: Path, threads: int | None = None
) -> Timings:
    """Per path of one workload: the epoch times and the peak GPU memory."""
    _, overrides = WORKLOADS[name]
    overrides = [*overrides, f"threads={threads or 'auto'}"]
    cfg = compose_config([*COMMON, *overrides], output_dir=tempfile.gettempdir())
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    count = workload_threads(cfg, datamodule)

    def hand_loop() -> float:
        torch.set_num_threads(count)  # the count the dnnlab paths run with
        return hand_loop_epoch(datamodule, cfg)

    paths: dict[str, Callable[[], float]] = {
        "hand loop": hand_loop,
        "dnnlab": lambda: dnnlab_epoch(overrides),
        "dnnlab, diagnostics off": lambda: dnnlab_epoch([*overrides, NO_DIAGNOSTICS]),
        COMPILED: lambda: dnnlab_epoch([*overrides, "compile=true"], epochs=2),
    }
    keras_path = keras_epoch_factory(datamodule, cfg, scratch) if keras_repeats else None
    if keras_path is not None:
        label, keras_epoch = keras_path
        paths[label] = keras_epoch
    timings = Timings(
        samples=len(datamodule.tensors["train"][1]),
        steps=datamodule.train_dataloader().num_batches,
        seconds={label: [] for label in paths},
        threads=count,
    )
    for repeat in range(repeats):
        for label, epoch in paths.items():  # alternating: noise hits every path alike
            if label.startswith("Keras") and repeat >= keras_repeats:
                continue
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            timings.seconds[label].append(epoch())
            timings.gpu_mib[label] = gpu_peak_mib()
    return timings


@dataclass
class Timings:
    samples: int
    steps: int
    seconds: dict[str, list[float]]
    gpu_mib: dict[str, str] = field(default_factory=dict)
    threads: int = 0

    def best(self, label: str) -> float:
        return min(self.seconds[label])


def workload_threads(cfg: DictConfig, datamodule: IdxDataModule) -> int:
    """The torch thread count ``cfg.threads`` gives this workload's runs (and applies it)."""
    batch = int(cfg.data.batch_size)
    inputs, classes = 784, datamodule.num_classes
    return choose_threads(cfg.threads, plain(cfg.model), inputs, classes, batch).threads


def speed_table(results: dict[str, Timings]) -> list[str]:
    rows = [
        "| workload | path | best epoch (s) | median (s) | samples/s | vs hand loop "
        "| GPU peak (MiB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for name, timings in results.items():
        notes.append(f"{name}: {timings.threads} torch thread(s) on every path")
        floor = timings.best("hand loop")
        for label, times in timings.seconds.items():
            best = min(times)
            rows.append(
                f"| {name} | {label} | {best:.2f} | {statistics.median(times):.2f} "
                f"| {timings.samples / best:,.0f} | {best / floor:.2f}x "
                f"| {timings.gpu_mib[label]} |"
            )
        on, off = timings.best("dnnlab"), timings.best("dnnlab, diagnostics off")
        notes.append(f"{name}: the default diagnostics add {100 * (on / off - 1):+.1f}% (best)")
        compiled = timings.best(COMPILED)
        notes.append(f"{name}: compile=true takes {compiled / on:.2f}x the eager epoch time")
        for label in timings.seconds:
            if label.startswith("Keras"):
                keras = timings.best(label)
                notes.append(f"{name}: {label} takes {keras / on:.2f}x dnnlab's epoch time")
    return [*rows, "", *(f"- {note}" for note in notes)]


def long_run(epochs: int) -> list[str]:
    """The default workload for ``epochs`` epochs: steps/s and memory must stay flat."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as out:
        cfg = compose_config([*COMMON, f"trainer.max_epochs={epochs}"], output_dir=out)
        timer = EpochTimer()
        run(cfg, extra_callbacks=[timer])
    shown = sorted({1, 2, *range(10, epochs, 10), epochs} & set(range(1, epochs + 1)))
    rows = [
        "| epoch | epoch time (s) | steps/s (incl. validation) | resident memory (MiB) "
        "| peak so far (MiB) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for epoch in shown:
        seconds, rss = timer.seconds[epoch - 1], timer.rss_mib[epoch - 1]
        rows.append(
            f"| {epoch} | {seconds:.2f} | {timer.steps[epoch - 1] / seconds:,.0f} | {rss:,.0f} "
            f"| {timer.peak_mib[epoch - 1]:,.0f} |"
        )
    first_half = statistics.median(timer.seconds[1 : epochs // 2 + 1] or timer.seconds)
    second_half = statistics.median(timer.seconds[epochs // 2 :])
    growth = timer.rss_mib[-1] - timer.rss_mib[0]
    return [
        *rows,
        "",
        f"- median epoch time, second half / first half (epoch 1 left out): "
        f"{second_half / first_half:.3f}x",
        f"- resident memory, end vs epoch 1: {growth:+,.0f} MiB; peak, end vs epoch 1: "
        f"{timer.peak_mib[-1] - timer.peak_mib[0]:+,.0f} MiB",
    ]


SPIN = "while True: pass"


class BusyProcesses:
    """``count`` spinning Python processes beside the run, started and stopped by this script."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> BusyProcesses:
        self.processes = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(self.count)]
        time.sleep(0.5)  # let the scheduler see them before the timing starts
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait()
        self.processes = []


def busy_runs(busy: int, repeats: int) -> list[str]:
    """The default workload's dnnlab epoch, idle and beside ``busy`` spinning processes, for
    ``threads=auto`` and torch's default count: each repeat times all four, alternating."""
    modes = {"threads=auto": "threads=auto", "torch's default": f"threads={TORCH_DEFAULT}"}
    seconds: dict[tuple[str, bool], list[float]] = {
        (mode, loaded): [] for mode in modes for loaded in (False, True)
    }
    used: dict[str, int] = {}
    for _ in range(repeats):
        for loaded in (False, True):
            with BusyProcesses(busy if loaded else 0):
                for mode, override in modes.items():
                    seconds[mode, loaded].append(dnnlab_epoch([override]))
                    used[mode] = torch.get_num_threads()
    rows = [
        f"| threads | torch threads | idle epoch (s) | beside {busy} busy (s) | loaded / idle |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for mode in modes:
        idle, loaded = min(seconds[mode, False]), min(seconds[mode, True])
        rows.append(f"| {mode} | {used[mode]} | {idle:.2f} | {loaded:.2f} | {loaded / idle:.2f}x |")
        notes.append(f"{mode}: {loaded / idle:.2f}x its idle epoch beside {busy} busy processes")
    auto_loaded = min(seconds["threads=auto", True])
    default_loaded = min(seconds["torch's default", True])
    notes.append(
        f"beside {busy} busy processes, torch's default takes {default_loaded / auto_loaded:.2f}x "
        f"threads=auto's epoch time"
    )
    return [
        "",
        f"Loaded machine: the default workload, best of {repeats} epochs, idle and beside "
        f"{busy} busy processes ({os.cpu_count()} cores)",
        "",
        *rows,
        "",
        *(f"- {note}" for note in notes),
    ]


def dnnlab_rss() -> None:
    dnnlab_epoch([])


def imports_rss() -> None:
    """Nothing: the imports of this script (torch, Lightning, TensorBoard, dnnlab) alone."""


PROBES: dict[str, Callable[[], None]] = {"dnnlab": dnnlab_rss, "imports": imports_rss}


def memory_table() -> list[str]:
    """Resident memory after one epoch of the default workload, each in a fresh process."""
    cfg = compose_config(COMMON, output_dir=tempfile.gettempdir())
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    folder = str(datamodule._directory)
    hand = str(Path(__file__).with_name("hand_loop_rss.py"))
    here = str(Path(__file__))
    probes = {
        "dnnlab: one epoch (train.py's code path)": [here, "--rss-probe", "dnnlab"],
        "its imports alone (torch, Lightning, TensorBoard, dnnlab)": [
            here,
            "--rss-probe",
            "imports",
        ],
        "hand loop: one epoch on float32 tensors of its own (torch only)": [hand, folder],
        "torch imported alone": [hand, folder, "--imports-only"],
    }
    rows = ["| process | resident after it (MiB) | peak (MiB) |", "| --- | ---: | ---: |"]
    for what, command in probes.items():
        child = subprocess.run(
            [sys.executable, *command], capture_output=True, text=True, check=True
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        rows.append(f"| {what} | {result['rss']:,.0f} | {result['peak']:,.0f} |")
    return ["", "Memory: the default workload, each process fresh", "", *rows]


def header(args: argparse.Namespace) -> list[str]:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    command = " ".join(a for a in sys.argv[1:] if a != "--doc" and a != str(args.doc))
    threads = f"threads={args.threads}" if args.threads else "threads=auto"
    omp = os.environ.get("OMP_NUM_THREADS")
    env = f", OMP_NUM_THREADS={omp} in the environment" if omp else ""
    return [
        f"torch {torch.__version__}, {device}, {threads} (torch's default: {TORCH_DEFAULT}{env}), "
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}; "
        f"best of {args.repeats} epochs per path (`python scripts/benchmark.py {command}`)",
        "",
    ]


def write_doc(page: Path, lines: list[str]) -> None:
    text = page.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"error: {page} has no {START} ... {END} section to replace")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    page.write_text(before + START + "\n" + "\n".join(lines) + "\n" + END + after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="epochs per path (0: no workloads)")
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--long-epochs", type=int, default=0, help="also one run this long")
    parser.add_argument(
        "--keras-repeats", type=int, default=1, help="Keras epochs per workload (0: skip Keras)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads of every path (default: auto)"
    )
    parser.add_argument(
        "--busy", type=int, default=0, help="also time the default workload beside N busy processes"
    )
    parser.add_argument("--busy-repeats", type=int, default=3, help="epochs per --busy timing")
    parser.add_argument("--memory", action="store_true", help="also the resident memory table")
    parser.add_argument("--rss-probe", choices=list(PROBES), help=argparse.SUPPRESS)
    parser.add_argument("--doc", type=Path, default=None, help="write the tables into this page")
    args = parser.parse_args()
    if args.rss_probe:  # a fresh process of memory_table's: run it, print its memory
        PROBES[args.rss_probe]()
        print(json.dumps({"rss": current_rss_mib(), "peak": high_water_mib()}))
        return
    if omp := os.environ.get("OMP_NUM_THREADS"):
        print(f"note: OMP_NUM_THREADS={omp} is set: threads=auto and torch's default use it")
    lines = header(args)
    long_lines = []
    if args.long_epochs:  # first, in a process that has run nothing else: memory is its own
        long_lines = ["", f"Long run: the default workload for {args.long_epochs} epochs", ""]
        long_lines += long_run(args.long_epochs)
    results = {}
    for name in args.workloads if args.repeats else ():  # --repeats 0: only the other tables
        with tempfile.TemporaryDirectory() as scratch:
            results[name] = time_workload(
                name, args.repeats, args.keras_repeats, Path(scratch), args.threads
            )
        print(f"{name}: {WORKLOADS[name][0]}, {results[name].steps} steps of batch 32", flush=True)
    lines += speed_table(results) if results else []
    if results and not args.keras_repeats:
        lines += ["- Keras fit: not measured in this run (`--keras-repeats 0`)"]
    elif results and importlib.util.find_spec("keras") is None:
        lines += ["- Keras fit: not measured (Keras is not installed; `pip install keras`)"]
    lines += long_lines
    if args.busy:
        lines += busy_runs(args.busy, args.busy_repeats)
    if args.memory:
        lines += memory_table()
    print("\n".join(lines))
    if args.doc:
        write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
