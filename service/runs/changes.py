"""Changing a running run by hand: an lr edit, a rewind. Both are events; nothing is deleted."""

from typing import Any

import sqlalchemy as sa

from service import schedules
from service.db import Database
from service.runs.answers import (
    DEFAULT_STALE_AFTER_SECONDS,
    invalid,
    run_answer,
    run_not_found,
    stale_cutoff,
)
from service.runs.extremes import forget_extremes_from
from service.runs.retrying import retry_on_conflict
from service.runs.statements import (
    RUN_COLUMNS,
    SELECT_CURRENT_ROW,
    insert_events,
    rank_reports_table,
    run_columns,
    runs_table,
    step_columns,
    steps_table,
    utc_now,
)
from service.schedules.codec import encode_floats
from service.schemas import LrChange


@retry_on_conflict
def set_lr(
    database: Database,
    run_id: str,
    change: LrChange,
    *,
    stale_after: float = DEFAULT_STALE_AFTER_SECONDS,
) -> dict[str, Any]:
    """POST /lr: a hand edit of the groups' lrs; the next step continues from it, as in torch."""
    with database.write_lock, database.engine.begin() as connection:
        run = connection.execute(
            sa.select(
                run_columns.id,
                run_columns.step,
                run_columns.lr,
                run_columns.scheduler,
                run_columns.param_groups,
                run_columns.state,
            )
            .where(run_columns.run_id == run_id)
            .with_for_update()
        ).first()
        if run is None:
            raise run_not_found(run_id)
        if len(change.lr) != len(run.lr):
            raise invalid(
                ["body", "lr"],
                f"the run has {len(run.lr)} param groups, so lr needs {len(run.lr)} values, "
                f"got {len(change.lr)}",
            )
        scheduler = schedules.restore(run.scheduler, run.param_groups, run.state)
        scheduler.set_lr(change.lr)
        new_lr = encode_floats(scheduler.lrs())
        now = utc_now()
        detail: dict[str, Any] = {"from": run.lr, "to": new_lr}
        if change.reason is not None:
            detail["reason"] = change.reason
        lr_set = [(run.step, {"kind": "lr_set", "detail": detail})]
        insert_events(connection, run.id, lr_set, now)
        updated = connection.execute(
            sa.update(runs_table)
            .where(run_columns.id == run.id)
            .values(lr=new_lr, state=scheduler.state(), updated_at=now)
            .returning(*RUN_COLUMNS)
        ).one()
        return run_answer(updated, stale_cutoff(stale_after))


@retry_on_conflict
def rewind(
    database: Database,
    run_id: str,
    step: int,
    *,
    stale_after: float = DEFAULT_STALE_AFTER_SECONDS,
) -> dict[str, Any]:
    """POST /rewind: back to the state step K recorded; later rows are superseded, never deleted."""
    with database.write_lock, database.engine.begin() as connection:
        run = connection.execute(
            sa.select(run_columns.id, run_columns.step)
            .where(run_columns.run_id == run_id)
            .with_for_update()
        ).first()
        if run is None:
            raise run_not_found(run_id)
        if step > run.step:
            raise invalid(
                ["body", "step"],
                f"step {step} is not on the run's current line of history (steps 0 to {run.step})",
            )
        recorded = connection.execute(SELECT_CURRENT_ROW, {"run_pk": run.id, "step": step}).one()
        now = utc_now()
        connection.execute(
            sa.update(steps_table)
            .where(
                step_columns.run_pk == run.id,
                step_columns.step > step,
                sa.not_(step_columns.superseded),
            )
            .values(superseded=True)
        )
        forget_extremes_from(connection, run.id, step)
        # The ranks' reports of the steps taken back (and of a step still waiting) go too:
        # those steps will be reported afresh, and may be with other metrics.
        connection.execute(
            sa.delete(rank_reports_table).where(
                rank_reports_table.c.run_pk == run.id, rank_reports_table.c.step > step
            )
        )
        detail = {"from": run.step, "to": step}
        rewound = [(step, {"kind": "rewind", "detail": detail})]
        insert_events(connection, run.id, rewound, now)
        updated = connection.execute(
            sa.update(runs_table)
            .where(run_columns.id == run.id)
            .values(
                step=step,
                state=recorded.state,
                lr=recorded.lr,
                momentum=recorded.momentum,
                updated_at=now,
            )
            .returning(*RUN_COLUMNS)
        ).one()
        return run_answer(updated, stale_cutoff(stale_after))
