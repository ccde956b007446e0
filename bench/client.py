"""What ``RemoteLRScheduler`` costs a training loop, blocking and pipelined, beside torch's own.

``python -m bench.client [--backend sqlite|postgresql] [--quick] [--write]``

Against a local ``lrkeeper serve`` (a subprocess, its own database), in one
process (``torch.set_num_threads(1)``), three tables, each interleaved round by
round in rotating order:

1. **Calls**, blocks of back-to-back calls: the blocking ``RemoteLRScheduler.step()``
   (``pipelined=False``, torch SGD with two groups, a CosineAnnealingLR run); (a)
   torch's ``CosineAnnealingLR.step()``; (b) a bare httpx ``GET /healthz`` on a
   kept-alive connection, the floor of any call; and the same step report sent
   bare with httpx and with the standard library's ``http.client`` (each on its
   own kept-alive connection), with the client's own CPU time per call: the numbers
   the pipelined sender's wire was chosen by (client/wire.py).
2. **Training loops**, the same loop (zero_grad, forward, cross-entropy, backward,
   ``optimizer.step()``, ``scheduler.step()``) with torch's scheduler, the blocking
   remote scheduler and the pipelined one, each with its own identical model, on two
   MLPs with batch 64: 784-1024-1024-10 (a step longer than a round trip) and
   784-256-10 (a step shorter than one). The pipelined loop's time blocked is its
   ``step()`` calls plus the wait in its optimizer pre-hook (timed by hooks
   registered around the scheduler's); the blocking loop's is its ``step()`` calls.
   "round trip" is the sender's own wire (``StepConnection.report_step``) timed
   back to back in the same rounds.

A block's time per call or step is its wall time over its count; tables give the
median over rounds, each ratio the median of the per-round ratios.
"""

import argparse
import contextlib
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection, RemoteDisconnected
from pathlib import Path
from typing import Any

import httpx
import torch
from torch import nn

from bench import (
    format_number,
    format_ratio,
    machine_description,
    markdown_table,
    median,
    timestamp,
    write_section,
)
from bench.service import (
    BENCH_HOME,
    Server,
    free_port,
    group_cpu_seconds,
    postgresql_conninfo,
    postgresql_databases,
    start_lrkeeper,
)
from client import RemoteLRScheduler, RetryPolicy
from client.wire import StepConnection

COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 100}}
LRS = (0.1, 0.01)
BATCH = 64
# Targets of issue 10 §1.
LONG_STEP_LOOP_RATIO = 1.05
STEP_RETURNS_MICROSECONDS = 50.0
UNHIDDEN_MARGIN_MICROSECONDS = 50.0

Call = Callable[[], object]


def make_optimizer() -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in LRS]
    return torch.optim.SGD(groups, lr=LRS[0], momentum=0.9)


def new_run_id(kind: str) -> str:
    return f"bench-client-{kind}-{uuid.uuid4().hex[:8]}"


# -- table 1: calls -----------------------------------------------------------------------


def torch_step() -> Call:
    optimizer = make_optimizer()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=100)
    optimizer.step()  # a training loop has stepped the optimizer before the scheduler
    return scheduler.step


def healthz_round_trip(http: httpx.Client) -> Call:
    def call() -> object:
        return http.get("/healthz").raise_for_status()

    return call


def create_bare_run(http: httpx.Client) -> str:
    run_id = new_run_id("bare")
    groups = [{"lr": lr, "momentum": 0.9} for lr in LRS]
    http.put(f"/v1/runs/{run_id}", json={"scheduler": COSINE, "param_groups": groups})
    return run_id


def bare_httpx_post(http: httpx.Client) -> Call:
    run_id = create_bare_run(http)
    step = 0

    def call() -> object:
        nonlocal step
        step += 1
        body = {"step": step, "worker": "bench"}
        return http.post(f"/v1/runs/{run_id}/steps", json=body).raise_for_status()

    return call


def bare_http_client_post(http: httpx.Client, base_url: str) -> Call:
    run_id = create_bare_run(http)
    host, port = base_url.removeprefix("http://").split(":")
    connection = HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    step = 0

    def call() -> object:
        nonlocal step
        step += 1
        body = json.dumps({"step": step, "worker": "bench"})
        try:
            connection.request("POST", f"/v1/runs/{run_id}/steps", body=body, headers=headers)
            response = connection.getresponse()
        except (ConnectionError, RemoteDisconnected):
            # The server closed the connection while other rows ran (uvicorn drops idle
            # ones after 5 s); httpx reconnects by itself, so this row does too.
            connection.close()
            connection.request("POST", f"/v1/runs/{run_id}/steps", body=body, headers=headers)
            response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {answer}")
        return answer

    return call


