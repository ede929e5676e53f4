"""Each schedule follows the book's formula; bad values give one line; state stays primitive."""

from __future__ import annotations

import io
import itertools
import re
from types import SimpleNamespace

import pytest
import torch

from dnnlab.app.checks import check_ranges
from dnnlab.app.compose import CONFIG_DIR, compose_config
from dnnlab.errors import ConfigError
from dnnlab.optim.schedules import PowerDecay, build_schedule, exponential, join_schedule
from dnnlab.train.run import plain

SCHEDULES = sorted(p.stem for p in (CONFIG_DIR / "scheduler").glob("*.yaml") if p.stem != "none")
# A stand-in for the trainer: 100 optimizer steps per epoch, 10 epochs.
TRAINER = SimpleNamespace(
    max_epochs=10,
    max_steps=-1,
    estimated_stepping_batches=10,
    num_training_batches=4,
    # 100 mini-batches in blocks of 32: a block count -> its optimizer steps
    train_dataloader=SimpleNamespace(steps_through=lambda blocks: min(32 * blocks, 100)),
)


def scheduler_node(name: str, *overrides: str) -> dict:
    cfg = compose_config([f"scheduler={name}", *overrides], output_dir="unused")
    return plain(cfg.scheduler)


def optimizer(lr: float = 0.1, momentum: float = 0.9) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=lr, momentum=momentum)


def lr_sequence(node: dict, steps: int, opt: torch.optim.Optimizer | None = None) -> list[float]:
    """The LR used at t = 0, 1, ..., steps - 1 (one scheduler step after each)."""
    opt = opt or optimizer()
    schedule = build_schedule(node, opt, TRAINER)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return lrs


def test_power_schedule_is_eta0_over_one_plus_t_over_s_to_the_c() -> None:
    node = scheduler_node("power", "scheduler.schedule.s=20", "scheduler.schedule.c=2")
    lrs = lr_sequence(node, 101)
    for t in (0, 1, 20, 60, 100):
        assert lrs[t] == pytest.approx(0.1 / (1 + t / 20) ** 2, rel=1e-9)


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_exponential_schedule_drops_tenfold_every_s(interval: str) -> None:
    node = scheduler_node(
        "exponential", f"scheduler.interval={interval}", "scheduler.schedule.s=25"
    )
    lrs = lr_sequence(node, 101)
    for t in (0, 7, 25, 50, 100):
        assert lrs[t] == pytest.approx(0.1 * 0.1 ** (t / 25), rel=1e-6)


def test_piecewise_constant_uses_the_values_between_boundaries() -> None:
    lrs = lr_sequence(scheduler_node("piecewise"), 20)  # the book: [5, 15], [0.01, 0.005, 0.001]
    assert lrs[:5] == [0.01] * 5 and lrs[5:15] == [0.005] * 10 and lrs[15:] == [0.001] * 5


def test_one_cycle_peaks_at_max_lr_midway_and_ends_far_below_the_start() -> None:
    node = scheduler_node("onecycle", "scheduler.schedule.max_lr=0.5")
    opt = optimizer()
    lrs, momenta = [], []
    schedule = build_schedule(node, opt, TRAINER)
    for _ in range(1000):  # the whole run: 10 epochs x 100 steps
        lrs.append(opt.param_groups[0]["lr"])
        momenta.append(opt.param_groups[0]["momentum"])
        opt.step()
        schedule.step()
    peak = max(range(1000), key=lrs.__getitem__)
    assert lrs[0] == pytest.approx(0.05) and lrs[peak] == pytest.approx(0.5)
    assert 400 <= peak <= 500, "warm up over about half the run"
    assert lrs[2 * peak] == pytest.approx(0.05, rel=1e-6), "back down to the start"
    assert lrs[-1] == pytest.approx(0.05 / 1000, rel=1e-3), "then a few decades lower"
    rises = [b - a for a, b in itertools.pairwise(lrs[: peak + 1])]
    assert min(rises) == pytest.approx(max(rises)) and min(rises) > 0, "linear up"
    # Inverse momentum cycling: high when the LR is low, and back to the maximum at the end.
    assert momenta[0] == pytest.approx(0.95) and momenta[peak] == pytest.approx(0.85)
    assert momenta[-1] == pytest.approx(0.95)


