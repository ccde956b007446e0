"""Time per step of lrkeeper's pure-Python engine against torch's own scheduler.

``python -m bench.engine [--quick] [--write]``

For every scheduler type, the engine (``service.schedules.build`` then
``scheduler.step(metrics)``) and torch 2.13.0 (``scheduler.step()`` on an SGD
optimizer with momentum and two param groups) run the same config in this
process, in alternating chunks of steps (engine first in even rounds, torch
first in odd ones), each chunk on freshly built schedulers. A chunk's time per
step is its wall time over its step count; the table gives the median over
rounds for each side and the median of the per-round ratios, so drift in the
machine's load hits both sides alike. After every chunk both sides' lrs are
compared: the timing only counts if they stepped the same schedule.

LRRangeTest has no torch twin: it is timed alone.
"""

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench import (
    format_number,
    format_ratio,
    machine_description,
    markdown_table,
    median,
    timestamp,
    write_section,
)
from service.schedules import Scheduler, build

TorchFactory = Callable[[torch.optim.Optimizer], Any]
# Ratios this close to 1 are parity: run to run, the same code moves by about this much.
PARITY_TOLERANCE = 1.02
GROUPS: list[dict[str, Any]] = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.9}]


@dataclass(frozen=True)
class Case:
    """One scheduler type: its lrkeeper config and the same scheduler built by torch."""

    type_name: str
    config: dict[str, Any]
    torch_factory: TorchFactory | None
    uses_metric: bool = False


def _sched() -> Any:
    return torch.optim.lr_scheduler


def _cases() -> list[Case]:
    lr_scheduler = _sched()
    return [
        Case(
            "LambdaLR",
            {"type": "LambdaLR", "params": {"lr_lambda": "0.95 ** epoch"}},
            lambda opt: lr_scheduler.LambdaLR(opt, lr_lambda=lambda epoch: 0.95**epoch),
        ),
        Case(
            "MultiplicativeLR",
            {"type": "MultiplicativeLR", "params": {"lr_lambda": "0.999"}},
            lambda opt: lr_scheduler.MultiplicativeLR(opt, lr_lambda=lambda epoch: 0.999),
        ),
        Case(
            "StepLR",
            {"type": "StepLR", "params": {"step_size": 30, "gamma": 0.1}},
            lambda opt: lr_scheduler.StepLR(opt, step_size=30, gamma=0.1),
        ),
        Case(
            "MultiStepLR",
            {"type": "MultiStepLR", "params": {"milestones": [30, 80, 150], "gamma": 0.1}},
            lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[30, 80, 150], gamma=0.1),
        ),
        Case(
            "ConstantLR",
            {"type": "ConstantLR", "params": {"factor": 0.5, "total_iters": 50}},
            lambda opt: lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=50),
        ),
        Case(
            "LinearLR",
            {"type": "LinearLR", "params": {"start_factor": 0.25, "total_iters": 100}},
            lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=100),
        ),
        Case(
            "ExponentialLR",
            {"type": "ExponentialLR", "params": {"gamma": 0.99}},
            lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.99),
        ),
        Case(
            "PolynomialLR",
            {"type": "PolynomialLR", "params": {"total_iters": 1000, "power": 2.0}},
            lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=1000, power=2.0),
        ),
        Case(
            "CosineAnnealingLR",
            {"type": "CosineAnnealingLR", "params": {"T_max": 100, "eta_min": 0.001}},
            lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=100, eta_min=0.001),
        ),
        Case(
            "CosineAnnealingWarmRestarts",
            {"type": "CosineAnnealingWarmRestarts", "params": {"T_0": 10, "T_mult": 2}},
            lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=2),
        ),
        Case(
            "CyclicLR",
            {
                "type": "CyclicLR",
                "params": {"base_lr": 0.001, "max_lr": 0.1, "step_size_up": 50},
            },
            lambda opt: lr_scheduler.CyclicLR(opt, base_lr=0.001, max_lr=0.1, step_size_up=50),
        ),
        Case(
            "OneCycleLR",
            {"type": "OneCycleLR", "params": {"max_lr": 0.1, "total_steps": 100_000}},
            lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=100_000),
        ),
        Case(
            "ReduceLROnPlateau",
            {"type": "ReduceLROnPlateau", "params": {"patience": 2, "factor": 0.5}},
            lambda opt: lr_scheduler.ReduceLROnPlateau(opt, patience=2, factor=0.5),
            uses_metric=True,
        ),
        Case(
            "SequentialLR",
            {
                "type": "SequentialLR",
                "params": {
                    "schedulers": [
                        {"type": "LinearLR", "params": {"start_factor": 0.1, "total_iters": 10}},
                        {"type": "CosineAnnealingLR", "params": {"T_max": 100}},
                    ],
                    "milestones": [10],
                },
            },
            lambda opt: lr_scheduler.SequentialLR(
                opt,
                schedulers=[
                    lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=10),
                    lr_scheduler.CosineAnnealingLR(opt, T_max=100),
                ],
                milestones=[10],
            ),
        ),
        Case(
            "ChainedScheduler",
            {
                "type": "ChainedScheduler",
                "params": {
                    "schedulers": [
                        {"type": "ConstantLR", "params": {"factor": 0.5, "total_iters": 20}},
                        {"type": "ExponentialLR", "params": {"gamma": 0.99}},
                    ]
                },
            },
            lambda opt: lr_scheduler.ChainedScheduler(
                [
                    lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=20),
                    lr_scheduler.ExponentialLR(opt, gamma=0.99),
                ],
                optimizer=opt,
            ),
        ),
        Case(
            "LRRangeTest",
            {
                "type": "LRRangeTest",
                "params": {"start_lr": 1e-7, "end_lr": 10.0, "num_steps": 10_000},
            },
            None,
            uses_metric=True,
        ),
    ]


