"""The hot path under the loads a deployment meets and bench.service does not: ratios, one sitting.

``python -m bench.load [--backend sqlite|postgresql|both] [--quick] [--write]``

Three comparisons, each a pair of sides measured in turn, in rotating order, for a
few rounds (the table gives medians; each ratio is the median of the per-round
ratios of req/s). wrk drives ``POST /v1/runs/{run}/steps`` with one connection per
wrk thread (bench.service's script: every connection counts its own steps from 1).

- **One hot run**: every connection reports the steps of the same run, as the ranks
  of one job do (the first report of a step advances it; the rest replay it), against
  every connection on a run of its own. Target: ≥ 0.6 ×.
- **Two replicas**: two ``lrkeeper serve`` processes on one PostgreSQL database, each
  driven by its own wrk with half the connections, against one process driven with all
  of them. Target: ≥ 1.4 × where the machine's cores allow.
- **uvicorn's stack**: uvloop and httptools (what ``uvicorn[standard]`` adds) against
  asyncio and h11, on a step report and an lr read.

Every run is fresh for every sample, so each POST meets a step the run has not seen
(or, on the hot run, one another connection just advanced).
"""

import argparse
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

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
    WRK_SCRIPT,
    Sample,
    System,
    Workload,
    fresh_database_urls,
    lrkeeper_system,
    run_wrk,
    start_lrkeeper,
)

Side = Callable[[int], float]
"""One side of a comparison: given the sample's seconds, run it and return req/s."""

STACKS = {
    "asyncio + h11": ("--loop", "asyncio", "--http", "h11"),
    "uvloop + httptools": ("--loop", "uvloop", "--http", "httptools"),
}


@dataclass
class Comparison:
    """Two sides measured in turn; ``samples[side]`` holds one Sample list per round."""

    title: str
    backend: str
    sides: tuple[str, str]
    target: str
    samples: dict[str, list[list[Sample]]] = field(default_factory=dict)

    def requests_per_second(self, side: str) -> list[float]:
        return [sum(sample.requests_per_second for sample in one) for one in self.samples[side]]

    def ratio(self) -> float:
        first, second = (self.requests_per_second(side) for side in self.sides)
        return median([b / a for a, b in zip(first, second, strict=True) if a > 0])


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: int
    connections: int


def drive(
    systems: Sequence[System], run_ids: Sequence[Sequence[str]], seconds: int, script: Path
) -> list[Sample]:
    """One wrk per system at once, each with its own connections (= its own run ids)."""
    if len(systems) == 1:
        return [run_wrk(systems[0], systems[0].post_steps, run_ids[0], seconds, script)]
    with ThreadPoolExecutor(len(systems)) as pool:
        futures = [
            pool.submit(run_wrk, system, system.post_steps, ids, seconds, script)
            for system, ids in zip(systems, run_ids, strict=True)
        ]
        return [future.result() for future in futures]


def fresh_runs(system: System, count: int, *, hot: bool) -> list[str]:
    """``count`` connections' run ids: ``count`` new runs, or one new run ``count`` times."""
    with httpx.Client(base_url=system.server.base_url, timeout=30) as client:
        prefix = f"load-{uuid.uuid4().hex[:8]}"
        if hot:
            return system.create_runs(client, prefix, 1) * count
        return system.create_runs(client, prefix, count)