def blocking_remote_step(base_url: str) -> tuple[Call, RemoteLRScheduler]:
    scheduler = RemoteLRScheduler(
        make_optimizer(), new_run_id("blocking"), COSINE, url=base_url, pipelined=False
    )
    return scheduler.step, scheduler


def time_block(call: Call, calls: int) -> tuple[float, float]:
    """(wall µs, this thread's CPU µs) per call over ``calls`` back-to-back calls."""
    started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
    for _ in range(calls):
        call()
    cpu = (time.thread_time_ns() - cpu_started) / calls / 1000
    return (time.perf_counter_ns() - started) / calls / 1000, cpu


REMOTE = "RemoteLRScheduler.step(), blocking (pipelined=False)"
TORCH = "(a) torch CosineAnnealingLR.step()"
HEALTHZ = "(b) httpx GET /healthz, kept alive"
BARE_HTTPX = "bare httpx POST /steps, kept alive"
BARE_HTTP_CLIENT = "bare http.client POST /steps, kept alive"


def measure_calls(
    server: Server, http: httpx.Client, rounds: int, calls: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
    """Table 1: wall µs, client CPU µs per call, and RemoteLRScheduler.step() ÷ each row."""
    remote_call, remote = blocking_remote_step(server.base_url)
    wall: dict[str, list[float]] = {
        REMOTE: [],
        TORCH: [],
        HEALTHZ: [],
        BARE_HTTPX: [],
        BARE_HTTP_CLIENT: [],
    }
    cpu: dict[str, list[float]] = {name: [] for name in wall}
    ratios: dict[str, list[float]] = {name: [] for name in wall if name != REMOTE}
    with contextlib.closing(remote):
        calls_by_name: dict[str, Call] = {
            REMOTE: remote_call,
            TORCH: torch_step(),
            HEALTHZ: healthz_round_trip(http),
            BARE_HTTPX: bare_httpx_post(http),
            BARE_HTTP_CLIENT: bare_http_client_post(http, server.base_url),
        }
        for call in calls_by_name.values():  # open connections, warm caches
            time_block(call, 5)
        names = list(calls_by_name)
        for round_index in range(rounds):
            shift = round_index % len(names)
            this_round = {}
            for name in [*names[shift:], *names[:shift]]:
                this_round[name], cpu_per_call = time_block(calls_by_name[name], calls)
                wall[name].append(this_round[name])
                cpu[name].append(cpu_per_call)
            for name in ratios:
                ratios[name].append(this_round[REMOTE] / this_round[name])
    return wall, cpu, ratios


# -- table 2: training loops --------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    name: str
    widths: tuple[int, ...]
    steps_per_block: int
    long_step: bool  # longer than a round trip: the 5 % target applies


MODELS = [
    Model("MLP 784-1024-1024-10", (784, 1024, 1024, 10), steps_per_block=20, long_step=True),
    Model("MLP 784-256-10", (784, 256, 10), steps_per_block=100, long_step=False),
]


def make_mlp(widths: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(width_in, width_out))
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass
class Loop:
    """One training loop: a model, its optimizer, a scheduler, and what it was timed at."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step_call_ns: list[int] = field(default_factory=list)
    hook_wait_ns: list[int] = field(default_factory=list)
    thread_cpu_ns: int = 0

    def run(self, inputs: torch.Tensor, targets: torch.Tensor, steps: int) -> float:
        """µs per training step over ``steps`` steps (and the thread's CPU, kept)."""
        started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(steps):
            self.optimizer.zero_grad()
            loss = nn.functional.cross_entropy(self.model(inputs), targets)
            loss.backward()
            self.optimizer.step()
            before_step = time.perf_counter_ns()
            self.scheduler.step()
            self.step_call_ns.append(time.perf_counter_ns() - before_step)
        self.thread_cpu_ns = time.thread_time_ns() - cpu_started
        return (time.perf_counter_ns() - started) / steps / 1000

    def reset_timings(self) -> None:
        self.step_call_ns.clear()
        self.hook_wait_ns.clear()


def torch_loop(model: Model) -> Loop:
    network = make_mlp(model.widths)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=100)
    return Loop("torch", network, optimizer, scheduler)


def remote_loop(model: Model, name: str, base_url: str, *, pipelined: bool) -> Loop:
    network = make_mlp(model.widths)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    hook_started: list[int] = []
    loop = Loop(name, network, optimizer, None)

    def before_schedulers_hook(*_: object) -> None:
        hook_started.append(time.perf_counter_ns())

    def after_schedulers_hook(*_: object) -> None:
        loop.hook_wait_ns.append(time.perf_counter_ns() - hook_started.pop())

    # Hooks run in the order registered: these two bracket the scheduler's own.
    optimizer.register_step_pre_hook(before_schedulers_hook)
    loop.scheduler = RemoteLRScheduler(
        optimizer, new_run_id("loop"), COSINE, url=base_url, pipelined=pipelined
    )
    optimizer.register_step_pre_hook(after_schedulers_hook)
    return loop


@dataclass(frozen=True)
class Service:
    """Where a remote loop reports: the real service, or the stand-in (bench/stand_in.py)."""

    base_url: str
    process_group: int

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.process_group)


