"""Checkpoints: ``state_dict()`` in a torch checkpoint resumes the same run at its step.

A checkpoint at the run's step continues it; an older one rewinds the run (so
model, optimizer and schedule agree again, metric-driven state included); one
the run never reached is refused. An optimizer restored before the scheduler is
constructed is still recognised as the run's.
"""

import io
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler

from client import CheckpointAheadOfRun, LRKeeper, RemoteLRScheduler
from tests.client.training import (
    batches,
    group_values,
    make_optimizer,
    tiny_model,
    train_step,
)

pytestmark = pytest.mark.torch

PLATEAU = {
    "type": "ReduceLROnPlateau",
    "params": {"factor": 0.5, "patience": 1, "threshold": 0.05},
}
LOSSES = [1.0, 0.99, 0.98, 0.9, 0.89, 0.88, 0.87, 0.86, 0.7, 0.69, 0.68, 0.67, 0.66, 0.65, 0.64]
ONE_CYCLE = {"type": "OneCycleLR", "params": {"max_lr": [0.1, 0.05], "total_steps": 20}}


def torch_plateau_lrs() -> list[list[float]]:
    """lr after steps 1..len(LOSSES) of an uninterrupted torch run."""
    optimizer = make_optimizer("sgd", tiny_model())
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1, threshold=0.05)
    lrs = []
    for loss in LOSSES:
        optimizer.step()
        scheduler.step(loss)
        lrs.append([float(lr) for lr in scheduler.get_last_lr()])
    return lrs


def save(model: Any, optimizer: Any, scheduler: RemoteLRScheduler) -> bytes:
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        buffer,
    )
    return buffer.getvalue()


def load(checkpoint: bytes) -> dict[str, Any]:
    # torch's default weights_only loading: the scheduler state must be plain data.
    loaded: dict[str, Any] = torch.load(io.BytesIO(checkpoint))
    return loaded


def fresh_process(keeper: LRKeeper, run_id: str, config: dict[str, Any]) -> tuple[Any, ...]:
    """What a restarted job builds before loading its checkpoint: torch's documented order."""
    model = tiny_model(seed=99)
    optimizer = make_optimizer("sgd", model)
    scheduler = RemoteLRScheduler(optimizer, run_id, config, client=keeper)
    return model, optimizer, scheduler


def test_checkpoint_at_the_runs_step_continues_the_run(keeper: LRKeeper, run_id: str) -> None:
    expected = torch_plateau_lrs()
    model, optimizer, scheduler = fresh_process(keeper, run_id, PLATEAU)
    data = batches(len(LOSSES))
    for index in range(8):
        train_step(model, optimizer, data[index])
        scheduler.step(LOSSES[index])
    checkpoint = save(model, optimizer, scheduler)

    model, optimizer, scheduler = fresh_process(keeper, run_id, PLATEAU)
    state = load(checkpoint)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    assert scheduler.last_epoch == 8
    for index in range(8, len(LOSSES)):
        train_step(model, optimizer, data[index])
        scheduler.step(LOSSES[index])
        assert scheduler.get_last_lr() == expected[index], f"step {index + 1}"
    assert not any(event.kind == "rewind" for event in keeper.events(run_id))


def test_older_checkpoint_rewinds_the_run_and_the_schedule_replays_exactly(
    keeper: LRKeeper, run_id: str
) -> None:
    expected = torch_plateau_lrs()
    model, optimizer, scheduler = fresh_process(keeper, run_id, PLATEAU)
    data = batches(len(LOSSES))
    for index in range(12):
        if index == 5:
            checkpoint = save(model, optimizer, scheduler)
        train_step(model, optimizer, data[index])
        scheduler.step(LOSSES[index])

    # The job died at step 12; the last checkpoint is from step 5.
    model, optimizer, scheduler = fresh_process(keeper, run_id, PLATEAU)
    assert scheduler.last_epoch == 12
    state = load(checkpoint)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    assert scheduler.last_epoch == 5
    assert keeper.get_run(run_id).step == 5
    assert scheduler.get_last_lr() == expected[4]
    assert [group["lr"] for group in optimizer.param_groups] == expected[4]

    for index in range(5, len(LOSSES)):
        train_step(model, optimizer, data[index])
        scheduler.step(LOSSES[index])
        assert scheduler.get_last_lr() == expected[index], f"step {index + 1}"
    assert len(set(map(tuple, expected))) > 2, "plateau reductions must happen to prove anything"
    superseded = [i.step for i in keeper.history(run_id, include_superseded=True) if i.superseded]
    assert superseded == list(range(6, 13))
    assert [event.kind for event in keeper.events(run_id)].count("rewind") == 1


def test_checkpoint_ahead_of_the_run_is_refused_and_changes_nothing(
    keeper: LRKeeper, run_id: str
) -> None:
    _, optimizer, scheduler = fresh_process(keeper, run_id, PLATEAU)
    scheduler.step(1.0)
    held = group_values(optimizer)
    future = {**scheduler.state_dict(), "last_epoch": 4}
    with pytest.raises(CheckpointAheadOfRun) as raised:
        scheduler.load_state_dict(future)
    assert (raised.value.checkpoint_step, raised.value.run_step) == (4, 1)
    assert scheduler.last_epoch == 1
    assert group_values(optimizer) == held


def test_state_of_another_run_is_refused(keeper: LRKeeper, run_id: str) -> None:
    _, _, scheduler = fresh_process(keeper, run_id, PLATEAU)
    with pytest.raises(ValueError, match="other-run"):
        scheduler.load_state_dict({**scheduler.state_dict(), "run_id": "other-run"})


def test_optimizer_restored_before_construction_is_recognised_as_the_runs(
    keeper: LRKeeper, run_id: str
) -> None:
    model = tiny_model()
    optimizer = make_optimizer("sgd", model)
    scheduler = RemoteLRScheduler(optimizer, run_id, ONE_CYCLE, client=keeper)
    for batch in batches(7):
        train_step(model, optimizer, batch)
        scheduler.step()
    held = group_values(optimizer)
    saved_optimizer = load(save(model, optimizer, scheduler))["optimizer"]

    # Restarted the other way round: optimizer state first, mid-schedule lr and momentum.
    restarted_optimizer = make_optimizer("sgd", tiny_model())
    restarted_optimizer.load_state_dict(saved_optimizer)
    restarted = RemoteLRScheduler(restarted_optimizer, run_id, ONE_CYCLE, client=keeper)
    assert restarted.last_epoch == 7
    assert group_values(restarted_optimizer) == held
