"""MC dropout, calibration and evaluating a saved run."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import (
    call_script,
    compose_config,
    damage_file,
    load_script,
    requires_fashion,
    run_script,
    tiny_data,
    write_checkpoint,
)
from dnnlab.errors import ConfigError
from dnnlab.evaluate.evaluation import (
    entropy,
    evaluate_checkpoint,
    mc_dropout_mode,
    mc_dropout_proba,
    predict_proba,
    summarize,
)
from dnnlab.train.run import evaluate_test_split, run


def net_with_bn_and_dropout(rate: float) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(rate), nn.Linear(64, 5)
    )
    net.train()
    with torch.no_grad():
        for _ in range(5):  # give BatchNorm non-trivial running statistics
            net(torch.randn(128, 20) * 3 + 1)
    return net


def test_mc_dropout_varies_while_batchnorm_stays_fixed() -> None:
    net = net_with_bn_and_dropout(0.5)
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(200, 20)
    samples = mc_dropout_proba(net, x, samples=20, seed=1)
    assert samples.shape == (20, 200, 5)
    assert (samples.std(dim=0) > 0).float().mean() > 0.9, "passes differ"
    for key, value in net.state_dict().items():
        assert torch.equal(value, buffers[key]), f"{key} changed"
    assert net.training and net[1].training, "previous modes restored"
    assert torch.equal(samples, mc_dropout_proba(net, x, samples=20, seed=1)), "seeded"
    assert not torch.equal(samples, mc_dropout_proba(net, x, samples=20, seed=2))


def test_mc_dropout_mode_puts_only_dropout_in_training() -> None:
    net = net_with_bn_and_dropout(0.5)
    with mc_dropout_mode(net):
        assert [m.training for m in net] == [False, False, False, True, False]


def test_mc_with_rate_zero_equals_plain() -> None:
    net = net_with_bn_and_dropout(0.0)
    x = torch.randn(50, 20)
    net.eval()
    plain = predict_proba(net, x)
    mc = mc_dropout_proba(net, x, samples=7)
    assert torch.allclose(mc.mean(dim=0), plain, atol=1e-6) and torch.all(mc.std(dim=0) < 1e-6)
    with pytest.raises(
        ConfigError,
        match=r"mc_dropout.samples=0 is out of range; expected a number of passes, an integer >= 1",
    ):
        mc_dropout_proba(net, x, samples=0)


def test_calibration_error_and_entropy_match_their_definitions() -> None:
    # Two bins' worth of predictions: confidence 0.9 (right 2 of 2), 0.6 (right 1 of 2).
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    targets = torch.tensor([0, 1, 0, 0])
    metrics = summarize(probs, targets, n_bins=10)
    # ECE = sum over bins of (n_b / N) * |acc_b - conf_b| = 0.5 * |1 - 0.9| + 0.5 * |0.5 - 0.6|
    assert metrics["ece"] == pytest.approx(0.1, abs=1e-6)
    assert metrics["acc"] == pytest.approx(0.75)
    assert entropy(torch.tensor([[0.5, 0.5]])).item() == pytest.approx(0.6931, abs=1e-4)


@requires_fashion
@pytest.mark.slow
def test_eval_py_evaluates_a_saved_run_from_its_checkpoint(make_config, tmp_path: Path) -> None:
    ckpt = saved_run(make_config)  # Hydra writes .hydra/config.yaml for real runs
    result = run_script(tmp_path, "eval.py", f"ckpt_path={ckpt}")
    assert result.returncode == 0, result.stderr[-2000:]
    (out,) = (tmp_path / "logs" / "evals").iterdir()
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 10000 and rows[0]["label_name"] == "Ankle boot"  # first test image
    metrics = json.loads((out / "evaluation.json").read_text())
    assert metrics["test/acc"] == pytest.approx(metrics["plain/acc"], abs=1e-6)
    assert metrics["plain/acc"] > 0.6
    bad = run_script(tmp_path, "eval.py", f"ckpt_path={tmp_path}/nothing.ckpt")
    assert bad.returncode == 2 and "no such checkpoint file" in bad.stderr


@requires_fashion
def test_train_reports_mc_dropout_next_to_plain(make_config) -> None:
    cfg = make_config(["model.dropout=0.2", "mc_dropout.samples=5", "model.batch_norm=after"])
    metrics = run(cfg)
    assert {"plain/acc", "plain/ece", "mc/acc", "mc/ece", "mc/std", "mc/entropy"} <= set(metrics)
    assert metrics["mc/std"] > 0 and metrics["mc/acc"] > 0.5
    assert metrics["plain/acc"] > 0.5  # all 10,000 test images (the quick test used 1,000)
    rows = list(csv.DictReader((Path(cfg.paths.output_dir) / "predictions.csv").open()))
    assert len(rows) == 10000 and float(rows[0]["mc_std"]) >= 0
    no_dropout = make_config(["mc_dropout.samples=5"], run="plain")
    with pytest.raises(ConfigError, match=r"mc_dropout.samples=5 needs dropout layers"):
        run(no_dropout)
    assert not (Path(no_dropout.paths.output_dir) / "checkpoints").exists(), "before training"


def test_only_the_first_ddp_process_evaluates_and_writes(make_config, tmp_path: Path) -> None:
    cfg = make_config(["model.dropout=0.2", "mc_dropout.samples=3"])
    other_rank = SimpleNamespace(is_global_zero=False, loggers=[], global_step=0)
    assert evaluate_test_split(cfg, None, None, other_rank) == {}
    assert not any(Path(cfg.paths.output_dir).glob("*")), "nothing written"


def saved_run(make_config) -> Path:
    """A trained run's last checkpoint, beside the config Hydra would have written."""
    cfg = make_config(["trainer.max_epochs=1", "test=false"])
    run(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    (ckpt.parent.parent / ".hydra").mkdir()
    (ckpt.parent.parent / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return ckpt


@requires_fashion
def test_eval_of_the_validation_split_and_a_model_without_dropout(
    make_config, tmp_path: Path, monkeypatch
) -> None:
    ckpt = saved_run(make_config)
    metrics = evaluate_checkpoint(ckpt, tmp_path / "val", split="val")
    assert "val/acc" in metrics and "step" not in metrics, "training's x-axis is no metric"

    def lightning_pass(*args: object) -> None:
        raise AssertionError("Lightning's pass ran before the check")

    monkeypatch.setattr("dnnlab.evaluate.evaluation.lightning_metrics", lightning_pass)
    with pytest.raises(ConfigError, match=r"mc_dropout.samples=4 needs dropout layers"):
        evaluate_checkpoint(ckpt, tmp_path / "mc", mc_samples=4)


@requires_fashion
def test_eval_of_the_tested_checkpoint_reports_what_train_reported(
    make_config, tmp_path: Path
) -> None:
    """train.py and eval.py share one evaluation: same weights, same seed, same numbers."""
    cfg = make_config(["model.dropout=0.2", "mc_dropout.samples=3", "mc_dropout.seed=7"])
    trained = run(cfg)
    folder = Path(cfg.paths.output_dir)
    in_run_folder = json.loads((folder / "evaluation.json").read_text())
    assert in_run_folder == {k: v for k, v in trained.items() if k.startswith(("plain/", "mc/"))}
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (best,) = (folder / "checkpoints").glob("epoch_*.ckpt")  # save_top_k=1: the tested one
    out = tmp_path / "eval"
    evaluated = evaluate_checkpoint(best, out, mc_samples=3, seed=7)
    for key, value in in_run_folder.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6), key
    written = json.loads((out / "evaluation.json").read_text())
    assert list(written)[:2] == ["ckpt_path", "split"]
    assert set(list(written)[2:4]) == {"test/acc", "test/loss"}, "Lightning's, as documented"
    assert written == {"ckpt_path": str(best), "split": "test", **evaluated}
    assert (out / "predictions.csv").read_text() == (folder / "predictions.csv").read_text()


eval_script = load_script("eval.py")


def tiny_run(
    tmp_path: Path, data: list[str] = (), model: list[str] = (), **saved_model: object
) -> Path:
    """A run folder on tiny data as train.py leaves it: its ``.hydra/config.yaml`` (with the
    ``data`` overrides) and ``checkpoints/last.ckpt`` (as write_checkpoint makes it)."""
    folder = tmp_path / "run"
    cfg = compose_config([*tiny_data(tmp_path), *data, *model], output_dir=folder)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return write_checkpoint(folder / "checkpoints" / "last.ckpt", model, **saved_model)


def damaged_run(how: str) -> Callable[[Path], list[str]]:
    def make(tmp_path: Path) -> list[str]:
        return [f"ckpt_path={damage_file(tiny_run(tmp_path), how)}"]

    return make


def run_of(**changes: object) -> Callable[[Path], list[str]]:
    """A tiny run whose checkpoint's model settings are changed, or (``data``) whose config is."""

    def make(tmp_path: Path) -> list[str]:
        return [f"ckpt_path={tiny_run(tmp_path, **changes)}"]

    return make


def another_models_checkpoint(tmp_path: Path) -> list[str]:
    """A Lightning checkpoint, in a run folder, of a model that is not dnnlab's."""
    ckpt = tiny_run(tmp_path)
    torch.save({"state_dict": nn.Linear(2, 2).state_dict(), "hyper_parameters": {}}, ckpt)
    return [f"ckpt_path={ckpt}"]


def saved_config(text: str) -> Callable[[Path], list[str]]:
    """A tiny run whose ``.hydra/config.yaml`` holds ``text`` instead."""

    def make(tmp_path: Path) -> list[str]:
        ckpt = tiny_run(tmp_path)
        (ckpt.parent.parent / ".hydra" / "config.yaml").write_text(text)
        return [f"ckpt_path={ckpt}"]

    return make


# (case, a function of tmp_path making the files and giving eval.py's arguments, the message)
EVAL_CASES = [
    (
        "checkpoint a text file",
        damaged_run("text"),
        r"^error: ckpt_path='.*last.ckpt': not a checkpoint \(not a torch.save archive",
    ),
    (
        "checkpoint truncated",
        damaged_run("truncated"),
        r"ckpt_path='.*last.ckpt': not a checkpoint \(not a torch.save archive",
    ),
    (
        "checkpoint with flipped bytes",
        damaged_run("flipped"),
        r"ckpt_path='.*last.ckpt': a damaged checkpoint \(its member .* fails its CRC-32 check",
    ),
    (
        "checkpoint of another model than dnnlab's",
        another_models_checkpoint,
        r"ckpt_path='.*': not a dnnlab model's checkpoint \(no model settings in its "
        r"hyper_parameters\); give a checkpoint that dnnlab wrote$",
    ),
    (
        "checkpoint whose settings build no model",
        run_of(activation="nope"),
        r"ckpt_path='.*': its hyper_parameters do not build a model \(model.activation='nope'",
    ),
    (
        "checkpoint whose weights do not fit its settings",
        run_of(hidden=[300, 50]),
        r"ckpt_path='.*': its weights do not fit its own model settings "
        r"\(RuntimeError: size mismatch for net.3.weight",
    ),
    (
        "checkpoint of another label set than its run folder's data",
        run_of(data=["data.classes=[0,2]"]),
        r"ckpt_path='.*': its model takes \(28, 28\) images into 10 classes, but its run "
        r"folder's data \(data.name=mnist, data.classes=\[0, 2\]\) has 2 classes",
    ),
    (
        "run folder config not YAML",
        saved_config("data: [unclosed\n"),
        r"ckpt_path='.*': the run folder's .*config.yaml cannot be used: it is not valid YAML",
    ),
    (
        "run folder config not a mapping",
        saved_config("- data\n- model\n"),
        r"config.yaml cannot be used: it is not a mapping of settings; evaluate a checkpoint",
    ),
    (
        "run folder config without data",
        saved_config("seed: 1\n"),
        r"config.yaml cannot be used: it has no data settings",
    ),
    (
        "negative MC dropout passes, before any file is read",
        lambda tmp_path: ["ckpt_path=nowhere.ckpt", "mc_dropout.samples=-1"],
        r"^error: mc_dropout.samples=-1 is out of range; "
        r"expected a number of MC dropout passes \(0: off\), an integer >= 0$",
    ),
    (
        "unknown split, before any file is read",
        lambda tmp_path: ["ckpt_path=nowhere.ckpt", "split=train"],
        r"^error: split='train' is not valid; choose one of: test, val$",
    ),
]


@pytest.mark.parametrize(
    ("case", "arguments", "message"), EVAL_CASES, ids=[c[0] for c in EVAL_CASES]
)
def test_eval_py_refuses_bad_files_in_one_line(
    case: str, arguments, message: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    code = call_script(eval_script, arguments(tmp_path), monkeypatch, tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err


def test_eval_py_evaluates_a_tiny_run_with_mc_dropout(tmp_path: Path, monkeypatch) -> None:
    ckpt = tiny_run(tmp_path, model=["model.dropout=0.2"])
    arguments = [f"ckpt_path={ckpt}", "mc_dropout.samples=2", "split=val"]
    assert call_script(eval_script, arguments, monkeypatch, tmp_path) == 0
    (out,) = (tmp_path / "logs" / "evals").iterdir()
    written = json.loads((out / "evaluation.json").read_text())
    assert written["split"] == "val" and {"val/acc", "plain/acc", "mc/acc"} <= set(written)
    assert len(list(csv.DictReader((out / "predictions.csv").open()))) == 10  # data.val_size
