"""The ``lrkeeper`` commands that talk to a running service, each through ``client.LRKeeper``.

What people reach for during a run: list the runs, read or export a run's history,
draw it, preview a schedule, and steer a run (set its lr, rewind it, finish it).
Tables are for people (values rounded, times relative); ``--csv`` and ``--chart``
hand over the service's own CSV and images untouched. Only the base install's
packages are imported (the client library: httpx, tenacity).
"""

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from client.api import SUGGESTION_METHODS, LRKeeper, RetryPolicy, Run
from service.readable import relative_time, rounded_list

# A command is a person waiting: the first failure is shown at once, not retried for minutes.
NO_RETRIES = RetryPolicy(deadline=0)
TIMEOUT_SECONDS = 30.0
IMAGE_SUFFIXES = {".svg": "svg", ".png": "png"}
# Param groups for a preview whose file names none: one SGD-like group (momentum, so a
# schedule that cycles it is accepted too).
DEFAULT_PARAM_GROUPS = [{"lr": 0.1, "momentum": 0.9}]
PROGRESS_EVERY_SECONDS = 0.5


class CommandError(Exception):
    """A failure to report in one line on stderr, without a traceback."""


def connect(args: argparse.Namespace) -> LRKeeper:
    """The client for ``--url`` (else LRKEEPER_URL) with LRKEEPER_TOKEN, retries off."""
    return LRKeeper(url=args.url, timeout=TIMEOUT_SECONDS, retry=NO_RETRIES)


# -- reading --------------------------------------------------------------------------------


