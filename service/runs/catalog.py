"""Creating, reading, listing and patching runs.

Creating is insert-on-conflict, then lock and compare, so every rank of a job
may PUT the same run and none can race another into a duplicate.
"""

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.db import Database
from service.problems import (
    RunConflict,
)
from service.runs.answers import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_STALE_AFTER_SECONDS,
    Page,
    build_scheduler,
    check_param_group_count,
    decode_cursor,
    encode_cursor,
    event_dicts,
    page_limit,
    run_answer,
    run_not_found,
    stale_cutoff,
)
from service.runs.ranks import missing_ranks
from service.runs.retrying import retry_on_conflict
from service.runs.statements import (
    INSERT_STEP_ROW,
    RUN_COLUMNS,
    SELECT_RUN,
    dialect_insert,
    insert_events,
    iso_timestamp,
    rank_report_columns,
    run_columns,
    runs_table,
    utc_now,
)
from service.schedules.codec import encode_floats
from service.schemas import STOPPED_STATUSES, RunCreate, RunPatch


@retry_on_conflict
def create_run(
    database: Database,
    run_id: str,
    request: RunCreate,
    *,
    max_param_groups: int,
    stale_after: float = DEFAULT_STALE_AFTER_SECONDS,
) -> tuple[bool, dict[str, Any]]:
    """PUT a run: (True, run) when created, (False, run) when it exists with the same config.

    Insert-on-conflict first, so two creators racing never both insert; the loser
    locks the winner's row and compares normalized configs (RunConflict if they differ).
    """
    check_param_group_count(request.param_groups, max_param_groups)
    normalized, scheduler = build_scheduler(request.scheduler.as_config(), request.param_groups)
    outcome = scheduler.outcome()
    stored_scheduler = normalized
    stored_groups = encode_floats(request.param_groups)
    lr = encode_floats(outcome.lr)
    momentum = encode_floats(outcome.momentum)
    state = scheduler.state()
    events = event_dicts(outcome.events)
    now = utc_now()
    new_run = {
        "run_id": run_id,
        "status": "running",
        "step": outcome.step,
        "lr": lr,
        "momentum": momentum,
        "scheduler": stored_scheduler,
        "param_groups": stored_groups,
        "state": state,
        "metadata": encode_floats(request.metadata),
        "ranks": None if request.ranks is None else request.ranks.model_dump(),
        "created_at": now,
        "updated_at": now,
        "stepped_at": now,
    }
    insert_run = (
        dialect_insert(database, runs_table)
        .values(new_run)
        .on_conflict_do_nothing(index_elements=[run_columns.run_id])
        .returning(run_columns.id)
    )
    with database.write_lock, database.engine.begin() as connection:
        run_pk = connection.execute(insert_run).scalar()
        if run_pk is not None:
            connection.execute(
                INSERT_STEP_ROW,
                {
                    "run_pk": run_pk,
                    "step": outcome.step,
                    "lr": lr,
                    "momentum": momentum,
                    "state": state,
                    "metrics": {},
                    "worker": None,
                    "events": events,
                    "stop": outcome.stop,
                    "superseded": False,
                    "recorded_at": now,
                },
            )
            step_events = [(outcome.step, event) for event in events]
            insert_events(connection, run_pk, step_events, now)
            return True, run_answer(new_run, stale_cutoff(stale_after))
        existing = connection.execute(SELECT_RUN.with_for_update(), {"run_id": run_id}).one()
        differences = [
            *config_differences("scheduler", existing.scheduler, stored_scheduler),
            *config_differences("param_groups", existing.param_groups, stored_groups),
            *config_differences("ranks", existing.ranks, new_run["ranks"]),
        ]
        if differences:
            fields = ", ".join(difference["field"] for difference in differences)
            raise RunConflict(
                f"run {run_id!r} exists with another configuration ({fields})",
                differences=differences,
            )
        return False, run_answer(existing, stale_cutoff(stale_after))


def _same_value(stored: Any, requested: Any) -> bool:
    """JSON sameness: 0 and 0.0 are the same number, but True is not 1."""
    if isinstance(stored, bool) or isinstance(requested, bool):
        return type(stored) is type(requested) and stored == requested
    if isinstance(stored, int | float) and isinstance(requested, int | float):
        return stored == requested
    return type(stored) is type(requested) and stored == requested


def config_differences(path: str, stored: Any, requested: Any) -> list[dict[str, Any]]:
    """Every leaf where two JSON values differ, as ``{"field": "a.b.0.c", "stored", "requested"}``.

    Lists of different lengths are reported whole; a key present on one side only is
    reported with ``null`` on the other.
    """
    if isinstance(stored, dict) and isinstance(requested, dict):
        found: list[dict[str, Any]] = []
        for key in [*stored, *(key for key in requested if key not in stored)]:
            found.extend(config_differences(f"{path}.{key}", stored.get(key), requested.get(key)))
        return found
    if isinstance(stored, list) and isinstance(requested, list) and len(stored) == len(requested):
        found = []
        for index, (stored_item, requested_item) in enumerate(zip(stored, requested, strict=True)):
            found.extend(config_differences(f"{path}.{index}", stored_item, requested_item))
        return found
    if isinstance(stored, dict | list) or isinstance(requested, dict | list):
        if stored == requested:
            return []
        return [{"field": path, "stored": stored, "requested": requested}]
    if _same_value(stored, requested):
        return []
    return [{"field": path, "stored": stored, "requested": requested}]


