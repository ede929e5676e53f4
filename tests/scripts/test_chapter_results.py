"""scripts/chapter_results.py: the verdict rule, a page without invented numbers, resuming."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from dnnlab.app.compose import compose_config


def load():
    spec = importlib.util.spec_from_file_location(
        "chapter_results", ROOT / "scripts" / "chapter_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


chapter = load()


def test_every_member_names_a_book_experiment_that_composes() -> None:
    for study in chapter.STUDIES:
        for member in chapter.all_members(study):
            need = ["transfer.ckpt_path=x.ckpt"] if member.needs else []
            cfg = compose_config(
                [f"experiment={member.experiment}", *member.overrides, *need], output_dir="/t"
            )
            assert member.experiment.startswith("book/") and cfg.name.startswith("book_")
    keys = [m.key for s in chapter.STUDIES for m in s.members]
    assert len(keys) == len(set(keys))  # one run folder and one entry per member


def test_the_verdict_rule_uses_the_seeds_spread_and_one_point() -> None:
    assert chapter.flag(0.87, [0.868, 0.872, 0.870]) == "agrees"
    assert chapter.flag(0.87, [0.850, 0.851, 0.852]) == "**differs**"  # 2 pp, std 0.1 pp
    assert chapter.flag(0.87, [0.80, 0.86, 0.92]) == "agrees"  # inside 2 std
    assert chapter.flag(0.87, [0.8795, 0.8800, 0.8805]) == "agrees"  # 1 pp: not beyond it


def test_a_study_not_run_says_so_with_its_command(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    results = {"l2": {"42": {"val/acc": 0.82, "seconds": 10.0}}}
    chapter.write_page(out, results, [42, 43])
    page = out.read_text()
    assert "| l2(0.01) on every kernel, SGD 0.02 ¹ | 0.8182 (99) | 0.8200 ± 0.0000 (1) |" in page
    assert "--studies l2 --seeds 42 43" in page  # seed 43 is missing
    assert (
        page.count("not run yet") == sum(len(chapter.all_members(s)) for s in chapter.STUDIES) - 1
    )
    assert (tmp_path / "results" / "l2.png").is_file()
    assert not (tmp_path / "results" / "optimizers.png").exists()


def test_finished_runs_are_skipped_and_force_redoes_them(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_train(member, seed, runs):
        calls.append((member.key, seed))
        return {"val/acc": 0.8, "seconds": 1.0}

    monkeypatch.setattr(chapter, "train", fake_train)
    out = tmp_path / "docs" / "results.md"
    args = ["--studies", "l2", "--seeds", "1", "2", "--out", str(out), "--runs-dir", str(tmp_path)]
    assert chapter.main(args) == 0
    assert calls == [("l2", 1), ("l2", 2)]
    stored = json.loads((tmp_path / "docs" / "results" / "chapter.json").read_text())
    assert set(stored["l2"]) == {"1", "2"}
    assert chapter.main(args) == 0 and len(calls) == 2  # nothing left to do
    assert chapter.main([*args, "--force"]) == 0 and len(calls) == 4


def test_transfer_b_on_a_retrains_a_whose_checkpoint_is_gone(tmp_path: Path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(chapter, "train", lambda m, s, r: calls.append(m.key) or {"seconds": 1.0})
    # (no metrics: the page shows such a run as not run rather than failing)
    out = tmp_path / "results.md"
    store = tmp_path / "results" / "chapter.json"
    store.parent.mkdir()
    done = {"seconds": 1.0, "val/acc": 0.9, "test/acc": 0.9}
    store.write_text(json.dumps({k: {"7": done} for k in ("transfer_a", "transfer_b")}))
    args = ["--studies", "transfer", "--seeds", "7", "--out", str(out), "--runs-dir", str(tmp_path)]
    assert chapter.main(args) == 0
    assert calls == ["transfer_a", "transfer_b_on_a"]


def test_unknown_studies_are_refused_naming_the_choices() -> None:
    with pytest.raises(SystemExit, match="unknown --studies nope; choose from deep_nets, "):
        chapter.main(["--studies", "nope"])


def test_a_run_folder_a_killed_script_left_is_set_aside(tmp_path: Path, monkeypatch) -> None:
    """The seed's folder of a killed earlier run is renamed, kept whole, and the seed retrains
    (train.py refuses a run folder that holds files: the script used to stop there)."""
    member = chapter.STUDIES[0].members[0]
    left = chapter.run_dir(tmp_path, member.key, 42)
    (left / "checkpoints").mkdir(parents=True)
    (left / "metrics.csv").write_text("partial\n")

    def fake_run(command: list[str], **kwargs: object) -> object:
        out = Path(next(a for a in command if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        assert not out.exists(), "train.py gets a fresh folder"
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"metrics": {member.metric: 0.5}}))
        return type("Done", (), {"returncode": 0, "stdout": "", "stderr": ""})()

    monkeypatch.setattr(chapter.subprocess, "run", fake_run)
    assert chapter.train(member, 42, tmp_path)[member.metric] == 0.5
    (kept,) = left.parent.glob("seed_42.killed-*")
    assert (kept / "metrics.csv").read_text() == "partial\n"