class RoundTrips:
    """The pipelined sender's wire to one service, timed back to back."""

    def __init__(self, service: Service) -> None:
        self.run_id = new_run_id("wire")
        with httpx.Client(base_url=service.base_url) as http:
            groups = [{"lr": 0.01, "momentum": 0.9}]
            body = {"scheduler": COSINE, "param_groups": groups}
            http.put(f"/v1/runs/{self.run_id}", json=body).raise_for_status()
        self.wire = StepConnection(service.base_url, None, timeout=30, retry=RetryPolicy())
        self.step = 0

    def time(self, calls: int) -> float:
        """µs per round trip."""
        started = time.perf_counter_ns()
        for _ in range(calls):
            self.step += 1
            self.wire.report_step(self.run_id, self.step, worker="bench")
        return (time.perf_counter_ns() - started) / calls / 1000


TORCH_LOOP = "torch"
BLOCKING_LOOP = "blocking"
PIPELINED_LOOP = "pipelined"
STAND_IN_LOOP = "pipelined, stand-in service"
REMOTE_LOOPS = (BLOCKING_LOOP, PIPELINED_LOOP, STAND_IN_LOOP)


@dataclass
class LoopFigures:
    """Per round and loop: µs per step, CPU per step, µs blocked per step; per service, the
    round trip; every pipelined step() call's µs."""

    per_step: dict[str, list[float]] = field(default_factory=dict)
    trainer_cpu: dict[str, list[float]] = field(default_factory=dict)
    service_cpu: dict[str, list[float]] = field(default_factory=dict)
    blocked: dict[str, list[float]] = field(default_factory=dict)
    step_returns: dict[str, list[float]] = field(default_factory=dict)
    round_trip: dict[str, list[float]] = field(default_factory=dict)
    step_calls: dict[str, list[float]] = field(default_factory=dict)  # every scheduler.step()


