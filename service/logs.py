"""Log lines: one format for every logger in a process, each line tagged with its request.

The service's lines, uvicorn's and Alembic's all go through one handler on the
root logger, so ``LRKEEPER_LOG_FORMAT=json`` makes every line a process writes
one JSON object (what log shippers parse) and ``text`` keeps them readable on a
terminal. The configuration is a ``logging.config.dictConfig`` dict because
uvicorn applies its ``log_config`` in each worker process it spawns; a
configuration made in the supervisor alone would not reach them.

The request id rides in a contextvar that service.edge sets for each request,
and a filter on the handler copies it onto every record: anything logged while a
request is handled (the access line, a traceback, a warning from deep below)
carries it without being handed around. Plain ``def`` routes run on anyio's
threads, which copy the context, so it reaches them too.
"""

import json
import logging
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Literal

LogFormat = Literal["text", "json"]

current_request_id: ContextVar[str | None] = ContextVar("lrkeeper_request_id", default=None)

access_logger = logging.getLogger("lrkeeper.access")

# What every LogRecord holds anyway; anything else on a record came in through ``extra``.
# uvicorn adds ``color_message``, a copy of the message with terminal colours.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
    "taskName",
}


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being handled (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            # With --workers N, which process wrote the line.
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
        line.update(_extra_fields(record))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``LEVEL:  [logger] message``, uvicorn's own layout, plus the request id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s:  [%(name)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        return text if request_id is None else f"{text} request_id={request_id}"


def _utc_timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def logging_config(
    log_format: LogFormat, level: str = "info", *, migrating: bool = False
) -> dict[str, Any]:
    """The ``dictConfig`` for a process of ``lrkeeper``; ``level`` is uvicorn's ``--log-level``.

    The root stays at WARNING: at INFO, SQLAlchemy would log every statement.
    Alembic's INFO lines are progress worth seeing while ``migrating``; a serving
    process only asks Alembic which revision the database is at (``/readyz``), and
    Alembic says "Context impl ..." at INFO on every such question.
    """
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    level_name = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"line": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "line",
                "filters": ["request_id"],
            }
        },
        "root": {"level": "WARNING", "handlers": ["stderr"]},
        "loggers": {
            # No handlers of their own: their lines reach the root's, in our format.
            "uvicorn": {"level": level_name, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level_name, "handlers": [], "propagate": True},
            "lrkeeper": {"level": level_name, "handlers": [], "propagate": True},
            "alembic": {"level": "INFO" if migrating else "WARNING", "propagate": True},
        },
    }


def log_request(
    method: str, route: str, status: int, seconds: float, path_params: Mapping[str, Any] | None
) -> None:
    """The one access line of a request (uvicorn's own access log is off)."""
    if not access_logger.isEnabledFor(logging.INFO):
        return
    duration_ms = round(seconds * 1000, 3)
    run_id = path_params.get("run_id") if path_params else None
    access_logger.info(
        "%s %s %d %.3f ms",
        method,
        route,
        status,
        duration_ms,
        extra={
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "run_id": run_id,
        },
    )
