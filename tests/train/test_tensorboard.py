"""What TensorBoard and a sweep folder show: HParams columns, member names, report cells."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import call_script, load_script, tiny_task
from dnnlab.app.members import MOST_CHARACTERS, SWEPT, member_dir, swept_keys
from dnnlab.evaluate.report import _cell, member_number

logging.getLogger("tensorboard").setLevel(logging.WARNING)


def hparams_of(folder: Path) -> tuple[dict[str, object], list[str]]:
    """The HParams entry of a run folder: its hyperparameters and the metric tags it names."""
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    values = {}
    for key, value in start.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    metrics = [m.name.tag for m in experiment.experiment.metric_infos]
    return values, metrics


def test_sweep_members_say_their_setting_and_each_has_a_short_hparams_entry(
    tmp_path: Path, monkeypatch
) -> None:
    overrides = [o for o in tiny_task(tmp_path / "data") if not o.startswith("logger=")]
    args = ["-m", *overrides, "trainer.max_epochs=1", "model.activation=relu,elu,selu", "seed=3"]
    assert call_script(load_script("train.py"), args, monkeypatch, tmp_path) == 0
    (sweep,) = (tmp_path / "logs" / "multiruns" / "default").iterdir()
    members = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: p.name)
    names = [p.name for p in members]
    assert names == [f"{i}_model.activation={a}" for i, a in enumerate(("relu", "elu", "selu"))]
    for member, activation in zip(members, ("relu", "elu", "selu"), strict=True):
        hparams, metrics = hparams_of(member)  # every run has its entry, flushed and closed
        assert hparams["model.activation"] == activation and hparams["seed"] == 3
        assert hparams["optimizer"] == "sgd" and hparams["data"] == "mnist"
        assert hparams["trainer.max_epochs"] == 1  # a command-line override, resolved
        assert len(hparams) < 30, sorted(hparams)
        assert not [k for k in hparams if "_target_" in k or "dirpath" in k or "paths" in k]
        assert "val/acc_best" in metrics and not [m for m in metrics if m.startswith("hparam/")]
    report = (sweep / "report.md").read_text()
    assert "| relu | 1 |" in report and "| 1 | " in report.split("| relu | 1 |")[1], "epochs: 1"
    assert SWEPT not in __import__("os").environ, "the sweep's keys do not outlive it"


def test_member_names_are_safe_short_and_sort_by_number(monkeypatch) -> None:
    assert swept_keys(["-m", "model.activation=relu,elu", "seed=1", "hydra.verbose=a,b"]) == [
        "model.activation"
    ]
    monkeypatch.setenv(SWEPT, "model.hidden,data.root")
    assert member_dir(0, ["seed=1"]) == "0", "nothing swept: the number alone"
    name = member_dir(2, ["model.hidden=[10, 10]", "data.root=/a/b c", "seed=1"])
    assert name == "2_model.hidden=[10,_10],data.root=_a_b_c"
    long = member_dir(12, [f"data.root=/{'x' * 300}"])
    assert len(long) == MOST_CHARACTERS and long.startswith("12_data.root=")
    monkeypatch.delenv(SWEPT)
    assert member_dir(1, ["optimizer.lr=0.1"], {"optimizer.lr": "interval(0.01, 1)"}) == (
        "1_optimizer.lr=0.1"
    )
    folders = ["10_a=1", "9_a=2", "0"]
    assert sorted(folders, key=member_number) == ["0", "9_a=2", "10_a=1"]


@pytest.mark.parametrize(
    ("values", "cell"),
    [([1.0], "1"), ([10.0, 10.0], "10"), ([0.5], "0.5000"), ([9.0, 10.0], "9.5000 ± 0.7071")],
)
def test_report_cells_show_integers_as_integers(values: list[float], cell: str) -> None:
    assert _cell(values) == cell
