"""Throughput and latency of lrkeeper's hot path beside two baselines, in one sitting.

``python -m bench.service [--backend sqlite|postgresql|both] [--quick] [--write] [--profile]``

Three servers run side by side on 127.0.0.1, each on its own database of the
chosen backend: ``lrkeeper serve``; baseline (a), ``bench/baseline_app.py`` (the
same work on a bare FastAPI app with the raw driver); and baseline (b), MLflow's
tracking server (``log-metric``), from its own venv. wrk (a separate process,
written in C, so the load generator takes little of the two cores the servers
share) drives each endpoint at each concurrency with one connection per wrk
thread, so a Lua counter per thread is a counter per connection: every
connection drives its own run and every POST is a real advance.

For each (endpoint, concurrency) the three servers take turns, in rotating
order, for a few rounds; the table shows the median over rounds, and each ratio
is the median of the per-round ratios of req/s, so load from elsewhere on the
machine hits both sides of a ratio alike.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from bench import (
    format_number,
    format_ratio,
    machine_description,
    markdown_table,
    median,
    timestamp,
    write_section,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_CONNINFO = os.environ.get(
    "LRKEEPER_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BENCH_HOME = Path(os.environ.get("LRKEEPER_BENCH_HOME", "/var/tmp/lrkeeper-bench"))
MLFLOW_VENV = Path(os.environ.get("LRKEEPER_BENCH_MLFLOW_VENV", BENCH_HOME / "mlflow-venv"))
MLFLOW_WORKERS = 1  # lrkeeper serves from one process here; so does MLflow
STARTUP_TIMEOUT_SECONDS = 180.0
WRK_TIMEOUT = "10s"
GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "momentum": 0.9}]
COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 100}}

# One script for every server: argv after ``--`` is method, path template, body
# template, then one run identifier per connection. ``{run}`` and ``{step}`` are
# filled in per connection (= per wrk thread) and per request.
WRK_SCRIPT = r"""
local thread_count = 0
function setup(thread)
  thread:set("connection_index", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  method = args[1]
  local run = args[4 + connection_index]
  path = (string.gsub(args[2], "{run}", run))
  body_template = (string.gsub(args[3], "{run}", run))
  headers = {["Content-Type"] = "application/json"}
  step = 0
end

-- wrk calls request() once more than it sends (to check the script), so the step
-- counter moves on answers, not on requests: request() is idempotent.
function request()
  if body_template == "" then
    return wrk.format(method, path, headers)
  end
  return wrk.format(method, path, headers, (string.gsub(body_template, "{step}", step + 1)))
end

function response(status, headers, body)
  if status == 200 then
    step = step + 1
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '\nWRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"status_errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
"""


# -- processes and databases ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A server subprocess in its own process group (MLflow forks workers)."""

    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited; see {self.log_path}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(path).status_code == 200:
                        return
                time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {STARTUP_TIMEOUT_SECONDS} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        # Whatever of the group outlived its leader (MLflow's worker processes) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=5)


def start_server(
    name: str,
    command: Sequence[str],
    workdir: Path,
    env: dict[str, str] | None = None,
    checkout: Path = REPO_ROOT,
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / f"{name.replace(' ', '_')}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            cwd=checkout,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log_path


def start_lrkeeper(
    database_url: str,
    workdir: Path,
    name: str = "lrkeeper",
    checkout: Path = REPO_ROOT,
    serve_options: Sequence[str] = (),
) -> Server:
    """``lrkeeper serve`` with its defaults (one worker, log level info), as a user runs it;
    ``checkout`` serves another copy of the code (``--compare-with``): ``python -m`` run
    from there imports that copy's packages before the installed one."""
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", *serve_options]
    process, log_path = start_server(
        name,
        [*command, "--port", str(port)],
        workdir,
        {"LRKEEPER_DATABASE_URL": database_url},
        checkout,
    )
    server = Server(name, f"http://127.0.0.1:{port}", process, log_path)
    server.wait_ready("/readyz")
    return server


def start_baseline(backend: str, database: str, workdir: Path) -> Server:
    port = free_port()
    option = "--sqlite" if backend == "sqlite" else "--postgresql"
    command = [sys.executable, "-m", "bench.baseline_app", option, database, "--port", str(port)]
    process, log_path = start_server("baseline", command, workdir)
    server = Server("baseline", f"http://127.0.0.1:{port}", process, log_path)
    server.wait_ready("/healthz")
    return server


def start_async_baseline(conninfo: str, workdir: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "bench.baseline_async_app", "--postgresql", conninfo]
    process, log_path = start_server("baseline-async", [*command, "--port", str(port)], workdir)
    server = Server("baseline-async", f"http://127.0.0.1:{port}", process, log_path)
    server.wait_ready("/healthz")
    return server


def ensure_mlflow_venv() -> Path:
    """MLflow lives in a venv of its own: its pins must never touch lrkeeper's .venv."""
    mlflow = MLFLOW_VENV / "bin" / "mlflow"
    if not mlflow.exists():
        print(f"installing MLflow into {MLFLOW_VENV} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        pip = [str(MLFLOW_VENV / "bin" / "pip"), "install", "-q", "mlflow", "psycopg[binary]"]
        subprocess.run(pip, check=True)
    return mlflow


def mlflow_version() -> str:
    python = MLFLOW_VENV / "bin" / "python"
    completed = subprocess.run(
        [str(python), "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout.strip() or "unknown"


def start_mlflow(store_uri: str, workdir: Path) -> Server:
    port = free_port()
    command = [
        str(ensure_mlflow_venv()),
        "server",
        "--backend-store-uri",
        store_uri,
        "--default-artifact-root",
        str(workdir / "mlflow-artifacts"),
        "--no-serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(MLFLOW_WORKERS),
    ]
    # MLflow 3 starts a job runner with seven huey consumers by default; they poll the
    # database and compete for the two cores, and log-metric needs none of them.
    process, log_path = start_server(
        "mlflow", command, workdir, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    )
    server = Server("mlflow", f"http://127.0.0.1:{port}", process, log_path)
    server.wait_ready("/health")
    return server


@contextlib.contextmanager
def postgresql_databases(names: Sequence[str]) -> Iterator[None]:
    """Fresh databases for one sitting, dropped afterwards even if the sitting fails."""
    with psycopg.connect(POSTGRES_ADMIN_CONNINFO, autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield
    finally:
        with psycopg.connect(POSTGRES_ADMIN_CONNINFO, autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgresql_conninfo(database: str) -> str:
    admin = POSTGRES_ADMIN_CONNINFO
    return admin.rsplit("/", 1)[0] + "/" + database


@contextlib.contextmanager
def fresh_database_urls(backend: str, count: int, workdir: Path, label: str) -> Iterator[list[str]]:
    """``count`` fresh databases of ``backend`` for lrkeeper (dropped afterwards on
    PostgreSQL), named after the bench (``label``) that made them."""
    if backend == "sqlite":
        yield [f"sqlite:///{workdir}/{label}-{index}.db" for index in range(count)]
        return
    names = [f"lrkeeper_{label}_{uuid.uuid4().hex[:8]}_{index}" for index in range(count)]
    with postgresql_databases(names):
        yield [
            postgresql_conninfo(name).replace("postgresql://", "postgresql+psycopg://")
            for name in names
        ]


# -- what each server is asked to do ----------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One request shape for wrk: ``{run}`` per connection, ``{step}`` per request."""

    method: str
    path: str
    body: str = ""


@dataclass
class System:
    """A server under test: how to make runs on it and what its two endpoints are."""

    name: str
    server: Server
    create_runs: Callable[[httpx.Client, str, int], list[str]]
    post_steps: Workload
    get_lr: Workload
    current_step: Callable[[httpx.Client, str], int] | None = None


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response


def lrkeeper_system(server: Server, name: str = "lrkeeper") -> System:
    def create_runs(client: httpx.Client, prefix: str, count: int) -> list[str]:
        run_ids = [f"{prefix}-{index}" for index in range(count)]
        for run_id in run_ids:
            body = {"scheduler": COSINE, "param_groups": GROUPS}
            _checked(client.put(f"/v1/runs/{run_id}", json=body))
        return run_ids

    def current_step(client: httpx.Client, run_id: str) -> int:
        return int(_checked(client.get(f"/v1/runs/{run_id}/lr")).json()["step"])

    return System(
        name,
        server,
        create_runs,
        Workload("POST", "/v1/runs/{run}/steps", '{"step": {step}}'),
        Workload("GET", "/v1/runs/{run}/lr"),
        current_step,
    )


ASYNC_BASELINE = "baseline (a), async"
COMPARED = "lrkeeper (compared)"


def baseline_system(server: Server, name: str = "baseline (a)") -> System:
    def create_runs(client: httpx.Client, prefix: str, count: int) -> list[str]:
        run_ids = [f"{prefix}-{index}" for index in range(count)]
        for run_id in run_ids:
            body = {"lrs": [group["lr"] for group in GROUPS], "t_max": 100}
            _checked(client.put(f"/runs/{run_id}", json=body))
        return run_ids

    def current_step(client: httpx.Client, run_id: str) -> int:
        return int(_checked(client.get(f"/runs/{run_id}/lr")).json()["step"])

    return System(
        name,
        server,
        create_runs,
        Workload("POST", "/runs/{run}/steps", '{"step": {step}}'),
        Workload("GET", "/runs/{run}/lr"),
        current_step,
    )


def mlflow_system(server: Server) -> System:
    experiment_ids: list[str] = []

    def create_runs(client: httpx.Client, prefix: str, count: int) -> list[str]:
        if not experiment_ids:
            created = client.post(
                "/api/2.0/mlflow/experiments/create", json={"name": f"bench-{uuid.uuid4().hex}"}
            )
            experiment_ids.append(_checked(created).json()["experiment_id"])
        run_ids = []
        for index in range(count):
            body = {"experiment_id": experiment_ids[0], "run_name": f"{prefix}-{index}"}
            run = _checked(client.post("/api/2.0/mlflow/runs/create", json=body)).json()
            run_id = run["run"]["info"]["run_id"]
            first_metric = {"run_id": run_id, "key": "lr", "value": 0.1, "timestamp": 0, "step": 0}
            _checked(client.post("/api/2.0/mlflow/runs/log-metric", json=first_metric))
            run_ids.append(run_id)
        return run_ids

    log_metric = (
        '{"run_id": "{run}", "key": "lr", "value": 0.0999, '
        '"timestamp": 1700000000000, "step": {step}}'
    )
    return System(
        "MLflow (b)",
        server,
        create_runs,
        Workload("POST", "/api/2.0/mlflow/runs/log-metric", log_metric),
        Workload("GET", "/api/2.0/mlflow/runs/get?run_id={run}"),
    )


# -- one wrk run ------------------------------------------------------------------------


@dataclass
class Sample:
    """One wrk run against one server."""

    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    failures: int
    cpu_ms_per_request: float
    # The whole machine's CPU in use during the sample (1.0: every core busy): tells a
    # side that is short of cores from one that is short of work.
    machine_busy: float = 0.0


def run_wrk(
    system: System,
    workload: Workload,
    run_ids: Sequence[str],
    seconds: int,
    script_path: Path,
) -> Sample:
    connections = len(run_ids)
    command = [
        "wrk",
        f"-t{connections}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={WRK_TIMEOUT}",
        "-s",
        str(script_path),
        system.server.base_url,
        "--",
        workload.method,
        workload.path,
        workload.body,
        *run_ids,
    ]
    cpu_before = group_cpu_seconds(system.server.process.pid)
    machine_before = machine_cpu_ticks()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    cpu_used = group_cpu_seconds(system.server.process.pid) - cpu_before
    machine_after = machine_cpu_ticks()
    result_lines = [line for line in completed.stdout.splitlines() if line.startswith("WRK_RESULT")]
    if completed.returncode != 0 or not result_lines:
        raise RuntimeError(f"wrk failed: {completed.stdout}\n{completed.stderr}")
    result = json.loads(result_lines[-1].removeprefix("WRK_RESULT "))
    return Sample(
        requests=result["requests"],
        requests_per_second=result["requests"] / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        failures=result["status_errors"] + result["socket_errors"],
        cpu_ms_per_request=1000 * cpu_used / max(result["requests"], 1),
        machine_busy=busy_fraction(machine_before, machine_after),
    )


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) ticks of every core since boot, from /proc/stat's first line."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks[:8])  # guest time is already counted in user
    return total - idle, total


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total if total > 0 else 0.0


CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(process_group: int) -> float:
    """User + system CPU time of every process in the group (the server and its workers).

    CPU time per request hardly moves with load from elsewhere on the machine, unlike
    wall time, so it is the steadiest measure of what a request costs the server (the
    database server's own CPU is not in it).
    """
    total_ticks = 0
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp, ... utime is field 14, stime 15.
        if int(fields[2]) == process_group:
            total_ticks += int(fields[11]) + int(fields[12])
    return total_ticks / CLOCK_TICKS_PER_SECOND


def check_every_post_advanced(
    system: System, client: httpx.Client, run_ids: Sequence[str], requests: int
) -> None:
    """Each connection's run must have advanced once per answered request (a few in flight)."""
    if system.current_step is None:
        return
    steps = sum(system.current_step(client, run_id) for run_id in run_ids)
    if not requests <= steps <= requests + len(run_ids):
        raise RuntimeError(
            f"{system.name}: {requests} answered steps but the runs advanced {steps} steps"
        )


# -- a sitting --------------------------------------------------------------------------


@dataclass
class Cell:
    """One (backend, endpoint, concurrency): every system's samples, round by round."""

    backend: str
    endpoint: str
    concurrency: int
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def median_of(self, system: str, attribute: str) -> float:
        return median([getattr(sample, attribute) for sample in self.samples.get(system, [])])

    def ratio(self, system: str, reference: str) -> float:
        mine, theirs = self.samples.get(system, []), self.samples.get(reference, [])
        pairs = zip(mine, theirs, strict=False)
        return median([a.requests_per_second / b.requests_per_second for a, b in pairs])

    def cpu_ratio(self, system: str, reference: str) -> float:
        mine, theirs = self.samples.get(system, []), self.samples.get(reference, [])
        pairs = zip(mine, theirs, strict=False)
        return median([a.cpu_ms_per_request / b.cpu_ms_per_request for a, b in pairs])


@dataclass(frozen=True)
class Plan:
    concurrencies: tuple[int, ...]
    rounds: int
    seconds: int
    warmup_seconds: int


QUICK = Plan(concurrencies=(8,), rounds=1, seconds=1, warmup_seconds=0)
FULL = Plan(concurrencies=(1, 8, 64), rounds=3, seconds=1, warmup_seconds=1)
ENDPOINTS = ("POST /steps", "GET /lr")


def prepare_runs(
    system: System, client: httpx.Client, prefix: str, count: int, for_post: bool
) -> list[str]:
    """Fresh runs, one per connection; a run read by GET has one step behind it, as in training."""
    run_ids = system.create_runs(client, prefix, count)
    if not for_post and system.current_step is not None:
        post = system.post_steps
        for run_id in run_ids:
            _checked(
                client.request(
                    post.method,
                    post.path.replace("{run}", run_id),
                    content=post.body.replace("{step}", "1"),
                    headers={"Content-Type": "application/json"},
                )
            )
    return run_ids


def measure_cell(
    cell: Cell, systems: Sequence[System], plan: Plan, script_path: Path, sitting: str
) -> None:
    is_post = cell.endpoint.startswith("POST")
    for round_index in range(plan.rounds):
        shift = round_index % len(systems)
        for system in [*systems[shift:], *systems[:shift]]:
            with httpx.Client(base_url=system.server.base_url, timeout=30) as client:
                prefix = f"{sitting}-{cell.endpoint[0]}{cell.concurrency}-r{round_index}"
                run_ids = prepare_runs(system, client, prefix, cell.concurrency, is_post)
                workload = system.post_steps if is_post else system.get_lr
                sample = run_wrk(system, workload, run_ids, plan.seconds, script_path)
                if is_post:
                    check_every_post_advanced(
                        system, client, run_ids, sample.requests - sample.failures
                    )
            cell.samples.setdefault(system.name, []).append(sample)
            print(
                f"  {cell.backend} {cell.endpoint} c={cell.concurrency} {system.name}: "
                f"{sample.requests_per_second:,.0f} req/s, p50 {sample.p50_ms:.1f} ms, "
                f"p99 {sample.p99_ms:.1f} ms, CPU {sample.cpu_ms_per_request:.2f} ms/req, "
                f"failures {sample.failures}",
                file=sys.stderr,
            )


def warm_up(systems: Sequence[System], plan: Plan, script_path: Path, sitting: str) -> None:
    """First requests open pools and fill caches; no sample should pay for that."""
    for system in systems:
        with httpx.Client(base_url=system.server.base_url, timeout=30) as client:
            run_ids = system.create_runs(client, f"{sitting}-warm", 8)
            for workload in (system.post_steps, system.get_lr):
                if plan.warmup_seconds:
                    run_wrk(system, workload, run_ids, plan.warmup_seconds, script_path)


@contextlib.contextmanager
def servers_for(
    backend: str, workdir: Path, sitting: str, async_baseline: bool, compare_with: Path | None
) -> Iterator[list[System]]:
    """lrkeeper, baseline (a) and MLflow (b), each on a fresh database of ``backend``; with
    ``async_baseline`` (PostgreSQL only) also baseline (a) written async on asyncpg; with
    ``compare_with`` also lrkeeper served from that checkout (an earlier commit, say)."""
    databases = ("svc", "base", "mlflow", "abase", "cmp")
    names = {name: f"lrkeeper_bench_{sitting}_{name}" for name in databases}
    started: list[Server] = []
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            stack.enter_context(postgresql_databases(list(names.values())))
            lrkeeper_url = (
                "postgresql+psycopg://" + postgresql_conninfo(names["svc"]).split("://", 1)[1]
            )
            baseline_database = postgresql_conninfo(names["base"])
            mlflow_uri = (
                "postgresql+psycopg://" + postgresql_conninfo(names["mlflow"]).split("://", 1)[1]
            )
        else:
            lrkeeper_url = f"sqlite:///{workdir / 'lrkeeper.db'}"
            baseline_database = str(workdir / "baseline.db")
            mlflow_uri = f"sqlite:///{workdir / 'mlflow.db'}"
        try:
            started.append(start_lrkeeper(lrkeeper_url, workdir))
            started.append(start_baseline(backend, baseline_database, workdir))
            started.append(start_mlflow(mlflow_uri, workdir))
            systems = [
                lrkeeper_system(started[0]),
                baseline_system(started[1]),
                mlflow_system(started[2]),
            ]
            if async_baseline:
                started.append(start_async_baseline(postgresql_conninfo(names["abase"]), workdir))
                systems.append(baseline_system(started[-1], ASYNC_BASELINE))
            if compare_with is not None:
                compared_url = (
                    f"sqlite:///{workdir / 'compared.db'}"
                    if backend == "sqlite"
                    else "postgresql+psycopg://"
                    + postgresql_conninfo(names["cmp"]).split("://", 1)[1]
                )
                started.append(start_lrkeeper(compared_url, workdir, COMPARED, compare_with))
                systems.append(lrkeeper_system(started[-1], COMPARED))
            yield systems
        finally:
            for server in started:
                server.stop()


def run_backend(
    backend: str, plan: Plan, profile: bool, async_baseline: bool, compare_with: Path | None
) -> tuple[list[Cell], str]:
    sitting = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix=f"service-{backend}-", dir=BENCH_HOME))
    script_path = workdir / "steps.lua"
    script_path.write_text(WRK_SCRIPT)
    cells: list[Cell] = []
    profile_text = ""
    try:
        with servers_for(backend, workdir, sitting, async_baseline, compare_with) as systems:
            warm_up(systems, plan, script_path, sitting)
            for endpoint in ENDPOINTS:
                for concurrency in plan.concurrencies:
                    cell = Cell(backend, endpoint, concurrency)
                    measure_cell(cell, systems, plan, script_path, sitting)
                    cells.append(cell)
            if profile:
                profile_text = profile_against_baseline(
                    systems, plan, script_path, sitting, backend
                )
    except BaseException:
        print(f"server logs kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    return cells, profile_text


# -- profiling lrkeeper under load ------------------------------------------------------


PROFILE_CONCURRENCY = 8
PROFILE_RATE_HZ = 250
# Leaf frames of a thread with nothing to do: the thread pool's idle workers, the idle loop.
IDLE_LEAVES = ("threading.py:Condition.wait", "selectors.py:EpollSelector.select")


@dataclass
class Profile:
    """py-spy's GIL samples of one server under one workload, per answered request."""

    requests: int
    by_package: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)

    def ms_per_request(self, samples: int) -> float:
        return samples * 1000 / PROFILE_RATE_HZ / max(self.requests, 1)


def record_profile(
    py_spy: str,
    system: System,
    workload: Workload,
    run_ids: Sequence[str],
    seconds: int,
    script_path: Path,
    raw_path: Path,
) -> Profile:
    """Sample the server's thread holding the GIL (``--gil``) while wrk drives ``workload``:
    where its Python CPU time goes, which is what bounds throughput on two shared cores."""
    recorder = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(system.server.process.pid),  # one uvicorn worker: it serves in this process
            "--format",
            "raw",
            "--rate",
            str(PROFILE_RATE_HZ),
            "--duration",
            str(seconds + 1),
            "--output",
            str(raw_path),
            "--nonblocking",
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    sample = run_wrk(system, workload, run_ids, seconds, script_path)
    _, error_output = recorder.communicate(timeout=seconds + 30)
    if not raw_path.exists():
        raise RuntimeError(f"py-spy failed: {error_output.decode(errors='replace')[-500:]}")
    return parse_profile(raw_path.read_text(), sample.requests)


def parse_profile(collapsed: str, requests: int) -> Profile:
    """py-spy's collapsed stacks (``frame;frame;... count``) counted three ways."""
    profile = Profile(requests)
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        if frames[-1] in IDLE_LEAVES:
            continue
        for name in set(frames):
            profile.inclusive[name] += count
        leaf = frames[-1]
        profile.by_package[_package_of(leaf)] += count
        if leaf.startswith(("service/", "bench/")):
            # Our own frame as the leaf is a C call inside it (a lock, a driver call): the
            # line says which.
            leaf += " line " + stack.rsplit(":", 1)[-1].rstrip(")")
        profile.own[leaf] += count
    return profile


def profile_against_baseline(
    systems: Sequence[System], plan: Plan, script_path: Path, sitting: str, backend: str
) -> str:
    """Profile lrkeeper and baseline (a) under the same load, endpoint by endpoint, and say
    where lrkeeper's extra CPU per request goes."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        return "py-spy is not installed (`.venv/bin/pip install py-spy`): no profile.\n"
    seconds = max(plan.seconds * 2, 3)
    lrkeeper, baseline = systems[0], systems[1]
    sections = []
    for endpoint in ENDPOINTS:
        is_post = endpoint.startswith("POST")
        slug = "post" if is_post else "get"
        profiles = {}
        for system in (lrkeeper, baseline):
            with httpx.Client(base_url=system.server.base_url, timeout=30) as client:
                prefix = f"{sitting}-profile-{slug}"
                run_ids = prepare_runs(system, client, prefix, PROFILE_CONCURRENCY, is_post)
            workload = system.post_steps if is_post else system.get_lr
            raw_path = BENCH_HOME / f"profile-{backend}-{slug}-{system.server.name}.txt"
            profiles[system.name] = record_profile(
                py_spy, system, workload, run_ids, seconds, script_path, raw_path
            )
        heading = f"### Profile, {backend}, {endpoint} c={PROFILE_CONCURRENCY}\n\n"
        raw_paths = ", ".join(
            str(BENCH_HOME / f"profile-{backend}-{slug}-{name}.txt")
            for name in ("lrkeeper", "baseline")
        )
        sections.append(
            heading
            + render_profiles(profiles[lrkeeper.name], profiles[baseline.name])
            + f"\nRaw stacks: {raw_paths}\n"
        )
    return "\n".join(sections)


def render_profiles(lrkeeper: Profile, baseline: Profile, top: int = 15) -> str:
    """GIL-holding ms per answered request: by package beside the baseline, then lrkeeper's
    own functions (inclusive) and the functions its samples fell in (self)."""

    def ms(profile: Profile, samples: int) -> str:
        return f"{profile.ms_per_request(samples):.3f}"

    def excess(package: str) -> float:
        return lrkeeper.ms_per_request(lrkeeper.by_package[package]) - baseline.ms_per_request(
            baseline.by_package[package]
        )

    packages = sorted(set(lrkeeper.by_package) | set(baseline.by_package), key=excess)[::-1]
    package_rows = [
        [
            package,
            ms(lrkeeper, lrkeeper.by_package[package]),
            ms(baseline, baseline.by_package[package]),
            f"{excess(package):+.3f}",
        ]
        for package in packages[:top]
    ]
    package_rows.append(
        [
            "total",
            ms(lrkeeper, sum(lrkeeper.by_package.values())),
            ms(baseline, sum(baseline.by_package.values())),
            "",
        ]
    )
    self_time: Counter[str] = Counter()
    for leaf, count in lrkeeper.own.items():
        self_time[leaf.split(" line ")[0]] += count
    ours = [
        [name, ms(lrkeeper, count), ms(lrkeeper, self_time[name])]
        for name, count in lrkeeper.inclusive.most_common()
        if name.startswith("service/") and not name.startswith("service/cli.py")
    ][:top]
    leaves = [[name, ms(lrkeeper, count)] for name, count in lrkeeper.own.most_common(top)]
    return (
        f"GIL-holding ms per answered request ({lrkeeper.requests} lrkeeper requests, "
        f"{baseline.requests} baseline requests sampled at {PROFILE_RATE_HZ} Hz), "
        "sorted by lrkeeper's excess:\n\n"
        + markdown_table(["package (self)", "lrkeeper", "baseline (a)", "excess"], package_rows)
        + "\n\n"
        + markdown_table(["lrkeeper function", "inclusive ms/req", "self ms/req"], ours)
        + "\n\n"
        + markdown_table(["lrkeeper, function (self)", "ms/req"], leaves)
        + "\n"
    )


def _package_of(frame_name: str) -> str:
    """``sqlalchemy/engine/base.py:Connection.execute`` → ``sqlalchemy``; ours by module."""
    path = frame_name.split(":", 1)[0]
    if path.startswith(("service/", "bench/")):
        return path.removesuffix(".py")
    return path.split("/", 1)[0].removesuffix(".py")


def _frame_name(frame: str) -> str:
    """``report_step (/repo/service/runs/steps.py:88)`` → ``service/runs/steps.py:report_step``."""
    function, _, location = frame.partition(" (")
    path = location.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/site-packages/", "/lib/python3.11/", str(REPO_ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{function}" if path else function


# -- report -----------------------------------------------------------------------------


def render(cells: Sequence[Cell]) -> str:
    header = [
        "backend",
        "endpoint",
        "concurrency",
        "server",
        "req/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/req",
        "ratio vs (a)",
        "ratio vs MLflow",
        "CPU/req vs (a)",
    ]
    rows = []
    for cell in cells:
        for system in cell.samples:
            is_lrkeeper = system == "lrkeeper"
            versus_sync = system in ("lrkeeper", ASYNC_BASELINE, COMPARED)
            failures = sum(sample.failures for sample in cell.samples[system])
            rows.append(
                [
                    cell.backend,
                    cell.endpoint,
                    str(cell.concurrency),
                    system + (f" ({failures} failed)" if failures else ""),
                    format_number(cell.median_of(system, "requests_per_second"), 0),
                    format_number(cell.median_of(system, "p50_ms"), 2),
                    format_number(cell.median_of(system, "p99_ms"), 2),
                    format_number(cell.median_of(system, "cpu_ms_per_request"), 2),
                    format_ratio(cell.ratio(system, "baseline (a)")) if versus_sync else "",
                    format_ratio(cell.ratio(system, "MLflow (b)")) if is_lrkeeper else "",
                    format_ratio(cell.cpu_ratio(system, "baseline (a)")) if versus_sync else "",
                ]
            )
    return markdown_table(header, rows)


def verdicts(cells: Sequence[Cell]) -> list[str]:
    """The product's targets, each with its measured value."""
    lines = []
    for cell in cells:
        where = f"{cell.backend} {cell.endpoint} c={cell.concurrency}"
        versus_baseline = cell.ratio("lrkeeper", "baseline (a)")
        if cell.endpoint.startswith("POST"):
            versus_mlflow = cell.ratio("lrkeeper", "MLflow (b)")
            lines.append(_verdict(f"{where}: ≥ 0.8× (a)", versus_baseline >= 0.8, versus_baseline))
            lines.append(_verdict(f"{where}: ≥ 5× MLflow", versus_mlflow >= 5, versus_mlflow))
            if cell.concurrency == 8:
                p99 = cell.median_of("lrkeeper", "p99_ms")
                lines.append(
                    f"- {'met ' if p99 <= 20 else 'MISSED'} {where}: p99 ≤ 20 ms (is {p99:.1f} ms)"
                )
        else:
            lines.append(
                _verdict(f"{where}: ≥ 0.8× (a)'s read", versus_baseline >= 0.8, versus_baseline)
            )
        if ASYNC_BASELINE in cell.samples:
            faster = cell.ratio(ASYNC_BASELINE, "baseline (a)")
            lines.append(f"- sync or async, {where}: async (a) ÷ sync (a) = {format_ratio(faster)}")
        if COMPARED in cell.samples:
            lines.append(
                f"- this checkout ÷ the compared one, {where}: req/s "
                f"{format_ratio(cell.ratio('lrkeeper', COMPARED))}, CPU/req "
                f"{format_ratio(cell.cpu_ratio('lrkeeper', COMPARED))}"
            )
    return lines


def _verdict(target: str, met: bool, ratio: float) -> str:
    return f"- {'met ' if met else 'MISSED'} {target} (is {format_ratio(ratio)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="concurrency 8 only, 1 s per server")
    parser.add_argument("--write", action="store_true", help="update bench/results.md")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy lrkeeper and baseline (a) under the same load: where the CPU goes",
    )
    parser.add_argument(
        "--async-baseline",
        action="store_true",
        help="PostgreSQL: also baseline (a) written async on asyncpg (the sync-or-async question)",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="CHECKOUT",
        help="also serve lrkeeper from this checkout (e.g. a git worktree of an earlier commit)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    BENCH_HOME.mkdir(parents=True, exist_ok=True)
    ensure_mlflow_venv()
    plan = QUICK if args.quick else FULL
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]

    started_at, machine = timestamp(), machine_description()
    cells: list[Cell] = []
    profiles: list[str] = []
    for backend in backends:
        with_async = args.async_baseline and backend == "postgresql"
        backend_cells, profile_text = run_backend(
            backend, plan, args.profile, with_async, args.compare_with
        )
        cells.extend(backend_cells)
        if profile_text:
            profiles.append(profile_text)
    mode = "quick" if args.quick else "full"
    text = (
        f"## Service: POST /v1/runs/{{id}}/steps and GET /v1/runs/{{id}}/lr\n\n"
        f"{started_at}, {mode} run ({plan.rounds} rounds × {plan.seconds} s per server and "
        f"cell, rotating order); wrk, one connection per run; MLflow {mlflow_version()} "
        f"with {MLFLOW_WORKERS} worker; {machine}.\n\n"
        f"{render(cells)}\n\nRatios are of req/s, and of server CPU time per request for "
        "the last column (medians of per-round ratios; CPU time of the server's processes "
        "only, not the database server's).\n\n"
        + "\n".join(verdicts(cells))
        + "\n"
        + "".join(f"\n{profile}" for profile in profiles)
    )
    print(text)
    if args.write:
        write_section(f"bench.service.{args.backend}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