def metric_sequence(count: int) -> list[float]:
    """A falling, jittery loss, so plateau counters move and reductions happen now and then."""
    return [1.0 / (1.0 + 0.01 * i) + 0.05 * ((i * 7919) % 13) / 13 for i in range(count)]


def make_optimizer() -> torch.optim.Optimizer:
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": group["lr"]} for group in GROUPS
    ]
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    return optimizer


def time_engine_chunk(case: Case, steps: int, metrics: list[float]) -> tuple[float, list[float]]:
    scheduler: Scheduler = build(case.config, GROUPS)
    monitor = "val_loss" if case.type_name == "ReduceLROnPlateau" else "loss"
    step = scheduler.step
    started = time.perf_counter_ns()
    if case.uses_metric:
        for value in metrics:
            step({monitor: value})
    else:
        for _ in range(steps):
            step(None)
    elapsed = time.perf_counter_ns() - started
    return elapsed / steps / 1000, scheduler.lrs()


def time_torch_chunk(case: Case, steps: int, metrics: list[float]) -> tuple[float, list[float]]:
    assert case.torch_factory is not None
    optimizer = make_optimizer()
    scheduler = case.torch_factory(optimizer)
    # torch warns when a scheduler steps before its optimizer did since the scheduler
    # was built; a training loop always has (no grads, so this step changes nothing).
    optimizer.step()
    step = scheduler.step
    started = time.perf_counter_ns()
    if case.uses_metric:
        for value in metrics:
            step(value)
    else:
        for _ in range(steps):
            step()
    elapsed = time.perf_counter_ns() - started
    return elapsed / steps / 1000, [float(group["lr"]) for group in optimizer.param_groups]


@dataclass
class Measurement:
    type_name: str
    engine_us: float
    torch_us: float
    ratio: float
    same_lr: bool | None


def measure(case: Case, rounds: int, steps: int) -> Measurement:
    metrics = metric_sequence(steps)
    engine_times: list[float] = []
    torch_times: list[float] = []
    ratios: list[float] = []
    same_lr: bool | None = None if case.torch_factory is None else True
    for round_index in range(rounds):
        if case.torch_factory is None:
            engine_times.append(time_engine_chunk(case, steps, metrics)[0])
            continue
        if round_index % 2 == 0:
            engine_us, engine_lrs = time_engine_chunk(case, steps, metrics)
            torch_us, torch_lrs = time_torch_chunk(case, steps, metrics)
        else:
            torch_us, torch_lrs = time_torch_chunk(case, steps, metrics)
            engine_us, engine_lrs = time_engine_chunk(case, steps, metrics)
        engine_times.append(engine_us)
        torch_times.append(torch_us)
        ratios.append(engine_us / torch_us)
        same_lr = same_lr and engine_lrs == torch_lrs
    return Measurement(
        case.type_name,
        median(engine_times),
        median(torch_times) if torch_times else math.nan,
        median(ratios) if ratios else math.nan,
        same_lr,
    )


def render(measurements: list[Measurement]) -> str:
    header = ["type", "engine µs/step", "torch µs/step", "ratio (engine/torch)", "same lr"]
    rows = [
        [
            m.type_name,
            format_number(m.engine_us, 2),
            format_number(m.torch_us, 2) if m.torch_us == m.torch_us else "(no torch twin)",
            format_ratio(m.ratio),
            {True: "yes", False: "NO", None: "—"}[m.same_lr],
        ]
        for m in measurements
    ]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: fewer rounds")
    parser.add_argument("--write", action="store_true", help="update bench/results.md")
    parser.add_argument("--only", nargs="*", help="scheduler type names to time")
    args = parser.parse_args(argv)
    rounds, steps = (6, 200) if args.quick else (150, 500)
    warnings.filterwarnings("ignore", module="torch")
    torch.set_num_threads(1)

    started_at, machine = timestamp(), machine_description()
    cases = [case for case in _cases() if not args.only or case.type_name in args.only]
    measurements = []
    for case in cases:
        measurement = measure(case, rounds, steps)
        measurements.append(measurement)
        print(
            f"  {case.type_name}: engine {measurement.engine_us:.2f} µs, "
            f"torch {measurement.torch_us:.2f} µs",
            file=sys.stderr,
        )
    table = render(measurements)
    slower = [m for m in measurements if m.ratio == m.ratio and m.ratio > PARITY_TOLERANCE]
    mode = "quick" if args.quick else "full"
    summary = (
        "Engine slower than torch (ratio above "
        f"{PARITY_TOLERANCE:.2f}×) for: {', '.join(m.type_name for m in slower)}."
        if slower
        else f"Engine no slower than torch for every type (all ratios ≤ {PARITY_TOLERANCE:.2f}×)."
    )
    text = (
        f"## Engine: µs per step, lrkeeper engine vs torch {torch.__version__}\n\n"
        f"{started_at}, {mode} run ({rounds} alternating rounds × {steps} steps per side); "
        f"{machine}.\n\n{table}\n\n{summary}\n"
    )
    print(text)
    if args.write:
        write_section("bench.engine", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