def plateau_lrs(losses: list[float], patience: int) -> list[float]:
    node = scheduler_node("performance", f"scheduler.schedule.patience={patience}")
    opt = optimizer()
    schedule = build_schedule(node, opt, TRAINER)
    lrs = []
    for loss in losses:
        opt.step()
        schedule.step(loss)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_plateau_halves_the_lr_only_after_patience_epochs_without_gain() -> None:
    losses = [1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.94, 0.8]  # best 0.9 at epoch 1, then 5 worse
    lrs = plateau_lrs(losses, patience=5)
    assert lrs[:6] == [0.1] * 6, "4 epochs without gain: not yet"
    assert lrs[6] == pytest.approx(0.05), "the 5th epoch without gain cuts the LR"
    assert lrs[7] == pytest.approx(0.05)
    assert plateau_lrs([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4], patience=2) == [0.1] * 7


def test_one_cycle_length_is_the_runs_optimizer_steps() -> None:
    """Blocks of steps and limit_train_batches: the epoch is counted in optimizer steps."""
    from dnnlab.optim.schedules import run_length

    assert run_length(TRAINER, "step") == 10 * 100  # 4 blocks x 32 = 128, capped at 100 batches
    limited = SimpleNamespace(**{**vars(TRAINER), "num_training_batches": 2})
    assert run_length(limited, "step") == 10 * 64
    assert run_length(SimpleNamespace(**{**vars(TRAINER), "max_steps": 300}), "step") == 300
    assert run_length(TRAINER, "epoch") == 10


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_state_loads_weights_only(name: str) -> None:
    opt = optimizer()
    schedule = build_schedule(scheduler_node(name), opt, TRAINER)
    for _ in range(3):
        opt.step()
        schedule.step(1.0) if name == "performance" else schedule.step()
    buffer = io.BytesIO()
    torch.save(schedule.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    again = build_schedule(scheduler_node(name), optimizer(), TRAINER)
    again.load_state_dict(state)
    assert again.get_last_lr() == schedule.get_last_lr()


# Range errors: the same line from the config check (before any data is read) and the builder.
RANGE_CASES = [
    (
        ["scheduler=piecewise", "scheduler.schedule.values=[0.1,-1,0.01]"],
        "scheduler.schedule.values[1]=-1 is out of range; expected a learning rate > 0",
    ),
    (
        ["scheduler=piecewise", "scheduler.schedule.boundaries=[0,5]"],
        "scheduler.schedule.boundaries[0]=0 is out of range; "
        "expected a boundary (scheduler step), an integer >= 1",
    ),
    (
        ["scheduler=power", "scheduler.schedule.s=-3"],
        "scheduler.schedule.s=-3 is out of range; expected a decay period s (steps or epochs) > 0",
    ),
    (
        ["scheduler=exponential", "scheduler.schedule.decay_rate=2"],
        "scheduler.schedule.decay_rate=2 is out of range; expected a decay rate in (0, 1)",
    ),
    (
        ["scheduler=exponential", "scheduler.frequency=0"],
        "scheduler.frequency=0 is out of range; "
        "expected a frequency (intervals per scheduler step), an integer >= 1",
    ),
    (
        ["scheduler=performance", "scheduler.schedule.factor=1.5"],
        "scheduler.schedule.factor=1.5 is out of range; expected a reduction factor in (0, 1)",
    ),
    (
        ["scheduler=performance", "scheduler.schedule.patience=0"],
        "scheduler.schedule.patience=0 is out of range; "
        "expected a patience in epochs, an integer >= 1",
    ),
    (
        ["scheduler=onecycle", "scheduler.schedule.max_lr=-0.1"],
        "scheduler.schedule.max_lr=-0.1 is out of range; expected a learning rate > 0",
    ),
    (
        ["scheduler=onecycle", "scheduler.schedule.warmup_fraction=0.7"],
        "scheduler.schedule.warmup_fraction=0.7 is out of range; "
        "expected a warm-up fraction of the run in (0, 0.5)",
    ),
    (
        ["scheduler=onecycle", "scheduler.schedule.max_momentum=1.0"],
        "scheduler.schedule.max_momentum=1.0 is out of range; expected a momentum in [0, 1)",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        *RANGE_CASES,
        (["scheduler=piecewise", "scheduler.schedule.boundaries=[15,5]"], "strictly increasing"),
        (["scheduler=piecewise", "scheduler.schedule.values=[0.1,0.01]"], "one value more"),
        (["scheduler=exponential", "scheduler.interval=batch"], "choose one of: epoch, step"),
        (["scheduler=performance", "scheduler.monitor=val/acc"], "does not fit"),
        (["scheduler=performance", "scheduler.monitor=val/los"], "scheduler.monitor='val/los'"),
        (
            ["scheduler=onecycle", "scheduler.schedule.base_momentum=0.96"],
            "scheduler.schedule.base_momentum=0.96 must be <= scheduler.schedule.max_momentum=0.95",
        ),
        (
            ["scheduler=onecycle", "+scheduler.schedule.foo=1"],
            "scheduler.schedule.foo=1: unknown key 'foo' in scheduler.schedule; valid keys: ",
        ),
        (["scheduler=onecycle", "scheduler.schedule._target_=nowhere.f"], "not an importable"),
    ],
)
def test_bad_schedule_values_are_one_line(overrides: list[str], message: str) -> None:
    node = plain(compose_config(overrides, output_dir="unused").scheduler)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        build_schedule(node, optimizer(), TRAINER)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [*RANGE_CASES, (["scheduler=exponential", "scheduler.interval=batch"], "choose one of")],
)
def test_bad_schedule_values_stop_the_run_before_any_data_is_read(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_ranges(compose_config(overrides, output_dir="unused"))


def test_schedule_functions_check_their_arguments_outside_a_config() -> None:
    with pytest.raises(ConfigError, match=r"scheduler.schedule.s=true is out of range"):
        exponential(optimizer(), s=True)
    with pytest.raises(ConfigError, match=r"scheduler.schedule.c='2' is out of range"):
        PowerDecay(10, "2")


def test_one_cycle_without_momentum_says_how_to_switch_cycling_off() -> None:
    adagrad = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    with pytest.raises(ConfigError, match="cycle_momentum=false"):
        build_schedule(scheduler_node("onecycle"), adagrad, TRAINER)


def momentum_of(group: dict) -> float:
    return group.get("momentum", group.get("betas", (None,))[0])


@pytest.mark.parametrize("name", SCHEDULES)
def test_a_group_added_later_follows_the_schedule_at_its_own_scale(name: str) -> None:
    """Unfrozen layers join as a new param group: the schedule scales it as it scales the first,
    from the LR it joins with, and its state (per-group lists included) stays primitive."""
    settings = ["scheduler.schedule.patience=1", "scheduler.schedule.threshold=0.5"]
    node = scheduler_node(name, *(settings if name == "performance" else []))
    opt = optimizer()
    schedule = build_schedule(node, opt, TRAINER)

    def step() -> None:
        opt.step()
        schedule.step(1.0) if name == "performance" else schedule.step()

    for _ in range(3):
        step()
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.03})
    join_schedule(schedule, opt.param_groups[-1])
    ratio = 0.03 / opt.param_groups[0]["lr"]
    first, added = [], []
    for _ in range(10 if name == "performance" else 600):  # 1cycle: past its peak at 450
        step()
        first.append(opt.param_groups[0]["lr"])
        added.append(opt.param_groups[1]["lr"])
        assert momentum_of(opt.param_groups[1]) == momentum_of(opt.param_groups[0])
    assert added == pytest.approx([lr * ratio for lr in first], rel=1e-9)
    assert len(set(first)) > 1, "the schedule moved after the group joined"
    buffer = io.BytesIO()
    torch.save(schedule.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)
