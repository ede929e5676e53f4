"""Every kind of bad input: one ``error:`` line naming key, value and valid choices, exit code 2.

Each case runs ``train.py``'s entry point in this process (as ``python train.py ...`` would, with
the same argument parsing, Hydra composition and job) and fails before any training step.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import (
    QUICK,
    ROOT,
    call_train,
    damage_file,
    grey_images,
    load_script,
    member_folder,
    requires_fashion,
    tiny_data,
    write_checkpoint,
    write_idx_dataset,
)
from dnnlab.app import cli
from dnnlab.app.checks import check_ranges
from dnnlab.data.idx import encode_idx
from dnnlab.data.sources import SPLIT_FILES
from dnnlab.errors import ConfigError
from dnnlab.train import memory
from dnnlab.train.module import Classifier


def dataset(tmp_path: Path, damage: str) -> list[str]:
    """A tiny MNIST-layout folder, damaged as asked, and the overrides that read it."""
    folder = write_idx_dataset(tmp_path / "data")
    images = folder / "train-images-idx3-ubyte.gz"
    if damage == "truncated":
        raw = encode_idx(np.zeros((60, 28, 28), np.uint8))[:-100]
        images.write_bytes(gzip.compress(raw))
    elif damage == "corrupted":
        images.write_bytes(images.read_bytes()[:40])
    verify = "true" if damage == "md5" else "false"
    return ["data=mnist", f"data.root={folder}", "data.search_dirs=[]", f"data.verify={verify}"]


def transfer(source: list[str], target: list[str], how: str = "", **saved_model: object):
    """The overrides of a run reusing a source checkpoint of the model ``source`` builds
    (``how``: damaged as :func:`damage_file` does; ``saved_model``: as write_checkpoint's)."""

    def make(tmp_path: Path) -> list[str]:
        ckpt = write_checkpoint(tmp_path / "source.ckpt", source, **saved_model)
        if how:
            damage_file(ckpt, how)
        return [*tiny_data(tmp_path), *target, f"transfer.ckpt_path={ckpt}"]

    return make


def idx_file(name: str, array: np.ndarray, flip: bool = False, verify: bool = False):
    """The overrides of a run whose tiny dataset has ``array`` as its file ``name``, gzipped
    (``flip``: bytes in the middle of the gzip stream inverted)."""

    def make(tmp_path: Path) -> list[str]:
        overrides = tiny_data(tmp_path)
        path = tmp_path / "data" / name
        path.write_bytes(gzip.compress(encode_idx(array)))
        if flip:
            damage_file(path, "flipped")
        return [*overrides, f"data.verify={str(verify).lower()}"]

    return make


def root_is_a_file(tmp_path: Path) -> list[str]:
    (tmp_path / "mnist.gz").write_bytes(b"")
    return ["data=mnist", f"data.root={tmp_path / 'mnist.gz'}", "data.download=true"]


LABEL_12 = np.array([3, 12, *[0] * 58], np.uint8)
OFFLINE_MNIST = ["data=mnist", "data.search_dirs=[]", "data.download=true"]
CLOSED_PORT = "data.mirrors=[http://127.0.0.1:9/]"  # fails at once, as offline

# (case, overrides or a function of tmp_path making the files and giving them, the message the
# one line must hold)
CASES = [
    (
        "unknown group option",
        ["optimizer=foo"],
        r"optimizer='foo' is not valid; choose one of: .*sgd",
    ),
    (
        "unknown experiment",
        ["experiment=nope"],
        r"experiment='nope' is not valid; choose one of: .*book/dropout, .*smoke",
    ),
    (
        "unknown book experiment",
        ["experiment=book/nope"],
        r"experiment='book/nope' is not valid; choose one of: .*book/dropout",
    ),
    (
        "misspelled key",
        ["optimizer.lrr=0.1"],
        r"optimizer.lrr=0.1: unknown key 'lrr' in optimizer; valid keys: _target_, lr, momentum",
    ),
    (
        "wrong type (text for a number)",
        ["optimizer.lr=abc"],
        r"optimizer.lr='abc' has the wrong type; expected a number like the default",
    ),
    (
        "wrong type (fraction for an integer)",
        ["trainer.max_epochs=2.5"],
        r"trainer.max_epochs=2.5 has the wrong type; expected an integer",
    ),
    ("unparsable override", ["model.hidden=[300,"], r"cannot parse 'model.hidden=\[300,'"),
    (
        "negative rate",
        ["optimizer.lr=-0.1"],
        r"optimizer.lr=-0.1 is out of range; expected a learning rate > 0",
    ),
    (
        "dropout >= 1",
        ["++model.dropout=1.0"],
        r"model.dropout=1.0 is out of range; expected a dropout rate in \[0, 1\)",
    ),
    (
        "transfer value without freezing",
        ["transfer.freeze_epochs=0", "transfer.unfreeze_lr=-0.1"],
        r"transfer.unfreeze_lr=-0.1 is out of range; expected a learning rate > 0, or null",
    ),
    (
        "unknown frozen BN mode without freezing",
        ["transfer.freeze_epochs=0", "transfer.frozen_bn=frozen"],
        r"transfer.frozen_bn='frozen' is not valid; choose one of: batch_stats, inference, train",
    ),
    (
        "batch size 0",
        ["data.batch_size=0"],
        r"data.batch_size=0 is out of range; expected a batch size, an integer >= 1",
    ),
    (
        "schedule value",
        ["scheduler=exponential", "scheduler.schedule.decay_rate=1.5"],
        r"scheduler.schedule.decay_rate=1.5 is out of range; expected a decay rate in \(0, 1\)",
    ),
    ("hidden sizes empty", ["model.hidden=[]"], r"model.hidden=\[\] must list at least one hidden"),
    (
        "hidden size zero",
        ["model.hidden=[300,0]"],
        r"model.hidden\[1\]=0 is out of range; expected a layer size \(units\), an integer >= 1",
    ),
    (
        "unknown activation",
        ["model.activation=relux"],
        r"model.activation='relux' is not valid; choose one of: elu, gelu, leaky_relu",
    ),
    (
        "torch rejects the arguments",
        ["optimizer.momentum=0.9", "++optimizer.nesterov=true", "++optimizer.dampening=0.5"],
        r"optimizer: torch.optim.SGD rejects these arguments: Nesterov momentum requires",
    ),
    ("missing data dir", ["data=mnist", "data.search_dirs=[]"], r"MNIST not found \(looked in "),
    ("truncated IDX file", "truncated", r"truncated or corrupted IDX file"),
    ("corrupted IDX file", "corrupted", r"train-images-idx3-ubyte.gz: cannot read"),
    ("wrong MD5", "md5", r"MD5 does not match MNIST's"),
    ("no run to resume", ["ckpt_path=last"], r"ckpt_path=last: no run folder under"),
    ("no such checkpoint", ["ckpt_path=nowhere.ckpt"], r"ckpt_path='nowhere.ckpt': no such"),
    # files a user points at (checkpoints, transfer, data)
    (
        "transfer.layers beyond the source's hidden layers",
        transfer(["model.hidden=[50]"], ["model.hidden=[50,10]", "transfer.layers=2"]),
        r"^error: transfer.layers=2 reuses more hidden layers than the source has: "
        r"transfer.ckpt_path='.*source.ckpt' has 1 \(model.hidden=\[50\]\); "
        r"set transfer.layers to at most 1$",
    ),
    (
        "all layers (transfer.layers=null) beyond the source's",
        transfer(["model.hidden=[50]"], ["model.hidden=[50,10]"]),
        r"transfer.layers=null reuses all 2 hidden layers, more hidden layers than the source",
    ),
    (
        "transfer source of another layer size",
        transfer(["model.hidden=[50]"], ["model.hidden=[60]"]),
        r"transfer.ckpt_path='.*': hidden layer 1 does not match the source's: "
        r"50 units in the source, 60 here \(model.hidden\)",
    ),
    (
        "transfer source of another activation",
        transfer(["model.activation=relu"], []),
        r"hidden layer 1 does not match the source's: ReLU\(\) in the source, "
        r"LeakyReLU\(negative_slope=0.2\) here \(model.activation\)",
    ),
    (
        "transfer source of another BatchNorm placement",
        transfer(["model.batch_norm=after"], ["model.batch_norm=before"]),
        r"hidden layer 1 does not match the source's: model.batch_norm=after in the source, "
        r"before here",
    ),
    (
        "transfer source a text file",
        transfer([], [], "text"),
        r"transfer.ckpt_path='.*source.ckpt': not a checkpoint \(not a torch.save archive",
    ),
    (
        "transfer source truncated",
        transfer([], [], "truncated"),
        r"transfer.ckpt_path='.*source.ckpt': not a checkpoint \(not a torch.save archive",
    ),
    (
        "transfer source with flipped bytes",
        transfer([], [], "flipped"),
        r"transfer.ckpt_path='.*source.ckpt': a damaged checkpoint \(its member .* CRC-32",
    ),
    (
        "transfer source whose settings build no model",
        transfer([], [], activation="nope"),
        r"transfer.ckpt_path='.*': its hyper_parameters do not build a model "
        r"\(model.activation='nope' is not valid; choose one of: ",
    ),
    (
        "transfer source whose weights do not fit its settings",
        transfer([], [], hidden=[300, 50]),
        r"transfer.ckpt_path='.*': its weights do not fit its own model settings "
        r"\(RuntimeError: size mismatch for net.3.weight",
    ),
    (
        "gzip file with flipped bytes",
        idx_file(SPLIT_FILES["train_images"], grey_images(), flip=True),
        r"train-images-idx3-ubyte.gz: cannot read \(Error -3 while decompressing data",
    ),
    (
        "gzip file with flipped bytes, MD5 checked",
        idx_file(SPLIT_FILES["train_images"], grey_images(), flip=True, verify=True),
        r"train-images-idx3-ubyte.gz: MD5 does not match MNIST's",
    ),
    (
        "data.root a file",
        root_is_a_file,
        r"data.root='.*mnist.gz' is a file, not a folder; give the folder of train-images",
    ),
    (
        "images of another size",
        idx_file(SPLIT_FILES["train_images"], np.zeros((60, 32, 32), np.uint8)),
        r"data/train-images-idx3-ubyte.gz: holds images of shape 32x32 \(\(60, 32, 32\) in all\); "
        r"MNIST images are 28x28",
    ),
    (
        "label outside the classes",
        idx_file(SPLIT_FILES["train_labels"], LABEL_12),
        r"data/train-labels-idx1-ubyte.gz: holds label 12, outside MNIST's 10 classes 0-9 "
        r"\(1 such labels in all\)$",
    ),
    (
        "MNIST offline",
        [*OFFLINE_MNIST, CLOSED_PORT],
        r"MNIST not found \(looked in .*\)\. Put .* in .*data/mnist \(data.root\) or in a "
        r"folder of data.search_dirs; download failed: http://127.0.0.1:9/",
    ),
    # config values and keys
    ("seed below 0", ["seed=-1"], r"^error: seed=-1 is out of range; expected a seed, an integer "),
    (
        "seed above 2**32-1",
        ["seed=4294967296"],
        r"seed=4294967296 is out of range; expected a seed, an integer in \[0, 4294967295\]$",
    ),
    ("seed null", ["seed=null"], r"seed=null is out of range; expected a seed, an integer in "),
    (
        "threads 0",
        ["threads=0"],
        r"^error: threads=0 is out of range; expected auto, or a thread count, an integer >= 1$",
    ),
    ("threads fraction", ["threads=1.5"], r"^error: threads=1.5 is out of range; expected auto, "),
    ("threads text", ["threads=many"], r"^error: threads='many' is out of range; expected auto, "),
    ("threads boolean", ["threads=true"], r"^error: threads=true is out of range; expected auto, "),
    ("threads null", ["threads=null"], r"^error: threads=null is out of range; expected auto, "),
    (
        "misspelled model key added with +",
        ["+model.dropuot=0.2"],
        r"model.dropuot=0.2: unknown key 'dropuot' in model; valid keys: activation, .*, dropout, "
        r"dropout_kind, dropout_where, hidden, init, ",
    ),
    (
        "misspelled clipping key added with +",
        ["+clipping.treshold=1.0"],
        r"clipping.treshold=1.0: unknown key 'treshold' in clipping; valid keys: kind, threshold$",
    ),
    (
        "unknown regularization key added with +",
        ["+regularization.l3=0.1"],
        r"regularization.l3=0.1: unknown key 'l3' in regularization; valid keys: l1, l2, max_norm,",
    ),
    (
        "unknown optimizer argument added with +",
        ["+optimizer.lrr=0.1"],
        r"optimizer.lrr=0.1: unknown key 'lrr' in optimizer; valid keys: .*lr, maximize, momentum",
    ),
    (
        "unknown scheduler key without a schedule",
        ["+scheduler.foo=1"],
        r"scheduler.foo=1: unknown key 'foo' in scheduler; valid keys: frequency, interval, "
        r"monitor, schedule$",
    ),
    (
        "scheduler setting without a schedule",
        ["+scheduler.interval=step"],
        r"scheduler.interval='step' needs a schedule: scheduler=none has none; choose one of: "
        r"exponential, onecycle, performance, piecewise, power$",
    ),
    (
        "not an optimizer",
        ["optimizer._target_=builtins.dict"],
        r"optimizer._target_='builtins.dict' must name a torch.optim.Optimizer subclass",
    ),
    (
        "an optimizer that needs a closure",
        ["optimizer._target_=torch.optim.LBFGS", "~optimizer.momentum", "~optimizer.weight_decay"],
        r"optimizer._target_='torch.optim.LBFGS' needs a closure at every step",
    ),
    (
        "an optimizer for sparse gradients",
        [
            "optimizer._target_=torch.optim.SparseAdam",
            "~optimizer.momentum",
            "~optimizer.weight_decay",
        ],
        r"optimizer._target_='torch.optim.SparseAdam' takes sparse gradients only",
    ),
    (
        "a network larger than memory",
        ["model.hidden=[1000000000]"],
        r"model.hidden=\[1000000000\]: the network has 795,000,000,010 parameters: 2.89 TiB as "
        r"float32, 5.78 TiB with their gradients .* this machine has .* of (RAM|GPU memory)",
    ),
    (
        "Lightning's gradient clipping flag",
        ["+trainer.gradient_clip_val=1.0"],
        r"trainer.gradient_clip_val=1.0 does not apply .*; "
        r"use clipping=norm clipping.threshold=1.0$",
    ),
    (
        "Lightning's value clipping flags",
        ["+trainer.gradient_clip_val=0.5", "+trainer.gradient_clip_algorithm=value"],
        r"trainer.gradient_clip_val=0.5 does not apply .*; "
        r"use clipping=value clipping.threshold=0.5$",
    ),
    (
        "Lightning's gradient accumulation flag",
        ["+trainer.accumulate_grad_batches=4"],
        r"trainer.accumulate_grad_batches=4 does not apply .*; for 4 batches of 32 per optimizer "
        r"step use data.batch_size=128",
    ),
    (
        "a negative number of training steps",
        ["trainer.limit_train_batches=-5"],
        r"^error: trainer.limit_train_batches=-5 is not valid; give a number of optimizer steps "
        r"\(an integer >= 0\) or a fraction of the epoch \(0.0-1.0\)$",
    ),
    (
        "a fraction of the epoch to overfit above 1",
        ["+trainer.overfit_batches=1.5"],
        r"^error: trainer.overfit_batches=1.5 is not valid; give a number of optimizer steps "
        r"\(an integer >= 0\) or a fraction of the epoch \(0.0-1.0\)$",
    ),
    (
        "a validation interval longer than the epoch",
        ["+trainer.val_check_interval=500"],  # QUICK: 160 optimizer steps an epoch
        r"^error: trainer.val_check_interval=500 is more than the 160 optimizer steps of an "
        r"epoch; give at most that many, or a fraction of the epoch \(0.0-1.0\)$",
    ),
    (
        "numbers for a list of integers",
        ["model.hidden=[1e9]"],
        r"model.hidden=\[1000000000.0\] has the wrong type; expected a list of integers like the "
        r"default model.hidden=\[300, 100\]$",
    ),
    (
        "model group removed",
        ["~model"],
        r"^error: ~model: the model group cannot be removed; choose "
        r"one of: mlp$",
    ),
    (
        "optimizer group removed",
        ["~optimizer"],
        r"~optimizer: the optimizer group cannot be removed; "
        r"choose one of: adagrad, adam, .*, sgd$",
    ),
    (
        "interpolation to a missing key",
        ["model.hidden=${oops}"],
        r"model.hidden=\$\{oops\}: cannot be resolved: Interpolation key 'oops' not found$",
    ),
]


@pytest.mark.parametrize(("case", "overrides", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_code_2(
    case: str, overrides, message: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    if isinstance(overrides, str):
        overrides = dataset(tmp_path, overrides)
    elif callable(overrides):
        overrides = overrides(tmp_path)
    code = call_train([*QUICK, *overrides], monkeypatch, tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and "\n" not in lines[0], err[-2000:]
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err


def test_hydra_full_error_shows_the_traceback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DNNLAB_ROOT", str(tmp_path))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["train.py", *QUICK, "optimizer.lr=-1"])
    with pytest.raises(ValueError, match=r"optimizer\.lr=-1 is out of range"):
        cli.entry_point(load_script("train.py").main)
    assert os.environ["HYDRA_FULL_ERROR"] == "1"


def test_a_real_process_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DNNLAB_ROOT": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "optimizer=foo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()  # one line, nothing else
    assert re.fullmatch(r"error: optimizer='foo' is not valid; choose one of: .*sgd.*", line)


@pytest.mark.slow
@requires_fashion
def test_a_failed_sweep_member_does_not_stop_the_others(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    code = call_train(
        ["-m", *QUICK, "trainer.max_epochs=1", "test=false", "optimizer.lr=-1,0.05"],
        monkeypatch,
        tmp_path,
    )
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    (sweep,) = (tmp_path / "logs" / "multiruns" / "default").iterdir()
    failed, done = sweep / "0_optimizer.lr=-1", sweep / "1_optimizer.lr=0.05"
    assert "optimizer.lr=-1 is out of range" in (failed / cli.FAILED_FILE).read_text()
    assert f"error: {failed}: optimizer.lr=-1 is out of range" in err
    assert (done / "checkpoints" / "last.ckpt").exists() and not (done / cli.FAILED_FILE).exists()


@pytest.mark.slow
def test_a_parallel_launchers_failed_member_sets_the_exit_code(tmp_path: Path) -> None:
    env = {**os.environ, "DNNLAB_ROOT": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    env.pop("HYDRA_FULL_ERROR", None)
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=-1,-2"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    (sweep,) = (tmp_path / "logs" / "multiruns" / "default").iterdir()
    assert all((member_folder(sweep, n) / cli.FAILED_FILE).exists() for n in (0, 1))


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [
        ("model.dropout", 0.5, True),
        ("model.dropout", 1.0, False),
        ("model.alpha_dropout", -0.1, False),
        ("regularization.dropout.rate", 1.5, False),
        ("mc_dropout.samples", 100, True),  # a count, not a rate
        ("optimizer.lr", 1e-3, True),
        ("optimizer.lr", 0.0, False),
        ("optimizer.weight_decay", -1e-4, False),
        ("optimizer.betas", [0.9, 0.999], True),
        ("optimizer.betas", [0.9, 1.5], False),
        ("scheduler.schedule.values", [0.1, 0.0], False),
        ("scheduler.schedule.boundaries", [5, 15], True),
        ("scheduler.schedule.boundaries", [5, 1.5], False),
        ("scheduler.schedule.total_steps", 2.5, False),
        ("clipping.threshold", 0.0, False),
        ("clipping.threshold", 1.0, True),
        ("regularization.max_norm", 0, False),
        ("transfer.unfreeze_lr", -1, False),
        ("transfer.layers", 0, False),
        ("transfer.layers", 2, True),
        ("transfer.freeze_epochs", 0, True),
        ("data.batch_size", 0, False),
        ("data.steps_per_block", 1, True),
        ("model.bn_momentum", 1.5, False),
        ("parity.bn_eps", 0.0, False),
        ("model.variance_scaling.scale", -2.0, False),
        ("model.hidden", [300, 100], True),  # sizes: no rule here (the model checks them)
        ("seed", 0, True),
        ("seed", 2**32 - 1, True),
        ("seed", 2**32, False),
        ("seed", None, False),  # null fits any type, but only an optional rule accepts it
        ("transfer.layers", None, True),  # optional: all of them
        ("clipping.threshold", None, False),
    ],
)
def test_range_rules_check_their_keys_only(key: str, value: float, ok: bool) -> None:
    cfg = OmegaConf.create()
    OmegaConf.update(cfg, key, value)
    if ok:
        check_ranges(cfg)
    else:
        bad = rf"{re.escape(key)}(\[\d\])?=.* is out of range"  # a list names its item: key[i]
        with pytest.raises(ConfigError, match=bad):
            check_ranges(cfg)


@pytest.mark.parametrize(
    ("optimizer", "copies", "gpu", "where"),
    [
        ({"_target_": "torch.optim.SGD"}, 2, False, "RAM"),
        ({"_target_": "torch.optim.SGD", "momentum": 0.9}, 3, False, "RAM"),
        ({"_target_": "torch.optim.Adam"}, 4, True, "GPU memory"),
    ],
)
def test_memory_check_counts_the_built_network_against_the_device(
    optimizer: dict, copies: int, gpu: bool, where: str, monkeypatch
) -> None:
    """The count is the real network's; weights, gradients and optimizer state must fit."""
    model = {"hidden": [300, 100], "batch_norm": "after"}
    count = sum(p.numel() for p in Classifier(model=model, optimizer=optimizer).parameters())
    needed = count * 4 * copies
    monkeypatch.setattr(memory.torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(memory.torch.cuda, "mem_get_info", lambda: (0, needed), raising=False)
    monkeypatch.setattr(memory, "ram_bytes", lambda: needed)
    memory.check_fits(model, optimizer, 784, 10)  # exactly enough
    monkeypatch.setattr(memory.torch.cuda, "mem_get_info", lambda: (0, needed - 1), raising=False)
    monkeypatch.setattr(memory, "ram_bytes", lambda: needed - 1)
    with pytest.raises(ConfigError, match=rf"the network has {count:,} parameters: .* of {where} "):
        memory.check_fits(model, optimizer, 784, 10)
