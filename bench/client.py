"""Per-step cost of ``RemoteLRScheduler.step()`` beside what it replaces and what it rides on.

``python -m bench.client [--backend sqlite|postgresql] [--quick] [--write]``

Against a local ``lrkeeper serve`` (a subprocess, its own database), in one
process and interleaved round by round in rotating order, each block a run of
back-to-back calls:

- ``RemoteLRScheduler.step()`` with a torch SGD optimizer (two groups, momentum),
  driving a CosineAnnealingLR run: the thing measured;
- (a) torch's local ``CosineAnnealingLR.step()`` on the same kind of optimizer:
  what the remote scheduler replaces;
- (b) one bare ``httpx.Client.get("/healthz")`` on a kept-alive connection: the
  floor of any call to the service;
- for reference, a bare ``httpx.Client.post`` of the same step report the client
  sends, without the client library: the service's own cost, so the difference
  to the first row is the client library's.

A block's time per call is its wall time over its call count; the table gives
the median over rounds, each ratio the median of the per-round ratios.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
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
from bench.service import (
    BENCH_HOME,
    Server,
    postgresql_conninfo,
    postgresql_databases,
    start_lrkeeper,
)
from client import RemoteLRScheduler

COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 100}}
LRS = (0.1, 0.01)

Call = Callable[[], object]


def make_optimizer() -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in LRS]
    return torch.optim.SGD(groups, lr=LRS[0], momentum=0.9)


def torch_step() -> Call:
    optimizer = make_optimizer()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=100)
    optimizer.step()  # a training loop has stepped the optimizer before the scheduler
    return scheduler.step


def healthz_round_trip(http: httpx.Client) -> Call:
    def call() -> object:
        return http.get("/healthz").raise_for_status()

    return call


def bare_step_post(http: httpx.Client) -> Call:
    run_id = f"bench-client-bare-{uuid.uuid4().hex[:8]}"
    groups = [{"lr": lr, "momentum": 0.9} for lr in LRS]
    http.put(f"/v1/runs/{run_id}", json={"scheduler": COSINE, "param_groups": groups})
    step = 0

    def call() -> object:
        nonlocal step
        step += 1
        body = {"step": step, "worker": "bench"}
        return http.post(f"/v1/runs/{run_id}/steps", json=body).raise_for_status()

    return call


def remote_step(base_url: str) -> tuple[Call, RemoteLRScheduler]:
    run_id = f"bench-client-remote-{uuid.uuid4().hex[:8]}"
    scheduler = RemoteLRScheduler(make_optimizer(), run_id, COSINE, url=base_url)
    return scheduler.step, scheduler


def time_block(call: Call, calls: int) -> float:
    """µs per call over ``calls`` back-to-back calls."""
    started = time.perf_counter_ns()
    for _ in range(calls):
        call()
    return (time.perf_counter_ns() - started) / calls / 1000


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


REMOTE = "RemoteLRScheduler.step()"
TORCH = "(a) torch CosineAnnealingLR.step()"
HEALTHZ = "(b) httpx GET /healthz, kept alive"
BARE_POST = "bare httpx POST /steps (no client library)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="a few seconds: fewer rounds")
    parser.add_argument("--write", action="store_true", help="update bench/results.md")
    args = parser.parse_args(argv)
    rounds, calls = (5, 20) if args.quick else (25, 100)
    warnings.filterwarnings("ignore", module="torch")
    torch.set_num_threads(1)

    started_at, machine = timestamp(), machine_description()
    timings: dict[str, list[float]] = {REMOTE: [], TORCH: [], HEALTHZ: [], BARE_POST: []}
    ratios: dict[str, list[float]] = {TORCH: [], HEALTHZ: [], BARE_POST: []}
    with (
        lrkeeper_server(args.backend) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        remote_call, remote = remote_step(server.base_url)
        with contextlib.closing(remote):
            calls_by_name: dict[str, Call] = {
                REMOTE: remote_call,
                TORCH: torch_step(),
                HEALTHZ: healthz_round_trip(http),
                BARE_POST: bare_step_post(http),
            }
            for call in calls_by_name.values():  # open connections, warm caches
                time_block(call, 5)
            names = list(calls_by_name)
            for round_index in range(rounds):
                shift = round_index % len(names)
                this_round = {}
                for name in [*names[shift:], *names[:shift]]:
                    this_round[name] = time_block(calls_by_name[name], calls)
                    timings[name].append(this_round[name])
                for name in ratios:
                    ratios[name].append(this_round[REMOTE] / this_round[name])

    header = ["call", "µs per call", "RemoteLRScheduler.step() ÷ this"]
    rows = [
        [name, format_number(median(values), 1), format_ratio(median(ratios[name]))]
        if name in ratios
        else [name, format_number(median(values), 1), ""]
        for name, values in timings.items()
    ]
    versus_healthz = median(ratios[HEALTHZ])
    verdict = (
        f"{'met' if versus_healthz <= 1.3 else 'MISSED'}: RemoteLRScheduler.step() ≤ 1.3× the "
        f"bare /healthz round trip (is {format_ratio(versus_healthz)})."
    )
    mode = "quick" if args.quick else "full"
    text = (
        f"## Client: RemoteLRScheduler.step() overhead ({args.backend})\n\n"
        f"{started_at}, {mode} run ({rounds} rounds × {calls} calls per row, rotating order), "
        f"against a local `lrkeeper serve` on {args.backend}; torch {torch.__version__}, "
        f"httpx {httpx.__version__}; {machine}.\n\n"
        f"{markdown_table(header, rows)}\n\n{verdict}\n"
    )
    print(text)
    if args.write:
        write_section(f"bench.client.{args.backend}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
