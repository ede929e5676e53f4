"""The ``threads`` setting: how ``auto`` resolves, and what a run records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dnnlab.errors import ConfigError
from dnnlab.train import threads
from dnnlab.train.run import run
from dnnlab.train.threads import PARALLEL_WORK, layer_work, resolve_threads

SMALL, LARGE = PARALLEL_WORK - 1, PARALLEL_WORK


def resolve(setting: object = "auto", work: int = SMALL, **kwargs: object) -> int:
    options = {"cores": 8, "environ": {}, "parallel_member": False, "default": 4, **kwargs}
    return resolve_threads(setting, work, **options).threads


def test_auto_gives_small_networks_one_thread_and_large_ones_torchs_count_capped_by_cores():
    assert resolve(work=SMALL) == 1
    assert resolve(work=LARGE) == 4  # torch's default (one per physical core)
    assert resolve(work=LARGE, cores=2) == 2  # never more than the usable cores


def test_auto_respects_omp_num_threads_and_gives_parallel_sweep_members_one():
    assert resolve(work=SMALL, environ={"OMP_NUM_THREADS": "3"}) == 3
    assert resolve(work=LARGE, environ={"OMP_NUM_THREADS": "1"}) == 1
    assert resolve(work=LARGE, environ={"OMP_NUM_THREADS": "junk"}) == 4  # torch ignores it too
    # joblib sets OMP_NUM_THREADS in its workers itself: the member rule comes first.
    assert resolve(work=LARGE, environ={"OMP_NUM_THREADS": "8"}, parallel_member=True) == 1


def test_an_explicit_count_is_used_as_given():
    assert resolve(3, work=SMALL, environ={"OMP_NUM_THREADS": "1"}, parallel_member=True) == 3
    assert resolve(16, cores=2) == 16


@pytest.mark.parametrize("bad", [0, -1, 1.5, "many", "4", True, None])
def test_bad_settings_are_one_line(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"^threads=.* is out of range; expected auto, or a "):
        resolve(bad)


def test_layer_work_is_batch_times_the_mean_dense_layer():
    model = {"hidden": [300, 100]}
    weights = 784 * 300 + 300 * 100 + 100 * 10
    assert layer_work(model, 784, 10, 32) == 32 * weights // 3
    # the default MLP and the 100-layer net are small; 1000x1000 layers at batch 32 are not
    assert layer_work(model, 784, 10, 32) < PARALLEL_WORK
    assert layer_work({"hidden": [100] * 100}, 784, 10, 32) < PARALLEL_WORK
    assert layer_work({"hidden": [1000, 1000]}, 784, 10, 32) >= PARALLEL_WORK


def test_a_run_applies_and_records_its_thread_count(make_config, monkeypatch, tmp_path: Path):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        cfg = make_config(["threads=auto"])
        run(cfg)
        assert torch.get_num_threads() == 1  # the quick config's small network
        summary = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
        assert summary["threads"]["setting"] == "auto"
        assert summary["threads"]["intra_op"] == 1
        assert "multiply-adds per layer" in summary["threads"]["reason"]
        cfg = make_config(["threads=2"], run="two")
        run(cfg)
        assert torch.get_num_threads() == 2
        summary = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
        assert summary["threads"] == {**summary["threads"], "setting": 2, "intra_op": 2}
    finally:
        torch.set_num_threads(before)
