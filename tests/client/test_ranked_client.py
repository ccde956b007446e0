"""The client on a ranked run: reports carry their rank and wait for the step's decision.

Ranks are threads (or plain calls) of this process against the live service, on SQLite
and PostgreSQL. No assertion depends on timing: a step is known to be pending because
a rank it needs has not been asked to report yet, and a waiting call is known to be
waiting because the service counts its report (``reported``) while it has no decision.
The eight-process proof, with two replicas and a killed rank, is test_rank_reduction.py.
"""

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import torch
import torch.distributed as dist
from torch.optim import lr_scheduler
from torch.testing._internal.distributed.fake_pg import FakeStore

import client.api
from client import (
    LRKeeper,
    PendingStep,
    RankMetricConflict,
    Ranks,
    RanksUndecided,
    RemoteLRScheduler,
    RunConflict,
    StepAnswer,
)
from client.wire import StepConnection, step_reporter_for
from tests.client.conftest import TEST_DEADLINE_SECONDS
from tests.conftest import LiveServer

pytestmark = pytest.mark.torch

PLATEAU = {"type": "ReduceLROnPlateau", "params": {"factor": 0.5, "patience": 0}}
COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 10}}
GROUPS = [{"lr": 0.1, "momentum": 0.9}]
RANKS_OF_TWO = {"world_size": 2}


class InThread:
    """Runs ``call`` on a thread: ``result()`` joins it and returns (or raises) its outcome."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._outcome: list[Any] = []
        self._failure: list[BaseException] = []

        def run() -> None:
            try:
                self._outcome.append(call())
            except BaseException as failure:
                self._failure.append(failure)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> Any:
        self._thread.join(TEST_DEADLINE_SECONDS)
        assert not self._thread.is_alive(), "the call never returned"
        if self._failure:
            raise self._failure[0]
        return self._outcome[0]


def reported_so_far(keeper: LRKeeper, run_id: str, step: int) -> int | None:
    """How many ranks the service counts for pending ``step`` (None once it is decided)."""
    try:
        keeper.lr_at(run_id, step, wait=0)
    except RanksUndecided as pending:
        return pending.reported
    return None


def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (a state of the service) until it holds; a bound, not a timing."""
    deadline = time.monotonic() + TEST_DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def torch_plateau_lrs(metrics: list[float]) -> list[list[float]]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    lrs = []
    for metric in metrics:
        optimizer.step()
        scheduler.step(metric)
        lrs.append([group["lr"] for group in optimizer.param_groups])
    return lrs