def measure_loops(model: Model, service: Service, stand_in: Service, rounds: int) -> LoopFigures:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(BATCH, model.widths[0], generator=generator)
    targets = torch.randint(0, model.widths[-1], (BATCH,), generator=generator)
    loops = [
        torch_loop(model),
        remote_loop(model, BLOCKING_LOOP, service.base_url, pipelined=False),
        remote_loop(model, PIPELINED_LOOP, service.base_url, pipelined=True),
        remote_loop(model, STAND_IN_LOOP, stand_in.base_url, pipelined=True),
    ]
    service_of = {BLOCKING_LOOP: service, PIPELINED_LOOP: service, STAND_IN_LOOP: stand_in}
    round_trips = {"service": RoundTrips(service), "stand-in": RoundTrips(stand_in)}
    names = [loop.name for loop in loops]
    figures = LoopFigures(
        per_step={name: [] for name in names},
        trainer_cpu={name: [] for name in names},
        service_cpu={name: [] for name in names},
        blocked={name: [] for name in REMOTE_LOOPS},
        step_returns={PIPELINED_LOOP: [], STAND_IN_LOOP: []},
        round_trip={name: [] for name in round_trips},
        step_calls={name: [] for name in names},
    )
    steps = model.steps_per_block
    try:
        for loop in loops:  # warm up: allocator, connections, the sender's thread
            loop.run(inputs, targets, 5)
            loop.scheduler.get_last_lr()
            loop.reset_timings()
        for wire in round_trips.values():
            wire.time(5)
        for round_index in range(rounds):
            shift = round_index % len(loops)
            for loop in [*loops[shift:], *loops[:shift]]:
                loop.reset_timings()
                measured = service_of.get(loop.name, service)
                service_started = measured.cpu_seconds()
                figures.per_step[loop.name].append(loop.run(inputs, targets, steps))
                if isinstance(loop.scheduler, RemoteLRScheduler):
                    loop.scheduler.get_last_lr()  # the block's last report is the block's
                service_seconds = measured.cpu_seconds() - service_started
                figures.service_cpu[loop.name].append(service_seconds / steps * 1e6)
                figures.trainer_cpu[loop.name].append(loop.thread_cpu_ns / steps / 1000)
                figures.step_calls[loop.name] += [ns / 1000 for ns in loop.step_call_ns]
                if loop.name == BLOCKING_LOOP:
                    blocked_ns = sum(loop.step_call_ns)
                elif loop.name in figures.step_returns:
                    blocked_ns = sum(loop.step_call_ns) + sum(loop.hook_wait_ns)
                    figures.step_returns[loop.name] += [ns / 1000 for ns in loop.step_call_ns]
                else:
                    continue
                figures.blocked[loop.name].append(blocked_ns / steps / 1000)
            for name, wire in round_trips.items():
                figures.round_trip[name].append(wire.time(max(10, steps // 4)))
    finally:
        for loop in loops:
            if isinstance(loop.scheduler, RemoteLRScheduler):
                loop.scheduler.close()
        for wire in round_trips.values():
            wire.wire.close()
    return figures


@contextlib.contextmanager
def stand_in_service(delay_microseconds: float) -> Iterator[Service]:
    """bench/stand_in.py in a process group of its own, answering after the given delay."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "bench.stand_in", "--port", str(port)),
            *("--delay-ms", f"{delay_microseconds / 1000:.3f}"),
        ],
        cwd=Path(__file__).resolve().parents[1],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the stand-in service did not start") from None
                time.sleep(0.05)
        yield Service(f"http://127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


def per_round_ratio(numerators: list[float], denominators: list[float]) -> float:
    return median([mine / theirs for mine, theirs in zip(numerators, denominators, strict=True)])


def loop_rows(model: Model, figures: LoopFigures) -> tuple[list[list[str]], list[str]]:
    """The model's rows of table 2, and its verdicts (for the real service and the stand-in)."""
    compute = median(figures.per_step[TORCH_LOOP])
    rows = []
    for name in (TORCH_LOOP, *REMOTE_LOOPS):
        remote = name != TORCH_LOOP
        round_trip = median(figures.round_trip["stand-in" if name == STAND_IN_LOOP else "service"])
        ratio = per_round_ratio(figures.per_step[name], figures.per_step[TORCH_LOOP])
        rows.append(
            [
                model.name,
                name,
                format_number(median(figures.per_step[name]), 0),
                format_ratio(ratio) if remote else "",
                format_number(statistics.median(figures.step_calls[name]), 1),
                format_number(median(figures.blocked[name]), 0) if remote else "",
                format_number(median(figures.trainer_cpu[name]), 0),
                format_number(median(figures.service_cpu[name]), 0),
                format_number(round_trip, 0) if remote else "",
                format_number(max(0.0, round_trip - compute), 0) if remote else "",
            ]
        )
    verdicts = []
    for name, wire in ((PIPELINED_LOOP, "service"), (STAND_IN_LOOP, "stand-in")):
        label = f"{model.name}, {name}"
        ratio = per_round_ratio(figures.per_step[name], figures.per_step[TORCH_LOOP])
        step_returns = statistics.median(figures.step_returns[name])
        blocked = median(figures.blocked[name])
        allowed = max(0.0, median(figures.round_trip[wire]) - compute)
        allowed += UNHIDDEN_MARGIN_MICROSECONDS
        if model.long_step:
            verdicts.append(
                f"{_met(ratio <= LONG_STEP_LOOP_RATIO)} {label}: the loop "
                f"≤ {LONG_STEP_LOOP_RATIO:.2f}× torch's (is {format_ratio(ratio)})"
            )
        verdicts.append(
            f"{_met(step_returns <= STEP_RETURNS_MICROSECONDS)} {label}: step() returns in "
            f"≤ {STEP_RETURNS_MICROSECONDS:.0f} µs, median (is {step_returns:.1f} µs)"
        )
        verdicts.append(
            f"{_met(blocked <= allowed)} {label}: the trainer blocks ≤ the round trip the step "
            f"cannot hide + {UNHIDDEN_MARGIN_MICROSECONDS:.0f} µs = {allowed:,.0f} µs per step "
            f"(is {blocked:,.0f} µs)"
        )
    return rows, verdicts


def _met(condition: bool) -> str:
    return "met " if condition else "MISSED"


# -- the sitting --------------------------------------------------------------------------


@contextlib.contextmanager
def lrkeeper_server(backend: str) -> Iterator[Server]:
    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=BENCH_HOME)))
        if backend == "postgresql":
            database = f"lrkeeper_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}_client"
            stack.enter_context(postgresql_databases([database]))
            url = "postgresql+psycopg://" + postgresql_conninfo(database).split("://", 1)[1]
        else:
            url = f"sqlite:///{workdir / 'lrkeeper.db'}"
        server = start_lrkeeper(url, workdir)
        try:
            yield server
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="a few seconds: fewer rounds")
    parser.add_argument("--write", action="store_true", help="update bench/results.md")
    args = parser.parse_args(argv)
    rounds, calls, loop_rounds = (5, 20, 3) if args.quick else (25, 100, 12)
    warnings.filterwarnings("ignore", module="torch")
    torch.set_num_threads(1)

    started_at, machine = timestamp(), machine_description()
    with (
        lrkeeper_server(args.backend) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        wall, cpu, ratios = measure_calls(server, http, rounds, calls)
        service = Service(server.base_url, server.process.pid)
        stand_in_delay = median(wall[BARE_HTTP_CLIENT])
        with stand_in_service(stand_in_delay) as stand_in:
            loop_figures = {
                model.name: measure_loops(model, service, stand_in, loop_rounds) for model in MODELS
            }

    call_header = ["call", "µs per call", "client CPU µs per call", "blocking step() ÷ this"]
    call_rows = [
        [
            name,
            format_number(median(values), 1),
            format_number(median(cpu[name]), 1),
            format_ratio(median(ratios[name])) if name in ratios else "",
        ]
        for name, values in wall.items()
    ]
    versus_healthz = median(ratios[HEALTHZ])
    wire_cpu = median(cpu[BARE_HTTP_CLIENT]) / median(cpu[BARE_HTTPX])
    call_verdicts = [
        f"{_met(versus_healthz <= 1.3)}: blocking RemoteLRScheduler.step() ≤ 1.3× the bare "
        f"/healthz round trip (is {format_ratio(versus_healthz)}).",
        f"The pipelined sender's wire: http.client costs {format_ratio(wire_cpu)} httpx's "
        "client CPU per step report (the GIL time a sender takes from the training thread), "
        f"{format_ratio(median(wall[BARE_HTTP_CLIENT]) / median(wall[BARE_HTTPX]))} its wall time.",
    ]
    loop_header = [
        "model",
        "scheduler",
        "loop µs/step",
        "÷ torch loop",
        "scheduler.step() µs, median",
        "blocked µs/step",
        "trainer CPU µs/step",
        "service CPU µs/step",
        "round trip µs",
        "unhidden µs (RTT − torch loop)",
    ]
    loop_table_rows: list[list[str]] = []
    loop_verdicts: list[str] = []
    for model in MODELS:
        rows, verdicts = loop_rows(model, loop_figures[model.name])
        loop_table_rows += rows
        loop_verdicts += verdicts

    mode = "quick" if args.quick else "full"
    text = (
        "## Client: RemoteLRScheduler in a training loop, blocking and pipelined "
        f"({args.backend})\n\n"
        f"{started_at}, {mode} run, against a local `lrkeeper serve` on {args.backend}; "
        f"torch {torch.__version__} (1 thread), httpx {httpx.__version__}; {machine}.\n\n"
        f"Calls ({rounds} rounds × {calls} calls per row, rotating order):\n\n"
        f"{markdown_table(call_header, call_rows)}\n\n"
        + "\n".join(f"- {verdict}" for verdict in call_verdicts)
        + f"\n\nTraining loops, batch {BATCH} ({loop_rounds} rounds × "
        + ", ".join(f"{model.steps_per_block} steps ({model.name})" for model in MODELS)
        + " per loop, rotating order):\n\n"
        f"{markdown_table(loop_header, loop_table_rows)}\n\n"
        + "\n".join(f"- {verdict}" for verdict in loop_verdicts)
        + "\n"
    )
    print(text)
    if args.write:
        write_section(f"bench.client.{args.backend}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
