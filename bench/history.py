"""A thinned history page of a 1,000,000-step run against one page of raw rows, one sitting.

``python -m bench.history [--backend sqlite|postgresql|both] [--quick] [--write]
[--compare-with CHECKOUT]``

For each backend: a fresh ``lrkeeper serve`` on a fresh database, a CosineAnnealingLR
run with two param groups built to 1,000,000 steps through the API's catch-up (step
reports of 10,000 steps, LRKEEPER_MAX_CATCH_UP_VALUES set to 20,000 for this
server; 100,000 steps with ``--quick``), then the timed calls of ``TIMED_CALLS``
take turns in rotating order, a block of calls each per round. The table gives each
call's median ms and its ratio to the raw page (median of the per-round ratios).
Target: the 1,000-point thinned page under 100 ms.

To time one more call in the same sitting (a chart, say), add a ``TimedCall`` to
``TIMED_CALLS``: it joins the rotation, the table and the ratios.

``--compare-with CHECKOUT`` also times the step report itself (one client, one report
after another, each a new step of its own run) on this checkout and on another
(``git worktree add /tmp/before <commit>``), interleaved: what keeping the blocks'
extremes on write costs the hot path.
"""

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

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
    REPO_ROOT,
    Server,
    free_port,
    fresh_database_urls,
    start_server,
)

COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 1000, "eta_min": 0.0001}}
GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.9}]
# A catch-up writes its rows in one statement, which the service bounds at 3 s (its
# DATABASE_WAIT_SECONDS); 10,000 steps of two groups stay well inside it on a busy machine.
CATCH_UP_STEPS = 10_000
TARGET_MS = 100.0
CHART_TARGET_MS = 1000.0


@dataclass(frozen=True)
class TimedCall:
    """One GET the sitting times; ``params`` may use ``{offset}`` (varies per call)."""

    name: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)


RAW_PAGE = TimedCall("raw page, 1,000 rows", "/v1/runs/{run}/history", {"limit": 1000})
THINNED_PAGE = TimedCall("thinned page, points=1000", "/v1/runs/{run}/history", {"points": 1000})
# The run page's picture as an image: the chart reads history thinned to 4,000 rows
# (service.charts.data) and matplotlib draws it.
CHART_SVG = TimedCall("chart.svg of the whole run", "/v1/runs/{run}/chart.svg")
CHART_PNG = TimedCall("chart.png of the whole run", "/v1/runs/{run}/chart.png")
TIMED_CALLS: list[TimedCall] = [RAW_PAGE, THINNED_PAGE, CHART_SVG, CHART_PNG]


@dataclass(frozen=True)
class Plan:
    steps: int
    rounds: int
    calls_per_block: int
    step_reports_per_block: int


QUICK = Plan(steps=100_000, rounds=3, calls_per_block=5, step_reports_per_block=50)
FULL = Plan(steps=1_000_000, rounds=15, calls_per_block=10, step_reports_per_block=200)