def sgd(seed: int = 0) -> tuple[torch.nn.Linear, torch.optim.SGD]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def train_once(model: torch.nn.Linear, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()


@pytest.fixture
def fake_process_group() -> Iterator[None]:
    """torch.distributed initialised as rank 3 of 8 (torch's own fake backend: no peers)."""
    dist.init_process_group("fake", store=FakeStore(), rank=3, world_size=8)
    try:
        yield
    finally:
        dist.destroy_process_group()


# -- the API client ---------------------------------------------------------------------


def test_put_run_with_ranks_answers_them_with_the_services_defaults(
    keeper: LRKeeper, run_id: str
) -> None:
    run = keeper.put_run(run_id, PLATEAU, GROUPS, ranks=RANKS_OF_TWO)
    assert run.ranks == Ranks(world_size=2, reduce="mean", timeout_s=300.0)
    assert keeper.get_run(run_id).ranks == run.ranks
    with pytest.raises(RunConflict):
        keeper.put_run(run_id, PLATEAU, GROUPS, ranks={"world_size": 2, "reduce": "max"})
    assert keeper.put_run(f"{run_id}-plain", PLATEAU, GROUPS).ranks is None


def test_a_step_is_pending_until_every_rank_reported_and_then_every_rank_gets_the_decision(
    keeper: LRKeeper, run_id: str
) -> None:
    keeper.put_run(run_id, PLATEAU, GROUPS, ranks=RANKS_OF_TWO)
    with pytest.raises(RanksUndecided) as pending:
        keeper.report_step(run_id, 1, {"val_loss": 1.0}, rank=0, wait=0)
    assert (pending.value.step, pending.value.reported, pending.value.world_size) == (1, 1, 2)

    deciding = keeper.report_step(run_id, 1, {"val_loss": 3.0}, rank=1)
    repeated = keeper.report_step(run_id, 1, {"val_loss": 1.0}, rank=0, wait=0)

    assert not deciding.replayed and repeated.replayed
    assert deciding.lr == repeated.lr == torch_plateau_lrs([2.0])[0]
    assert keeper.get_run(run_id).step == 1


def test_report_step_waits_for_the_last_rank_and_answers_its_decision(
    keeper: LRKeeper, run_id: str
) -> None:
    keeper.put_run(run_id, PLATEAU, GROUPS, ranks=RANKS_OF_TWO)
    for step, (first, last) in enumerate([(1.0, 1.0), (2.0, 4.0), (0.5, 0.25)], start=1):
        metrics = {"val_loss": first}
        waiting = InThread(
            lambda step=step, metrics=metrics: keeper.report_step(run_id, step, metrics, rank=0)
        )
        until(
            lambda step=step: reported_so_far(keeper, run_id, step) == 1, "rank 0's report counted"
        )
        assert not waiting.done(), "rank 0's report_step returned without a decision"

        deciding = keeper.report_step(run_id, step, {"val_loss": last}, rank=1)
        waited: StepAnswer = waiting.result()

        assert (waited.step, waited.lr, waited.momentum) == (step, deciding.lr, deciding.momentum)
    assert [item.lr for item in keeper.history(run_id, start=1)] == torch_plateau_lrs(
        [1.0, 3.0, 0.375]
    )


def test_lr_at_with_wait_answers_once_the_step_is_decided(keeper: LRKeeper, run_id: str) -> None:
    keeper.put_run(run_id, PLATEAU, GROUPS, ranks=RANKS_OF_TWO)
    with pytest.raises(RanksUndecided):
        keeper.report_step(run_id, 1, {"val_loss": 1.0}, rank=0, wait=0)
    follower = InThread(lambda: keeper.lr_at(run_id, 1, wait=TEST_DEADLINE_SECONDS))

    deciding = keeper.report_step(run_id, 1, {"val_loss": 1.0}, rank=1)

    assert follower.result().lr == deciding.lr


def test_a_rank_repeating_a_step_with_another_metric_is_a_rank_metric_conflict(
    keeper: LRKeeper, run_id: str
) -> None:
    keeper.put_run(run_id, PLATEAU, GROUPS, ranks=RANKS_OF_TWO)
    with pytest.raises(RanksUndecided):
        keeper.report_step(run_id, 1, {"val_loss": 1.0}, rank=0, wait=0)
    with pytest.raises(RankMetricConflict) as pending_conflict:
        keeper.report_step(run_id, 1, {"val_loss": 1.5}, rank=0, wait=0)
    assert (pending_conflict.value.rank, pending_conflict.value.step) == (0, 1)

    keeper.report_step(run_id, 1, {"val_loss": 1.0}, rank=1)
    with pytest.raises(RankMetricConflict) as decided_conflict:
        keeper.report_step(run_id, 1, {"val_loss": 2.0}, rank=1)
    assert (decided_conflict.value.rank, decided_conflict.value.step) == (1, 1)


def test_waiting_past_the_bound_raises_ranks_undecided(keeper: LRKeeper, run_id: str) -> None:
    # timeout_s 300: the service cannot decide in this test, so the client's bound ends it.
    keeper.put_run(run_id, PLATEAU, GROUPS, ranks=RANKS_OF_TWO)
    with pytest.raises(RanksUndecided) as undecided:
        keeper.report_step(run_id, 1, {"val_loss": 1.0}, rank=0, wait=0.5)
    assert (undecided.value.reported, undecided.value.world_size) == (1, 2)
    assert undecided.value.waited >= 0.5
    assert keeper.get_run(run_id).step == 0


# -- RemoteLRScheduler -------------------------------------------------------------------


@pytest.mark.parametrize("wire", ["http.client", "httpx"])
def test_pipelined_rank_steps_its_optimizer_only_with_the_decision_of_every_rank(
    keeper: LRKeeper, live_server: LiveServer, run_id: str, wire: str
) -> None:
    model, optimizer = sgd()
    ranked = {"client": keeper, "world_size": 2}
    # The sender's own connection, or (an httpx client injected) the LRKeeper's.
    injected = httpx.Client(base_url=live_server.base_url, timeout=TEST_DEADLINE_SECONDS)
    sender_keeper = keeper if wire == "http.client" else LRKeeper(http=injected)
    assert isinstance(step_reporter_for(sender_keeper), StepConnection) == (wire == "http.client")
    pipelined = RemoteLRScheduler(
        optimizer, run_id, PLATEAU, rank=0, world_size=2, client=sender_keeper
    )
    _, blocking_optimizer = sgd()
    blocking = RemoteLRScheduler(
        blocking_optimizer, run_id, PLATEAU, rank=1, pipelined=False, **ranked
    )
    assert pipelined.ranks == blocking.ranks == Ranks(world_size=2)
    expected = torch_plateau_lrs([1.0, 2.0, 2.5])

    for step, (mine, theirs) in enumerate([(1.0, 1.0), (1.0, 3.0), (3.0, 2.0)], start=1):
        train_once(model, optimizer)
        pending = pipelined.step(mine)
        assert isinstance(pending, PendingStep)
        until(
            lambda step=step: reported_so_far(keeper, run_id, step) == 1, "rank 0's report counted"
        )
        assert not pending.done(), "decided without rank 1's metric"

        answer = blocking.step(theirs)  # the last rank: decided at once

        assert isinstance(answer, StepAnswer) and answer.lr == expected[step - 1]
        train_once(model, optimizer)  # the pre-hook takes the decision first
        assert [dict.__getitem__(group, "lr") for group in optimizer.param_groups] == answer.lr
        assert pipelined.get_last_lr() == blocking.get_last_lr() == expected[step - 1]
    pipelined.close()
    blocking.close()
    injected.close()


def test_a_rank_alone_is_decided_by_the_timeout_and_a_late_rank_gets_that_decision(
    keeper: LRKeeper, run_id: str
) -> None:
    _, optimizer = sgd()
    scheduler = RemoteLRScheduler(
        optimizer, run_id, PLATEAU, client=keeper, rank=0, world_size=2, rank_timeout_s=1
    )
    assert scheduler.ranks == Ranks(world_size=2, reduce="mean", timeout_s=1.0)

    answer = scheduler.step(4.0)
    assert isinstance(answer, PendingStep)

    assert answer.lr == scheduler.get_last_lr() == torch_plateau_lrs([4.0])[0]
    timed_out = [event for event in keeper.events(run_id) if event.kind == "ranks_timed_out"]
    assert [(event.step, event.detail["missing"]) for event in timed_out] == [(1, [1])]
    assert timed_out[0].detail["reported"] == 1

    # The missing rank, late: it gets the decision, and its metric changes nothing.
    late = keeper.report_step(run_id, 1, {"val_loss": 0.0}, rank=1)
    assert (late.replayed, late.lr) == (True, answer.lr)
    assert keeper.get_run(run_id).step == 1
    scheduler.close()


def test_pipelined_rank_raises_ranks_undecided_before_the_optimizer_steps(
    keeper: LRKeeper, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service would decide only after 300 s; a margin of -299.5 s makes the client's
    # bound half a second, so the scheduler gives up first.
    monkeypatch.setattr(client.api, "DECISION_MARGIN_SECONDS", -299.5)
    model, optimizer = sgd()
    scheduler = RemoteLRScheduler(optimizer, run_id, PLATEAU, client=keeper, rank=0, world_size=2)
    weights = [parameter.detach().clone() for parameter in model.parameters()]
    scheduler.step(1.0)

    with pytest.raises(RanksUndecided):
        train_once(model, optimizer)

    assert all(
        torch.equal(before, after)
        for before, after in zip(weights, model.parameters(), strict=True)
    ), "the optimizer stepped without the step's lr"
    assert scheduler.last_epoch == 0
    scheduler.close()


def test_rank_and_world_size_come_from_an_initialised_torch_distributed(
    keeper: LRKeeper, run_id: str, fake_process_group: None
) -> None:
    _, optimizer = sgd()
    ranked = RemoteLRScheduler(optimizer, run_id, COSINE, client=keeper)
    assert (ranked.rank, ranked.ranks) == (3, Ranks(world_size=8))
    assert ranked.step().lr == keeper.lr_at(run_id, 1).lr  # a rank on a cosine run: as ever
    ranked.close()

    _, own_optimizer = sgd()
    opted_out = RemoteLRScheduler(
        own_optimizer, f"{run_id}-alone", COSINE, client=keeper, ranks=False
    )
    assert (opted_out.rank, opted_out.ranks) == (None, None)
    assert keeper.get_run(f"{run_id}-alone").ranks is None
    opted_out.close()


def test_attaching_to_a_ranked_run_follows_its_ranks(keeper: LRKeeper, run_id: str) -> None:
    keeper.put_run(run_id, PLATEAU, GROUPS, ranks={"world_size": 4, "reduce": "max"})
    _, optimizer = sgd()
    attached = RemoteLRScheduler(optimizer, run_id, client=keeper, rank=2, world_size=4)
    assert (attached.rank, attached.ranks) == (2, Ranks(world_size=4, reduce="max"))
    attached.close()
    with pytest.raises(ValueError, match="is ranked"):
        RemoteLRScheduler(sgd()[1], run_id, client=keeper)
    with pytest.raises(ValueError, match="world_size=4"):
        RemoteLRScheduler(sgd()[1], run_id, client=keeper, rank=0, world_size=2)


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"rank": 0, "world_size": 2, "ranks": False}, "ranks=False"),
        ({"reduce": "max"}, "reduce="),
        ({"rank": 0}, "both rank= and world_size="),
        ({"rank": 2, "world_size": 2}, "not one of"),
        ({"ranks": True}, "ranks=True"),
    ],
    ids=["opted-out-but-ranked", "reduce-unranked", "rank-alone", "rank-too-high", "no-rank"],
)
def test_contradictory_rank_arguments_are_refused_before_any_call(
    arguments: dict[str, Any], complaint: str
) -> None:
    _, optimizer = sgd()
    with (
        LRKeeper("http://127.0.0.1:1") as unreachable,
        pytest.raises(ValueError, match=complaint),
    ):
        RemoteLRScheduler(optimizer, "never-created", PLATEAU, client=unreachable, **arguments)
