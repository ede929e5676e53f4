"""Many scalars at one step: TensorBoard gets them as one event, other loggers as usual."""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dnnlab.scalars import log_scalars


def test_every_value_reads_back_at_its_step_from_tensorboard_and_csv(tmp_path: Path) -> None:
    tensorboard = TensorBoardLogger(tmp_path, name="tb", version=0)
    table = CSVLogger(tmp_path, name="csv", version=0)
    for step in (10, 20):
        log_scalars([tensorboard, table], {f"grad_norm/{i}": step + i for i in range(300)}, step)
    tensorboard.finalize("success")
    table.finalize("success")

    events = EventAccumulator(tensorboard.log_dir, size_guidance={"scalars": 0})
    events.Reload()
    assert len(events.Tags()["scalars"]) == 300
    for i in (0, 123, 299):
        assert [(e.step, e.value) for e in events.Scalars(f"grad_norm/{i}")] == [
            (10, 10 + i),
            (20, 20 + i),
        ]
    lines = (Path(table.log_dir) / "metrics.csv").read_text().splitlines()
    rows = list(csv.DictReader(lines))
    assert [(r["step"], r["grad_norm/299"]) for r in rows] == [("10", "309"), ("20", "319")]
