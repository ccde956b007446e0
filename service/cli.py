"""The ``lrkeeper`` command: serve the API, migrate the database, look at runs.

``serve`` and ``db upgrade`` work on the database named by LRKEEPER_DATABASE_URL;
``runs`` and ``history`` are HTTP clients of a running service (LRKEEPER_URL,
LRKEEPER_TOKEN), so they work the same against a remote deployment.
"""

import argparse
import contextlib
import csv
import json
import logging
import logging.config
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, NoReturn

import httpx

from service.logs import LogFormat, logging_config

DEFAULT_SERVICE_URL = "http://127.0.0.1:8000"
PAGE_LIMIT = 1000
GRACEFUL_SHUTDOWN_SECONDS = 8  # below Docker's 10 s between SIGTERM and SIGKILL


class CommandError(Exception):
    """A failure to report in one line on stderr, without a traceback."""


def configure_logging(log_format: LogFormat, level: str = "info") -> None:
    """Every line on stderr in ``log_format`` (service.logs), Alembic's progress included."""
    logging.config.dictConfig(logging_config(log_format, level, migrating=True))


@contextlib.contextmanager
def shared_metrics_directory(workers: int) -> Iterator[None]:
    """With several workers, a fresh PROMETHEUS_MULTIPROC_DIR for them, removed at exit.

    Set here, before uvicorn spawns the workers, because prometheus-client picks
    its value store when a process imports it (service.metrics). A directory the
    operator set is used as it is, and left in place.
    """
    from service.metrics import MULTIPROCESS_DIRECTORY_VARIABLE

    if workers <= 1 or MULTIPROCESS_DIRECTORY_VARIABLE in os.environ:
        yield
        return
    directory = tempfile.mkdtemp(prefix="lrkeeper-metrics-")
    os.environ[MULTIPROCESS_DIRECTORY_VARIABLE] = directory
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_DIRECTORY_VARIABLE]
        shutil.rmtree(directory, ignore_errors=True)


