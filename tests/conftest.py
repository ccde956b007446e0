"""Live-server fixtures: the real ``lrkeeper serve`` in a subprocess, on a real database.

- ``live_server`` (one per test module and backend, parametrised over
  ``["sqlite", "postgresql"]``): a started server on a fresh database. Tests
  sharing it use unique run ids (uuid), so they need no cleanup.
- ``server_factory``: for tests that need their own servers (SIGKILL and restart,
  several replicas on one database, ``--workers 2``, a server that has not migrated).
- ``client``: an ``httpx.Client`` bound to ``live_server``.
- ``serve_app``: serves an app object built in the test (``create_app(settings)`` plus
  test-only routes) with real uvicorn on a thread, for what a subprocess cannot show.
- ``token_server`` (one per test module and backend): like ``live_server``, with
  ``LRKEEPER_TOKENS`` set to ``ACCESS_TOKENS`` (fresh random tokens each session).

On PostgreSQL every server gets a fresh database ``lrkeeper_t_<random>``,
created through ``LRKEEPER_TEST_POSTGRES_URL`` and dropped afterwards. If
PostgreSQL is unreachable the PostgreSQL tests fail; they never skip.
"""

import contextlib
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = os.environ.get(
    "LRKEEPER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# Generous: two CPUs are shared with other test runs. A deadline, not a timing assertion.
STARTUP_DEADLINE_SECONDS = 90.0
SHUTDOWN_DEADLINE_SECONDS = 30.0

Backend = Literal["sqlite", "postgresql"]
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def libpq_url(sqlalchemy_url: str, database: str | None = None) -> str:
    """A SQLAlchemy URL as psycopg.connect() takes it (no ``+psycopg``), optionally renamed."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


class DatabaseProvider:
    """Creates fresh databases for servers, and removes them all on ``close()``."""

    def __init__(self, scratch_directory: Path) -> None:
        self.scratch_directory = scratch_directory
        self.postgres_databases: list[str] = []

    def fresh_url(self, backend: Backend) -> str:
        if backend == "sqlite":
            directory = self.scratch_directory / f"sqlite-{uuid.uuid4().hex[:8]}"
            directory.mkdir(parents=True)
            return f"sqlite:///{directory / 'lrkeeper.db'}"
        name = f"lrkeeper_t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(libpq_url(POSTGRES_ADMIN_URL), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.postgres_databases.append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        if not self.postgres_databases:
            return
        with psycopg.connect(libpq_url(POSTGRES_ADMIN_URL), autocommit=True) as admin:
            for name in self.postgres_databases:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.postgres_databases.clear()


def _service_environment(database_url: str, extra: dict[str, str]) -> dict[str, str]:
    # Start from the caller's environment minus any LRKEEPER_* setting, so a developer's
    # own configuration cannot leak into a test server.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LRKEEPER_")}
    environment.update(PYTHONUNBUFFERED="1", LRKEEPER_DATABASE_URL=database_url, **extra)
    return environment


@dataclass
class LiveServer:
    """One service process (``lrkeeper serve``, or bare uvicorn when ``migrate`` is False).

    ``start()`` launches and waits until it is ready; ``launch()`` and
    ``wait_until_ready()`` do the two halves, for starting several at the same moment.
    ``kill()`` is SIGKILL, ``stop()`` SIGTERM (returning the exit code); ``start()``
    again reuses the same port and database. Output of every start goes to ``log``.
    """

    backend: Backend
    database_url: str
    log: Path
    port: int = field(default_factory=free_port)
    workers: int = 1
    migrate: bool = True
    environment: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        address = ["--host", "127.0.0.1", "--port", str(self.port)]
        if not self.migrate:
            # The app without `serve`'s migration step: how /readyz sees an old schema.
            return [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "service.main:create_app",
                *address,
            ]
        return [
            sys.executable, "-m", "service.cli", "serve", *address, "--workers", str(self.workers),
        ]  # fmt: skip

    def launch(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"server on port {self.port} is already running")
        with self.log.open("ab") as log_file:
            log_file.write(f"--- launching: {' '.join(self.command())}\n".encode())
            log_file.flush()
            self.process = subprocess.Popen(
                self.command(),
                cwd=PROJECT_ROOT,
                env=_service_environment(self.database_url, self.environment),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_ready(self) -> None:
        """Poll until the server answers /readyz (or /healthz when it did not migrate)."""
        probe_path = "/readyz" if self.migrate else "/healthz"
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        with httpx.Client(base_url=self.base_url, timeout=5) as probe:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"server exited while starting:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if probe.get(probe_path).status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"server not ready in {STARTUP_DEADLINE_SECONDS} s:\n{self.log_tail()}")

    def start(self) -> None:
        self.launch()
        self.wait_until_ready()

    def kill(self) -> None:
        """SIGKILL to the server and its workers: no shutdown code runs, as in a power cut.

        The server runs in its own process group (``start_new_session``), so with
        ``--workers N`` the workers die with their supervisor instead of holding the port.
        """
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        """SIGTERM, as an orchestrator stops a service; returns the exit code."""
        if self.process is None:
            raise RuntimeError("server was never started")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=SHUTDOWN_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"server ignored SIGTERM:\n{self.log_tail()}") from None
        return self.process.returncode

    def log_tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class ServerPool:
    """Starts servers on fresh databases and stops every one of them on ``close()``."""

    def __init__(self, scratch_directory: Path) -> None:
        self.scratch_directory = scratch_directory
        self.databases = DatabaseProvider(scratch_directory)
        self.servers: list[LiveServer] = []

    def __call__(
        self,
        backend: Backend = "sqlite",
        *,
        database_url: str | None = None,
        workers: int = 1,
        migrate: bool = True,
        environment: dict[str, str] | None = None,
        start: bool = True,
    ) -> LiveServer:
        """A server on ``database_url`` (default: a fresh database), started unless told not."""
        server = LiveServer(
            backend=backend,
            database_url=database_url or self.databases.fresh_url(backend),
            log=self.scratch_directory / f"server-{len(self.servers)}.log",
            workers=workers,
            migrate=migrate,
            environment=dict(environment or {}),
        )
        self.servers.append(server)
        if start:
            server.start()
        return server

    def close(self) -> None:
        try:
            for server in self.servers:
                if server.process is not None and server.process.poll() is None:
                    with contextlib.suppress(RuntimeError):
                        server.stop()
                server.kill()
        finally:
            self.databases.close()


ServerFactory = Callable[..., LiveServer]


@dataclass
class ReliabilityLog:
    """What the fault tests survived, printed at the end of the run (README "Reliability")."""

    rows: list[dict[str, object]] = field(default_factory=list)

    def record(self, name: str, **figures: object) -> None:
        self.rows.append({"test": name, **figures})


_RELIABILITY = ReliabilityLog()


@pytest.fixture
def reliability() -> ReliabilityLog:
    return _RELIABILITY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _RELIABILITY.rows:
        terminalreporter.section("reliability: faults survived, acknowledged steps lost")
        for row in _RELIABILITY.rows:
            terminalreporter.write_line(", ".join(f"{key}={value}" for key, value in row.items()))


@pytest.fixture
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory.mktemp("servers"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def database_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseProvider]:
    """Fresh, empty databases for tests that work below the HTTP layer (migrations)."""
    provider = DatabaseProvider(tmp_path_factory.mktemp("databases"))
    try:
        yield provider
    finally:
        provider.close()


@pytest.fixture(scope="module", params=BACKENDS)
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    pool = ServerPool(tmp_path_factory.mktemp(f"live-{request.param}"))
    try:
        yield pool(request.param)
    finally:
        pool.close()


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Like ``live_server`` on SQLite only, for tests whose subject is not the storage
    (frameworks, packaging) and whose cost would double for nothing on a second backend."""
    pool = ServerPool(tmp_path_factory.mktemp("live-sqlite-only"))
    try:
        yield pool("sqlite")
    finally:
        pool.close()


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.base_url, timeout=30) as http_client:
        yield http_client


