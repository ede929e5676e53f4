"""predict.py: class probabilities of a trained run for new images, bad inputs in one line."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from conftest import call_script, load_script, tiny_task
from dnnlab.data.idx import encode_idx

train_script, predict_script = load_script("train.py"), load_script("predict.py")


@pytest.fixture
def checkpoint(tmp_path: Path, monkeypatch) -> Path:
    args = [*tiny_task(tmp_path / "data"), "trainer.max_epochs=1", "data.classes=[3,1,7]"]
    assert call_script(train_script, args, monkeypatch, tmp_path) == 0
    (ckpt,) = (tmp_path / "logs" / "runs" / "default").glob("*/checkpoints/last.ckpt")
    return ckpt


def test_predict_writes_class_names_and_probabilities(
    tmp_path: Path, monkeypatch, checkpoint: Path
) -> None:
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    idx = tmp_path / "new-images-idx3-ubyte.gz"
    idx.write_bytes(gzip.compress(encode_idx(images)))
    np.save(tmp_path / "new.npy", (images / 255.0).reshape(5, 784).astype(np.float32))
    for inputs in (idx, tmp_path / "new.npy"):  # the same images, as pixels and scaled floats
        args = [f"ckpt_path={checkpoint}", f"inputs={inputs}"]
        assert call_script(predict_script, args, monkeypatch, tmp_path) == 0
    folders = sorted((tmp_path / "logs" / "predictions").iterdir())  # one per call, by time
    rows = {
        k: list(csv.DictReader((f / "predictions.csv").open()))
        for k, f in zip((".gz", ".npy"), folders, strict=True)
    }
    first = rows[".gz"]
    assert len(first) == 5 and list(first[0])[:4] == ["index", "pred", "pred_name", "confidence"]
    assert [k for k in first[0] if k.startswith("p_")] == ["p_3", "p_1", "p_7"], "MNIST's names"
    for row in first:
        probs = [float(v) for k, v in row.items() if k.startswith("p_")]
        assert sum(probs) == pytest.approx(1, abs=1e-4) and float(row["confidence"]) == max(probs)
    assert [r["pred"] for r in first] == [r["pred"] for r in rows[".npy"]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.npy", r"inputs='.*missing.npy': no such file; give a \.npy"),
        (
            lambda d: save(d / "x.npy", np.zeros((2, 27, 28), np.uint8)),
            r"images of shape \(2, 27, 28\)",
        ),
        (lambda d: save(d / "x.npy", np.zeros((2, 28, 28), np.int64)), r"pixels of dtype int64"),
        (
            lambda d: save(d / "x.npy", np.full((2, 784), 255.0)),
            r"float pixels must be .* in \[0, 1\]",
        ),
        (lambda d: text(d / "x.npy"), r"not a NumPy array file"),
        (lambda d: text(d / "x.csv"), r"unknown format"),
        (lambda d: text(d / "x-idx3-ubyte"), r"not an IDX file"),
    ],
)
def test_bad_inputs_are_one_line_and_exit_2(
    tmp_path: Path, monkeypatch, capsys, checkpoint: Path, make, message: str
) -> None:
    inputs = make(tmp_path)
    capsys.readouterr()
    code = call_script(
        predict_script, [f"ckpt_path={checkpoint}", f"inputs={inputs}"], monkeypatch, tmp_path
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert __import__("re").search(message, line), line


def save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def text(path: Path) -> Path:
    path.write_text("not images\n")
    return path