def list_runs(args: argparse.Namespace) -> int:
    """The runs, newest first: status (``stale`` included), step, lr, last update."""
    with connect(args) as service:
        runs = list(service.list_runs(status=args.status, prefix=args.prefix))
    runs.sort(key=lambda run: run.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    now = datetime.now(UTC)
    rows = [
        [
            run.run_id,
            run.status,
            str(run.step),
            rounded_list(run.lr, ","),
            relative_time(run.updated_at, now),
        ]
        for run in runs
    ]
    print_table(["run_id", "status", "step", "lr", "updated"], rows)
    return 0


def show_history(args: argparse.Namespace) -> int:
    """A run's history as a table, the service's CSV (``--csv``), or a chart (``--chart``)."""
    with connect(args) as service:
        if args.chart is not None:
            write_chart(args.chart, lambda image_format: service.run_chart(
                args.run_id,
                image_format,
                scale=args.scale,
                start=args.start,
                end=args.end,
                metrics=args.metrics.split(",") if args.metrics else None,
            ))  # fmt: skip
            return 0
        if args.csv:
            copy_text(service.history_csv(args.run_id), sys.stdout, progress=sys.stderr)
            return 0
        items = service.history(args.run_id, start=args.start, end=args.end)
        rows = [
            [
                str(item.step),
                rounded_list(item.lr, ","),
                rounded_list(item.momentum, ",") if item.momentum is not None else "",
                " ".join(f"{name}={value:.6g}" for name, value in sorted(item.metrics.items())),
                item.worker or "",
                item.recorded_at.isoformat(timespec="seconds") if item.recorded_at else "",
            ]
            for item in items
        ]
    print_table(["step", "lr", "momentum", "metrics", "worker", "recorded_at"], rows)
    return 0


def lr_suggestion(args: argparse.Namespace) -> int:
    """A range test's suggestions, the chosen method first, then the others and CyclicLR's
    bounds; with ``--chart``, the service's picture of the curve with them marked."""
    with connect(args) as service:
        if args.chart is not None:
            write_chart(args.chart, lambda image_format: service.lr_suggestion_chart(
                args.run_id, image_format, method=args.method
            ))  # fmt: skip
            return 0
        suggestion = service.lr_suggestion(args.run_id, args.method)
    others = [method for method in SUGGESTION_METHODS if method != suggestion.method]
    rows = [[suggestion.method, number(suggestion.lr), "chosen"]]
    rows += [[method, number(suggestion.suggestions[method]), ""] for method in others]
    rows += [
        ["base_lr", number(suggestion.base_lr), "CyclicLR: where the loss starts falling"],
        ["max_lr", number(suggestion.max_lr), "CyclicLR: where it stops falling"],
    ]
    print_table(["method", "lr", ""], rows)
    return 0


def preview(args: argparse.Namespace) -> int:
    """A schedule's lr (and momentum) per step, as a table or a chart (``--chart``).

    CONFIG is a scheduler config (``{"type", "params"}``) or a whole preview body
    (``{"scheduler", "param_groups", "metrics"?}``); ``-`` reads it from stdin.
    """
    scheduler, param_groups, metrics = read_preview_config(args.config, args.lr)
    with connect(args) as service:
        if args.chart is not None:
            write_chart(args.chart, lambda image_format: service.preview_chart(
                scheduler, param_groups, args.steps, image_format, metrics
            ))  # fmt: skip
            return 0
        schedule = service.preview(scheduler, param_groups, args.steps, metrics)
    groups = range(len(param_groups))
    header = ["step", *(f"lr_{group}" for group in groups)]
    if schedule.momentum is not None:
        header += [f"momentum_{group}" for group in groups]
    rows = []
    for step, lrs in enumerate(schedule.lr):
        momenta = schedule.momentum[step] if schedule.momentum is not None else []
        rows.append([str(step), *(number(value) for value in (*lrs, *momenta))])
    print_table(header, rows)
    return 0


def read_preview_config(
    source: str, lrs: Sequence[float] | None
) -> tuple[dict[str, Any], list[dict[str, Any]], list[float] | None]:
    """The scheduler, param groups and metrics a CONFIG file holds; ``--lr`` values make
    one group each when the file names no groups."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        config = json.loads(text)
    except OSError as error:
        raise CommandError(f"cannot read {source}: {error.strerror}") from None
    except ValueError as error:
        raise CommandError(f"{source} is not JSON: {error}") from None
    if not isinstance(config, dict):
        raise CommandError(f"{source} holds no JSON object")
    if "scheduler" in config:
        scheduler, groups, metrics = (
            config["scheduler"],
            config.get("param_groups"),
            config.get("metrics"),
        )
    else:
        scheduler, groups, metrics = config, None, None
    if lrs:
        groups = [{"lr": lr, "momentum": 0.9} for lr in lrs]
    return scheduler, groups or DEFAULT_PARAM_GROUPS, metrics


# -- steering a run ---------------------------------------------------------------------


def set_lr(args: argparse.Namespace) -> int:
    """Set the run's lr by hand: one value for every group, or one per group."""
    with connect(args) as service:
        lrs = list(args.lr)
        if len(lrs) == 1:
            lrs *= len(service.get_run(args.run_id).lr)
        run = service.set_lr(args.run_id, lrs, reason=args.reason)
    print_run(run)
    return 0


def rewind(args: argparse.Namespace) -> int:
    with connect(args) as service:
        run = service.rewind(args.run_id, args.step)
    print_run(run)
    return 0


def finish(args: argparse.Namespace) -> int:
    with connect(args) as service:
        run = service.finish(args.run_id, "failed" if args.failed else "finished")
    print_run(run)
    return 0


def print_run(run: Run) -> None:
    print(f"{run.run_id}: {run.status} at step {run.step}, lr {rounded_list(run.lr, ',')}")


# -- output -----------------------------------------------------------------------------


def write_chart(path: str, draw: Any) -> None:
    """Fetch the chart in the format the file's suffix names, then write it."""
    image_format = IMAGE_SUFFIXES.get(Path(path).suffix.lower())
    if image_format is None:
        raise CommandError(f"--chart {path}: name a .svg or .png file")
    image: bytes = draw(image_format)
    try:
        Path(path).write_bytes(image)
    except OSError as error:
        raise CommandError(f"cannot write {path}: {error.strerror}") from None
    print(f"wrote {path} ({len(image)} bytes)", file=sys.stderr)


def copy_text(pieces: Iterable[str], output: TextIO, *, progress: TextIO) -> None:
    """Write the pieces as they come; on a terminal, rows and bytes so far on ``progress``."""
    shows_progress = progress.isatty()
    rows = characters = 0
    shown_at = time.monotonic()
    for piece in pieces:
        output.write(piece)
        rows += piece.count("\n")
        characters += len(piece)
        if shows_progress and time.monotonic() - shown_at >= PROGRESS_EVERY_SECONDS:
            progress.write(f"\r{max(rows - 1, 0)} rows, {characters} bytes")
            progress.flush()
            shown_at = time.monotonic()
    output.flush()
    if shows_progress:
        progress.write(f"\r{max(rows - 1, 0)} rows, {characters} bytes\n")


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(title), *(len(row[i]) for row in rows)]) for i, title in enumerate(header)]
    for line in _lines(header, rows, widths):
        print(line)


def _lines(
    header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int]
) -> Iterator[str]:
    for row in (header, *rows):
        yield "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()


def number(value: float) -> str:
    """A value as people read it: six significant digits."""
    return f"{value:.6g}" if math.isfinite(value) else str(value)