def measure(
    comparison: Comparison,
    sides: dict[str, Callable[[int], list[Sample]]],
    plan: Plan,
) -> Comparison:
    """Warm each side up, then take the rounds, alternating which side goes first."""
    for side in comparison.sides:
        sides[side](max(1, plan.seconds // 3))
        comparison.samples[side] = []
    for round_index in range(plan.rounds):
        order = comparison.sides if round_index % 2 == 0 else comparison.sides[::-1]
        for side in order:
            samples = sides[side](plan.seconds)
            failures = sum(sample.failures for sample in samples)
            if failures:
                raise RuntimeError(f"{comparison.title}, {side}: {failures} failed requests")
            comparison.samples[side].append(samples)
        where = f"{comparison.title} ({comparison.backend})"
        print(f"  {where} round {round_index + 1}: {comparison.ratio():.2f}×")
    return comparison


def hot_run(backend: str, plan: Plan, workdir: Path, script: Path) -> Comparison:
    with fresh_database_urls(backend, 1, workdir, "load") as (url,):
        server = start_lrkeeper(url, workdir, "lrkeeper-hot")
        try:
            system = lrkeeper_system(server)

            def side(hot: bool) -> Callable[[int], list[Sample]]:
                return lambda seconds: drive(
                    [system], [fresh_runs(system, plan.connections, hot=hot)], seconds, script
                )

            comparison = Comparison(
                f"one hot run, {plan.connections} connections",
                backend,
                ("a run per connection", "one run for all"),
                "≥ 0.6×",
            )
            return measure(
                comparison,
                {"a run per connection": side(False), "one run for all": side(True)},
                plan,
            )
        finally:
            server.stop()


def replicas(plan: Plan, workdir: Path, script: Path) -> Comparison:
    with fresh_database_urls("postgresql", 1, workdir, "load") as (url,):
        servers = [start_lrkeeper(url, workdir, f"lrkeeper-replica-{index}") for index in (0, 1)]
        try:
            systems = [lrkeeper_system(server) for server in servers]
            half = plan.connections // 2

            def one(seconds: int) -> list[Sample]:
                return drive(
                    systems[:1],
                    [fresh_runs(systems[0], plan.connections, hot=False)],
                    seconds,
                    script,
                )

            def two(seconds: int) -> list[Sample]:
                run_ids = [fresh_runs(system, half, hot=False) for system in systems]
                return drive(systems, run_ids, seconds, script)

            comparison = Comparison(
                f"replicas on one PostgreSQL, {plan.connections} connections",
                "postgresql",
                ("one replica", "two replicas"),
                "≥ 1.4× where cores allow",
            )
            return measure(comparison, {"one replica": one, "two replicas": two}, plan)
        finally:
            for server in servers:
                server.stop()


def stacks(backend: str, plan: Plan, workdir: Path, script: Path) -> list[Comparison]:
    """asyncio + h11 against uvloop + httptools, on a step report and an lr read."""
    with fresh_database_urls(backend, len(STACKS), workdir, "load") as urls:
        servers = {
            name: start_lrkeeper(url, workdir, f"lrkeeper-{name.split()[0]}", serve_options=options)
            for (name, options), url in zip(STACKS.items(), urls, strict=True)
        }
        try:
            systems = {name: lrkeeper_system(server) for name, server in servers.items()}
            comparisons = []
            for label, workload_of in (
                ("step report", lambda system: system.post_steps),
                ("lr read", lambda system: system.get_lr),
            ):

                def side(
                    name: str, workload_of: Callable[[System], Workload] = workload_of
                ) -> Callable[[int], list[Sample]]:
                    system = systems[name]
                    return lambda seconds: [
                        run_wrk(
                            system,
                            workload_of(system),
                            fresh_runs(system, plan.connections, hot=False),
                            seconds,
                            script,
                        )
                    ]

                comparison = Comparison(
                    f"uvicorn stack, {label}, {plan.connections} connections",
                    backend,
                    tuple(STACKS),  # type: ignore[arg-type]
                    "adopt if > 1×",
                )
                comparisons.append(measure(comparison, {name: side(name) for name in STACKS}, plan))
            return comparisons
        finally:
            for server in servers.values():
                server.stop()


def render(comparisons: Sequence[Comparison], plan: Plan) -> str:
    header = [
        "comparison",
        "backend",
        "side",
        "req/s",
        "p99 ms",
        "server CPU ms/req",
        "machine CPU busy",
        "ratio",
        "target",
    ]
    rows = []
    for comparison in comparisons:
        for index, side in enumerate(comparison.sides):
            rounds = comparison.samples[side]
            rows.append(
                [
                    comparison.title if index == 0 else "",
                    comparison.backend if index == 0 else "",
                    side,
                    format_number(median(comparison.requests_per_second(side)), 0),
                    format_number(median([max(s.p99_ms for s in one) for one in rounds]), 2),
                    format_number(median([_cpu_per_request(one) for one in rounds]), 3),
                    f"{median([max(s.machine_busy for s in one) for one in rounds]):.0%}",
                    format_ratio(comparison.ratio()) if index == 1 else "",
                    comparison.target if index == 1 else "",
                ]
            )
    return (
        f"Measured {timestamp()} on {machine_description()}; {plan.rounds} rounds of "
        f"{plan.seconds} s per side, rotating order; ratio = second side / first side.\n\n"
        + markdown_table(header, rows)
    )


def _cpu_per_request(samples: Sequence[Sample]) -> float:
    requests = sum(sample.requests for sample in samples)
    cpu = sum(sample.cpu_ms_per_request * sample.requests for sample in samples)
    return cpu / max(requests, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="one short round per side")
    parser.add_argument("--write", action="store_true", help="write the table to results.md")
    parser.add_argument(
        "--only",
        choices=("hot-run", "stacks", "replicas"),
        help="one comparison (not written: --write rewrites the whole section)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    plan = (
        Plan(rounds=1, seconds=3, connections=16)
        if args.quick
        else Plan(rounds=3, seconds=8, connections=16)
    )
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    with tempfile.TemporaryDirectory(prefix="lrkeeper-load-") as directory:
        workdir = Path(directory)
        script = workdir / "bench.lua"
        script.write_text(WRK_SCRIPT)
        comparisons: list[Comparison] = []
        for backend in backends:
            if args.only in (None, "hot-run"):
                comparisons.append(hot_run(backend, plan, workdir, script))
            if args.only in (None, "stacks"):
                comparisons.extend(stacks(backend, plan, workdir, script))
        if "postgresql" in backends and args.only in (None, "replicas"):
            comparisons.append(replicas(plan, workdir, script))
    table = render(comparisons, plan)
    print(table)
    if args.write and args.only is None:
        write_section("load", "## Load: one hot run, two replicas, uvicorn's stack\n\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