@retry_on_conflict
def get_run(
    database: Database, run_id: str, *, stale_after: float = DEFAULT_STALE_AFTER_SECONDS
) -> dict[str, Any]:
    """One run; a ranked run whose next step has some ranks' reports says which (``waiting``),
    so a job stuck on a missing rank shows which one before its timeout."""
    with database.read_engine.connect() as connection:
        row = connection.execute(SELECT_RUN, {"run_id": run_id}).first()
        if row is None:
            raise run_not_found(run_id)
        answer = run_answer(row, stale_cutoff(stale_after))
        if row.ranks is not None:
            waiting = _waiting_ranks(connection, run_id, row.step + 1, row.ranks)
            if waiting is not None:
                answer["waiting"] = waiting
    return answer


def _waiting_ranks(
    connection: Connection, run_id: str, step: int, ranks: dict[str, Any]
) -> dict[str, Any] | None:
    reports = connection.execute(
        sa.select(rank_report_columns.rank, rank_report_columns.reported_at)
        .join(runs_table, run_columns.id == rank_report_columns.run_pk)
        .where(run_columns.run_id == run_id, rank_report_columns.step == step)
        .order_by(rank_report_columns.rank)
    ).all()
    if not reports:
        return None
    reported = [report.rank for report in reports]
    since = min(report.reported_at for report in reports)
    return {
        "step": step,
        "reported": reported,
        "missing": missing_ranks(ranks["world_size"], reported),
        "since": iso_timestamp(since),
        "decided_by": iso_timestamp(since + timedelta(seconds=ranks["timeout_s"])),
    }


@retry_on_conflict
def list_runs(
    database: Database,
    *,
    status: str | None,
    prefix: str | None,
    limit: int | None,
    cursor: str | None,
    max_limit: int,
    stale_after: float = DEFAULT_STALE_AFTER_SECONDS,
    newest_first: bool = False,
) -> Page:
    """Runs in creation order (the pages: newest first), keyset-paged on the primary key
    (the cursor hides it).

    ``stale`` and ``running`` split the stored ``running`` at one cutoff, taken once, so
    a run is listed under exactly one of them and shown with the status it was listed by.
    """
    limit = page_limit(limit, DEFAULT_LIST_LIMIT, max_limit)
    stale_before = stale_cutoff(stale_after)
    order = run_columns.id.desc() if newest_first else run_columns.id
    query = sa.select(run_columns.id, *RUN_COLUMNS).order_by(order).limit(limit + 1)
    if status == "stale":
        query = query.where(run_columns.status == "running", run_columns.stepped_at < stale_before)
    elif status == "running":
        query = query.where(run_columns.status == "running", run_columns.stepped_at >= stale_before)
    elif status is not None:
        query = query.where(run_columns.status == status)
    if prefix:
        # substr rather than LIKE: SQLite's LIKE ignores case, run ids do not.
        query = query.where(sa.func.substr(run_columns.run_id, 1, len(prefix)) == prefix)
    if cursor is not None:
        (after_pk,) = decode_cursor(cursor, 1)
        after = run_columns.id < after_pk if newest_first else run_columns.id > after_pk
        query = query.where(after)
    with database.read_engine.connect() as connection:
        rows = connection.execute(query).all()
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return Page([run_answer(row, stale_before) for row in rows[:limit]], next_cursor)


@retry_on_conflict
def count_stale_runs(database: Database, *, stale_after: float) -> int:
    """How many runs read as ``stale`` now (for /metrics)."""
    query = sa.select(sa.func.count()).where(
        run_columns.status == "running", run_columns.stepped_at < stale_cutoff(stale_after)
    )
    with database.read_engine.connect() as connection:
        count: int = connection.execute(query).scalar_one()
    return count


@retry_on_conflict
def update_run(
    database: Database,
    run_id: str,
    patch: RunPatch,
    *,
    stale_after: float = DEFAULT_STALE_AFTER_SECONDS,
) -> dict[str, Any]:
    """PATCH: status and/or metadata (replaced whole); the schedule itself never changes here.

    Reopening a finished or failed run (status back to ``running``) is an event, and
    restarts the stale clock: the run was stopped, not silent.
    """
    values: dict[str, Any] = {}
    if patch.status is not None:
        values["status"] = patch.status
    if patch.metadata is not None:
        values["metadata"] = encode_floats(patch.metadata)
    with database.write_lock, database.engine.begin() as connection:
        run = connection.execute(
            sa.select(run_columns.id, run_columns.status, run_columns.step)
            .where(run_columns.run_id == run_id)
            .with_for_update()
        ).first()
        if run is None:
            raise run_not_found(run_id)
        if not values:
            existing = connection.execute(SELECT_RUN, {"run_id": run_id}).one()
            return run_answer(existing, stale_cutoff(stale_after))
        now = utc_now()
        if patch.status == "running" and run.status in STOPPED_STATUSES:
            values["stepped_at"] = now
            reopened = {"kind": "reopened", "detail": {"from": run.status}}
            insert_events(connection, run.id, [(run.step, reopened)], now)
        updated = connection.execute(
            sa.update(runs_table)
            .where(run_columns.id == run.id)
            .values(**values, updated_at=now)
            .returning(*RUN_COLUMNS)
        ).one()
        return run_answer(updated, stale_cutoff(stale_after))