def _exit_cleanly(_signal: int, _frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


def serve(args: argparse.Namespace) -> int:
    """Migrate, then serve until SIGTERM; a requested stop is a success (exit 0)."""
    import uvicorn

    from service.access import AccessPolicy
    from service.auth import InvalidTokens
    from service.config import Settings
    from service.db import upgrade_to_head

    settings = Settings()
    # Checked before anything else (the database included), so a typo in the tokens is
    # one line naming the entry and a non-zero exit, not a traceback from every worker.
    try:
        access = AccessPolicy.from_settings(settings)
    except InvalidTokens as error:
        raise CommandError(str(error)) from None
    # uvicorn shuts down gracefully on SIGTERM, restores the previous handler and
    # re-raises the signal; this handler turns that (or a SIGTERM during the
    # migration, whose transaction then rolls back) into exit status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    configure_logging(settings.log_format, args.log_level)
    logging.getLogger("lrkeeper.access").info("%s", access.describe())
    upgrade_to_head(settings.database_url)
    with shared_metrics_directory(args.workers):
        uvicorn.run(
            "service.main:create_app",
            factory=True,
            host=args.host if args.host is not None else settings.host,
            port=args.port if args.port is not None else settings.port,
            workers=args.workers,
            log_level=args.log_level,
            loop=args.loop,
            http=args.http,
            # Every worker applies it; service.edge writes the one access line per request.
            log_config=logging_config(settings.log_format, args.log_level),
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    return 0


def db_upgrade(_args: argparse.Namespace) -> int:
    from service.config import Settings
    from service.db import upgrade_to_head

    settings = Settings()
    configure_logging(settings.log_format)
    upgrade_to_head(settings.database_url)
    print("database is at the latest migration")
    return 0


def _service_client(url: str | None) -> httpx.Client:
    base_url = url or os.environ.get("LRKEEPER_URL", DEFAULT_SERVICE_URL)
    token = os.environ.get("LRKEEPER_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=30)


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        problem = response.json()
        message = problem.get("detail") or problem.get("title")
    except (ValueError, AttributeError):
        message = response.text[:200]
    raise CommandError(
        f"{response.request.method} {response.request.url}: {response.status_code} {message}"
    )


def _pages(client: httpx.Client, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every item of a cursor-paged listing, following ``next_cursor`` to the end."""
    cursor: str | None = None
    while True:
        page_params = {**params, "cursor": cursor} if cursor else params
        page = _checked(client.get(path, params=page_params)).json()
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ",".join(_format_value(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(title), *(len(row[i]) for row in rows)]) for i, title in enumerate(header)]
    for line in (header, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def list_runs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": PAGE_LIMIT}
    if args.status:
        params["status"] = args.status
    if args.prefix:
        params["prefix"] = args.prefix
    with _service_client(args.url) as client:
        runs = list(_pages(client, "/v1/runs", params))
    header = ["run_id", "status", "step", "lr", "updated_at"]
    rows = [[_format_value(run.get(column)) for column in header] for run in runs]
    _print_table(header, rows)
    return 0


def show_history(args: argparse.Namespace) -> int:
    path = f"/v1/runs/{args.run_id}/history"
    with _service_client(args.url) as client:
        items = list(_pages(client, path, {"limit": PAGE_LIMIT}))
    if args.csv:
        _write_history_csv(items)
        return 0
    header = ["step", "lr", "momentum", "metrics", "worker", "recorded_at"]
    rows = [[_format_value(item.get(column)) for column in header] for item in items]
    _print_table(header, rows)
    return 0


def _write_history_csv(items: Sequence[dict[str, Any]]) -> None:
    """The same columns as the service's own ``Accept: text/csv`` answer (API.md)."""
    groups = max((len(item["lr"]) for item in items), default=0)
    cycles_momentum = any(item.get("momentum") is not None for item in items)
    metric_names = sorted({name for item in items for name in (item.get("metrics") or {})})
    header = [f"lr_{index}" for index in range(groups)]
    if cycles_momentum:
        header += [f"momentum_{index}" for index in range(groups)]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["step", *header, *metric_names, "worker", "recorded_at", "superseded"])
    for item in items:
        momentum = item.get("momentum") or [None] * groups
        metrics = item.get("metrics") or {}
        writer.writerow(
            [
                item["step"],
                *item["lr"],
                *(momentum if cycles_momentum else []),
                *(metrics.get(name, "") for name in metric_names),
                item.get("worker") or "",
                item.get("recorded_at", ""),
                str(item.get("superseded", False)).lower(),
            ]
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrkeeper", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="migrate the database, then serve the API")
    serve_parser.add_argument("--host", help="address to listen on (LRKEEPER_HOST, 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to listen on (LRKEEPER_PORT, 8000)")
    serve_parser.add_argument("--workers", type=int, default=1, help="worker processes")
    serve_parser.add_argument("--log-level", default="info", help="uvicorn log level")
    # uvicorn's "auto" takes uvloop and httptools when installed (the server extra installs
    # them; bench/load.py measures them against asyncio and h11).
    serve_parser.add_argument(
        "--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="event loop"
    )
    serve_parser.add_argument(
        "--http", choices=("auto", "h11", "httptools"), default="auto", help="HTTP parser"
    )
    serve_parser.set_defaults(handler=serve)

    db_parser = commands.add_parser("db", help="database maintenance")
    db_commands = db_parser.add_subparsers(dest="db_command", required=True)
    upgrade_parser = db_commands.add_parser("upgrade", help="migrate to the latest schema")
    upgrade_parser.set_defaults(handler=db_upgrade)

    url_help = f"service URL (LRKEEPER_URL, {DEFAULT_SERVICE_URL})"
    runs_parser = commands.add_parser("runs", help="list runs of a running service")
    runs_parser.add_argument("--url", help=url_help)
    runs_parser.add_argument("--status", choices=["running", "finished", "failed"])
    runs_parser.add_argument("--prefix", help="only runs whose run_id starts with this")
    runs_parser.set_defaults(handler=list_runs)

    history_parser = commands.add_parser("history", help="a run's step history")
    history_parser.add_argument("run_id")
    history_parser.add_argument("--url", help=url_help)
    history_parser.add_argument("--csv", action="store_true", help="CSV instead of a table")
    history_parser.set_defaults(handler=show_history)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CommandError as error:
        print(f"lrkeeper: {error}", file=sys.stderr)
        return 1
    except httpx.TransportError as error:
        print(f"lrkeeper: cannot reach the service: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
