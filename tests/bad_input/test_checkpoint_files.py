"""A checkpoint a user names is checked before use: damage is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import write_checkpoint
from dnnlab.errors import ConfigError
from dnnlab.train.checkpoint_files import read_checkpoint


def damaged(tmp_path: Path, how: str) -> Path:
    path = tmp_path / f"{how}.ckpt"
    torch.save({"state_dict": {"w": torch.arange(20000.0)}, "epoch": 1}, path)
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        raw = raw[: len(raw) // 2]
    elif how == "flipped":  # inside the tensor's bytes: torch.load alone would load it
        raw[len(raw) // 2] ^= 0xFF
    elif how == "text":
        raw = bytearray(b"not a checkpoint\n")
    path.write_bytes(bytes(raw))
    if how == "no_state_dict":
        torch.save({"epoch": 1}, path)
    return path


def test_an_intact_checkpoint_loads(tmp_path: Path) -> None:
    checkpoint = read_checkpoint(damaged(tmp_path, "intact"), "ckpt_path")
    assert torch.equal(checkpoint["state_dict"]["w"], torch.arange(20000.0))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", r"not a checkpoint \(not a torch.save archive"),
        ("text", r"not a checkpoint \(not a torch.save archive"),
        ("flipped", r"a damaged checkpoint \(its member .* fails its CRC-32 check\)"),
        ("no_state_dict", r"not a Lightning checkpoint \(no state_dict inside\)"),
    ],
)
def test_a_damaged_checkpoint_is_one_line_naming_the_key(
    tmp_path: Path, how: str, message: str
) -> None:
    path = damaged(tmp_path, how)
    with pytest.raises(ConfigError, match=rf"^transfer.ckpt_path='{path}': {message}") as err:
        read_checkpoint(path, "transfer.ckpt_path")
    assert "\n" not in str(err.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ckpt_path='.*nowhere.ckpt': no such checkpoint file"):
        read_checkpoint(tmp_path / "nowhere.ckpt", "ckpt_path")


def test_a_folder_names_the_checkpoint_to_give(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": {}}, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(
        ConfigError, match=r"is a folder; give a checkpoint file in it: .*last.ckpt$"
    ):
        read_checkpoint(tmp_path, "transfer.ckpt_path")


def test_a_downloaded_file_gets_the_users_umask(tmp_path: Path) -> None:
    import os

    from dnnlab.data.sources import _store

    mask = os.umask(0o022)
    try:
        _store(tmp_path / "data", "train-labels-idx1-ubyte.gz", b"payload")
    finally:
        os.umask(mask)
    path = tmp_path / "data" / "train-labels-idx1-ubyte.gz"
    assert path.read_bytes() == b"payload" and path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file is left"


def test_checkpoint_from_before_the_package_folders_names_current_targets(tmp_path: Path) -> None:
    """Settings saved when schedules and the Keras optimizers lived in flat modules still build:
    the reader renames their targets, so such a checkpoint resumes, transfers and evaluates."""
    from dnnlab.building import target_of

    path = write_checkpoint(tmp_path / "old.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["scheduler"] = {
        "schedule": {"_target_": "dnnlab.schedules.exponential", "s": 20},
        "interval": "step",
    }
    checkpoint["hyper_parameters"]["optimizer"]["_target_"] = "dnnlab.optimizers_keras.SGD"
    torch.save(checkpoint, path)
    hparams = read_checkpoint(path, "ckpt_path")["hyper_parameters"]
    schedule = hparams["scheduler"]["schedule"]
    assert schedule == {"_target_": "dnnlab.optim.schedules.exponential", "s": 20}
    assert hparams["optimizer"]["_target_"] == "dnnlab.optim.keras.SGD"
    assert callable(target_of(schedule, "scheduler.schedule"))
    assert callable(target_of(hparams["optimizer"], "optimizer"))