@contextlib.contextmanager
def serving_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread of this process; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("in-process server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_DEADLINE_SECONDS)


@pytest.fixture
def serve_app() -> Iterator[Callable[[FastAPI], str]]:
    """Call with an app; it is served until the test ends and its base URL returned."""
    with contextlib.ExitStack() as servers:
        yield lambda app: servers.enter_context(serving_in_thread(app))


@dataclass(frozen=True)
class AccessTokens:
    """Tokens for a server with access control; random, so a grep of a log for one is a test."""

    read: str = field(default_factory=lambda: f"read-{secrets.token_urlsafe(18)}")
    write: str = field(default_factory=lambda: f"write-{secrets.token_urlsafe(18)}")
    # Configured only as ``sha256:<hex>``: the service never sees these in plaintext.
    hashed_read: str = field(default_factory=lambda: f"hashed-{secrets.token_urlsafe(18)}")
    hashed_write: str = field(default_factory=lambda: f"hashed-{secrets.token_urlsafe(18)}")
    wrong: str = field(default_factory=lambda: f"wrong-{secrets.token_urlsafe(18)}")

    @property
    def setting(self) -> str:
        """LRKEEPER_TOKENS: a plaintext and a digest entry of each role."""
        return ",".join(
            (
                f"read:{self.read}",
                f"write:{self.write}",
                f"read:sha256:{sha256_hex(self.hashed_read)}",
                f"write:sha256:{sha256_hex(self.hashed_write)}",
            )
        )

    def every_token(self) -> tuple[str, ...]:
        return (self.read, self.write, self.hashed_read, self.hashed_write, self.wrong)


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


ACCESS_TOKENS = AccessTokens()


@pytest.fixture(scope="module", params=BACKENDS)
def token_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    pool = ServerPool(tmp_path_factory.mktemp(f"tokens-{request.param}"))
    try:
        yield pool(request.param, environment={"LRKEEPER_TOKENS": ACCESS_TOKENS.setting})
    finally:
        pool.close()
