"""The ``lrkeeper`` command: serve the API, migrate the database, look at and steer runs.

``serve`` and ``db upgrade`` work on the database named by LRKEEPER_DATABASE_URL and
need the server extra. Every other command is a client of a running service
(``--url`` or LRKEEPER_URL, LRKEEPER_TOKEN) through the client library
(``client.LRKeeper``), so it works the same against a remote deployment and with
the base install alone (httpx and tenacity): nothing here imports the server's
packages until ``serve`` or ``db upgrade`` runs.
"""

import argparse
import contextlib
import logging
import logging.config
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from types import FrameType
from typing import NoReturn

from service import client_commands
from service.client_commands import CommandError
from service.logs import LogFormat, logging_config

DEFAULT_SERVICE_URL = "http://127.0.0.1:8000"
GRACEFUL_SHUTDOWN_SECONDS = 8  # below Docker's 10 s between SIGTERM and SIGKILL


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrkeeper", description=__doc__.splitlines()[0].replace("``", "")
    )
    parser.add_argument("--version", action="version", version=f"lrkeeper {package_version()}")
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

    # Every client command takes --url; the token comes from LRKEEPER_TOKEN only, so it
    # never shows in a process list or a shell history.
    service = argparse.ArgumentParser(add_help=False)
    service.add_argument(
        "--url", help=f"service URL (LRKEEPER_URL, {DEFAULT_SERVICE_URL}); token: LRKEEPER_TOKEN"
    )

    runs_parser = commands.add_parser("runs", parents=[service], help="list runs, newest first")
    runs_parser.add_argument("--status", choices=["running", "stale", "finished", "failed"])
    runs_parser.add_argument("--prefix", help="only runs whose run_id starts with this")
    runs_parser.set_defaults(handler=client_commands.list_runs)

    history_parser = commands.add_parser(
        "history", parents=[service], help="a run's history: a table, CSV or a chart"
    )
    history_parser.add_argument("run_id")
    history_parser.add_argument("--csv", action="store_true", help="the service's CSV, streamed")
    history_parser.add_argument("--chart", metavar="OUT.svg|png", help="write the run's chart")
    history_parser.add_argument("--scale", choices=["linear", "log"], help="the chart's lr axis")
    history_parser.add_argument("--metrics", help="metrics to chart, comma-separated")
    history_parser.add_argument("--start", type=int, help="first step (inclusive)")
    history_parser.add_argument("--end", type=int, help="last step (inclusive)")
    history_parser.set_defaults(handler=client_commands.show_history)

    suggestion_parser = commands.add_parser(
        "lr-suggestion", parents=[service], help="an LR range test's suggested lrs, or a chart"
    )
    suggestion_parser.add_argument("run_id")
    suggestion_parser.add_argument(
        "--method",
        choices=["steepest", "minimum", "valley"],
        help="the suggestion shown first (the service's default: steepest)",
    )
    suggestion_parser.add_argument(
        "--chart", metavar="OUT.svg|png", help="write the loss curve with the suggestions marked"
    )
    suggestion_parser.set_defaults(handler=client_commands.lr_suggestion)

    preview_parser = commands.add_parser(
        "preview", parents=[service], help="a schedule's values without a run"
    )
    preview_parser.add_argument(
        "config", metavar="CONFIG.json", help="a scheduler config or a preview body; - for stdin"
    )
    preview_parser.add_argument("--steps", type=int, required=True, help="steps after step 0")
    preview_parser.add_argument(
        "--lr", type=float, action="append", help="a param group's lr (repeat for more groups)"
    )
    preview_parser.add_argument("--chart", metavar="OUT.svg|png", help="write the chart")
    preview_parser.set_defaults(handler=client_commands.preview)

    set_lr_parser = commands.add_parser("set-lr", parents=[service], help="set a run's lr")
    set_lr_parser.add_argument("run_id")
    set_lr_parser.add_argument(
        "lr", type=float, nargs="+", help="one lr for every group, or one per group"
    )
    set_lr_parser.add_argument("--reason", help="kept in the run's lr_set event")
    set_lr_parser.set_defaults(handler=client_commands.set_lr)

    rewind_parser = commands.add_parser(
        "rewind", parents=[service], help="back to the state after STEP (later history kept)"
    )
    rewind_parser.add_argument("run_id")
    rewind_parser.add_argument("step", type=int)
    rewind_parser.set_defaults(handler=client_commands.rewind)

    finish_parser = commands.add_parser("finish", parents=[service], help="mark a run finished")
    finish_parser.add_argument("run_id")
    finish_parser.add_argument("--failed", action="store_true", help="mark it failed instead")
    finish_parser.set_defaults(handler=client_commands.finish)
    return parser


def package_version() -> str:
    """The installed distribution's version (a checkout that was never installed: unknown)."""
    try:
        return version("lrkeeper")
    except PackageNotFoundError:
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    from client.errors import LRKeeperError, TransportError

    try:
        return handler(args)
    except TransportError as error:
        print(f"lrkeeper: cannot reach the service: {error}", file=sys.stderr)
        return 1
    except (CommandError, LRKeeperError) as error:
        # A ServiceError names the method, URL, status and the problem's detail; a
        # TransportError the method and URL it could not reach.
        print(f"lrkeeper: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`lrkeeper history RUN --csv | head`): stop quietly. Python
        # would flush stdout again at exit and fail on the same pipe, so stdout becomes
        # /dev/null first, as the signal module's documentation advises.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