def start_lrkeeper(database_url: str, workdir: Path, name: str, checkout: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1"]
    environment = {
        "LRKEEPER_DATABASE_URL": database_url,
        "LRKEEPER_MAX_CATCH_UP_VALUES": str(CATCH_UP_STEPS * len(GROUPS)),
    }
    process, log_path = start_server(
        name, [*command, "--port", str(port)], workdir, environment, checkout
    )
    server = Server(name, f"http://127.0.0.1:{port}", process, log_path)
    server.wait_ready("/readyz")
    return server


def build_run(client: httpx.Client, steps: int) -> tuple[str, float]:
    """A run of ``steps`` steps built by catch-up reports; its id and the seconds it took."""
    run_id = f"bench-history-{uuid.uuid4().hex[:8]}"
    body = {"scheduler": COSINE, "param_groups": GROUPS}
    client.put(f"/v1/runs/{run_id}", json=body).raise_for_status()
    began = time.perf_counter()
    for step in range(CATCH_UP_STEPS, steps + CATCH_UP_STEPS, CATCH_UP_STEPS):
        client.post(f"/v1/runs/{run_id}/steps", json={"step": min(step, steps)}).raise_for_status()
    return run_id, time.perf_counter() - began


def time_call(
    client: httpx.Client, call: TimedCall, run_id: str, count: int, seed: int, run_steps: int
) -> float:
    """Median ms of ``count`` calls; the raw page reads from a different place each time."""
    durations = []
    for index in range(count):
        params = dict(call.params)
        if call is RAW_PAGE:
            params["start"] = (seed * 7919 + index * 104_729) % (run_steps - 1000)
        began = time.perf_counter()
        response = client.get(call.path.format(run=run_id), params=params)
        durations.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
    return median(durations)


def time_step_reports(client: httpx.Client, count: int) -> float:
    """µs per step report, closed loop: each a new step of a fresh run."""
    run_id = f"bench-steps-{uuid.uuid4().hex[:8]}"
    client.put(
        f"/v1/runs/{run_id}", json={"scheduler": COSINE, "param_groups": GROUPS}
    ).raise_for_status()
    began = time.perf_counter()
    for step in range(1, count + 1):
        client.post(f"/v1/runs/{run_id}/steps", json={"step": step}).raise_for_status()
    return (time.perf_counter() - began) / count * 1e6


def run_backend(
    backend: str, plan: Plan, workdir: Path, compare_with: Path | None
) -> tuple[list[list[str]], list[str]]:
    """This backend's table rows and the lines under them."""
    with fresh_database_urls(backend, 2, workdir, "bench_history") as urls:
        servers = [start_lrkeeper(urls[0], workdir, f"lrkeeper-{backend}", REPO_ROOT)]
        if compare_with is not None:
            servers.append(start_lrkeeper(urls[1], workdir, f"compared-{backend}", compare_with))
        try:
            with httpx.Client(base_url=servers[0].base_url, timeout=120) as client:
                run_id, build_seconds = build_run(client, plan.steps)
                for call in TIMED_CALLS:  # warm-up: caches, plans, the first connection
                    time_call(client, call, run_id, 2, 0, plan.steps)
                per_call: dict[str, list[float]] = {call.name: [] for call in TIMED_CALLS}
                ratios: dict[str, list[float]] = {call.name: [] for call in TIMED_CALLS}
                for round_index in range(plan.rounds):
                    shift = round_index % len(TIMED_CALLS)
                    order = TIMED_CALLS[shift:] + TIMED_CALLS[:shift]
                    this_round = {
                        call.name: time_call(
                            client, call, run_id, plan.calls_per_block, round_index, plan.steps
                        )
                        for call in order
                    }
                    for name, value in this_round.items():
                        per_call[name].append(value)
                        ratios[name].append(value / this_round[RAW_PAGE.name])
            rows = [
                [
                    backend,
                    call.name,
                    format_number(median(per_call[call.name]), 2),
                    format_ratio(median(ratios[call.name])),
                ]
                for call in TIMED_CALLS
            ]
            thinned_ms = median(per_call[THINNED_PAGE.name])
            verdict = "met" if thinned_ms < TARGET_MS else "MISSED"
            notes = [
                f"- {backend}: {verdict}: the thinned page in {thinned_ms:.1f} ms (target < "
                f"{TARGET_MS:.0f} ms); the {plan.steps:,}-step run took {build_seconds:.0f} s "
                f"to build by catch-up ({build_seconds / plan.steps * 1e6:.0f} µs per step)."
            ]
            for chart in (CHART_SVG, CHART_PNG):
                chart_ms = median(per_call[chart.name])
                met = "met" if chart_ms < CHART_TARGET_MS else "MISSED"
                notes.append(
                    f"- {backend}: {met}: {chart.name} in {chart_ms:.0f} ms "
                    f"(target < {CHART_TARGET_MS:.0f} ms)."
                )
            if compare_with is not None:
                notes.append(compare_step_reports(backend, servers, plan))
            return rows, notes
        finally:
            for server in servers:
                server.stop()


def compare_step_reports(backend: str, servers: Sequence[Server], plan: Plan) -> str:
    """Step reports on this checkout ÷ the compared one, interleaved, median of rounds."""
    clients = [httpx.Client(base_url=server.base_url, timeout=30) for server in servers]
    try:
        for client in clients:
            time_step_reports(client, 20)
        ours, theirs, ratios = [], [], []
        for round_index in range(plan.rounds):
            pair = [0.0, 0.0]
            for side in (0, 1) if round_index % 2 == 0 else (1, 0):
                pair[side] = time_step_reports(clients[side], plan.step_reports_per_block)
            ours.append(pair[0])
            theirs.append(pair[1])
            ratios.append(pair[0] / pair[1])
    finally:
        for client in clients:
            client.close()
    return (
        f"- {backend}: a step report (closed loop, one client) takes "
        f"{median(ours):,.0f} µs here and {median(theirs):,.0f} µs on the compared "
        f"checkout: {format_ratio(median(ratios))} (this ÷ compared)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--compare-with", type=Path, default=None)
    options = parser.parse_args(argv)
    plan = QUICK if options.quick else FULL
    backends = ["sqlite", "postgresql"] if options.backend == "both" else [options.backend]
    heading = (
        f"{timestamp()}, {'quick' if options.quick else 'full'} run ({plan.rounds} rounds × "
        f"{plan.calls_per_block} calls per timed call, rotating order; a "
        f"{plan.steps:,}-step run); {machine_description()}."
    )
    print(heading, flush=True)
    rows: list[list[str]] = []
    notes: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="lrkeeper-bench-history-"))
    try:
        for backend in backends:
            backend_rows, backend_notes = run_backend(backend, plan, workdir, options.compare_with)
            rows += backend_rows
            notes += backend_notes
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = markdown_table(["backend", "call", "median ms", "÷ raw page"], rows)
    body = f"{heading}\n\n{table}\n\n" + "\n".join(notes)
    print(f"\n{table}\n\n" + "\n".join(notes))
    if options.write:
        write_section(
            "history", "## History: a thinned page of a long run vs a raw page\n\n" + body
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
