"""One plateau decision from every rank's metric: eight real processes, different metrics.

Eight worker processes (reduction_worker.py), each its own ``RemoteLRScheduler(rank=r,
world_size=8)`` on a real torch SGD optimizer, report a different metric at every step
of ReduceLROnPlateau runs: on SQLite behind one service, and on PostgreSQL behind two
replicas of it (ranks 0-3 talk to one, 4-7 to the other). Every rank must hold the same
values at every step — read by each optimizer as it steps — and they must equal torch's
ReduceLROnPlateau on a real optimizer fed the reduced metric, computed as the service
does (the exact mean rounded once, for the mean). Even ranks are pipelined, odd
ranks block in ``step()``: both wait for the decision (the killed rank's runs are
pipelined on every rank: see phases_of_rank).

Then a rank is SIGKILLed after step KILLED_AFTER of a run with a short timeout
(KILL_TIMEOUT_S): the other seven carry on, each later step is decided by the ranks present once the
timeout has passed, the run's events say which rank was missing, and the values
still equal torch fed the reduction over the ranks present.

One job of eight processes runs every phase on both setups at once (a module-scoped
fixture: starting torch in eight processes is most of its time), and the tests below
read what it left.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler

from client import Event, LRKeeper, RetryPolicy
from tests.client.conftest import TEST_DEADLINE_SECONDS
from tests.client.reduction_worker import GROUPS
from tests.conftest import ServerPool

pytestmark = [pytest.mark.torch, pytest.mark.slow]

WORKER = Path(__file__).with_name("reduction_worker.py")
WORLD_SIZE = 8
PLATEAU = {"type": "ReduceLROnPlateau", "params": {"factor": 0.5, "patience": 1}}
# A falling loss with plateaus; each rank's metric is this plus noise of its own, wide
# enough that the mean, the max and any single rank would cut the lr at different steps.
BASE = [1.0, 0.7, 0.75, 0.72, 0.71, 0.5, 0.52, 0.55, 0.51, 0.53]
STEPS = len(BASE)
KILL_STEPS = 6
KILLED_RANK = 5
KILLED_AFTER = 3
# Short, so the job stays short; long enough that ranks released together never miss it.
KILL_TIMEOUT_S = 5.0
PROCESS_DEADLINE_SECONDS = 240

REDUCTIONS: dict[str, Callable[[Sequence[float]], float]] = {
    # The exact mean, rounded once (Fraction holds each float exactly).
    "mean": lambda values: float(sum(map(Fraction, values), Fraction(0)) / len(values)),
    "min": min,
    "max": max,
}


def per_rank_metrics(seed: int, steps: int) -> list[list[float]]:
    """``metrics[r][k]``: rank r's metric for step k + 1 (seeded, so the same every run)."""
    noise = random.Random(seed)
    return [[BASE[k] + noise.uniform(-0.2, 0.2) for k in range(steps)] for _ in range(WORLD_SIZE)]


# Seeds whose metrics the guards in the tests accept (the test could tell them apart).
MEAN_METRICS = per_rank_metrics(14, STEPS)
MAX_METRICS = per_rank_metrics(2, STEPS)
KILL_METRICS = per_rank_metrics(109, KILL_STEPS)


def reduced(
    metrics: list[list[float]], reduce: str, present: Callable[[int, int], bool]
) -> list[float]:
    """Step by step, ``reduce`` over the metrics of the ranks ``present(rank, index)``."""
    fold = REDUCTIONS[reduce]
    return [
        fold([metrics[rank][index] for rank in range(WORLD_SIZE) if present(rank, index)])
        for index in range(len(metrics[0]))
    ]


def every_rank(_rank: int, _index: int) -> bool:
    return True


def killed_rank_gone(rank: int, index: int) -> bool:
    """The killed rank reported steps 1..KILLED_AFTER (indexes below KILLED_AFTER)."""
    return rank != KILLED_RANK or index < KILLED_AFTER


def torch_values(metrics: list[float]) -> list[tuple[list[float], list[float]]]:
    """(lr, momentum) of each group after each step: torch's ReduceLROnPlateau on SGD."""
    weights = [torch.nn.Parameter(torch.zeros(1)) for _ in GROUPS]
    optimizer = torch.optim.SGD(
        [{"params": [weight], **group} for weight, group in zip(weights, GROUPS, strict=True)]
    )
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    values = []
    for metric in metrics:
        optimizer.step()
        scheduler.step(metric)
        groups = optimizer.param_groups
        values.append(([group["lr"] for group in groups], [group["momentum"] for group in groups]))
    return values


@dataclass
class Job:
    """What the eight ranks printed for one setup's runs: ``values[run][rank][step]`` is
    ``(lr, momentum)`` as that rank's optimizer stepped with them; and each run's events."""

    run_ids: dict[str, str]
    values: dict[str, dict[int, dict[int, tuple[list[float], list[float]]]]] = field(
        default_factory=dict
    )
    events: dict[str, list[Event]] = field(default_factory=dict)
    # The metric each step's history row holds: the reduced one.
    recorded_metrics: dict[str, list[float]] = field(default_factory=dict)


class RankOutput:
    """Reads one rank's lines as they come: ``ready[phase]`` is set once its schedulers of
    that phase are constructed, ``saw`` once it printed every ``(run, step)`` of ``watch``."""

    def __init__(self, process: subprocess.Popen[str], watch: set[tuple[str, int]]) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.ready = [threading.Event(), threading.Event()]
        self.saw = threading.Event()
        self._watch = set(watch)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            line = json.loads(text)
            if "ready" in line:
                self.ready[line["ready"]].set()
                continue
            self.lines.append(line)
            self._watch.discard((line["run_id"], line["step"]))
            if not self._watch:
                self.saw.set()

    def release(self, phase: int) -> None:
        """Let the rank go into ``phase`` (once it is ready for it)."""
        assert self.ready[phase].wait(PROCESS_DEADLINE_SECONDS), f"never ready for {phase}"
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def finish(self) -> None:
        self.process.wait(PROCESS_DEADLINE_SECONDS)
        self._reader.join(PROCESS_DEADLINE_SECONDS)

    def values(self, run_id: str) -> dict[int, tuple[list[float], list[float]]]:
        return {
            line["step"]: (line["lr"], line["momentum"])
            for line in self.lines
            if line["run_id"] == run_id
        }


def phases_of_rank(rank: int, setups: dict[str, tuple[list[str], dict[str, str]]]) -> list[Any]:
    """The worker's ``--phases``: every setup's mean and max runs side by side, then every
    setup's run with a short timeout (the rank to kill stops in it after KILLED_AFTER).

    The second phase is pipelined on every rank: a blocking rank would report a setup's
    step only once the other setup's had been decided, a timeout after the others had
    reported it, and so come too late for a decision of the ranks present.
    """
    together: list[dict[str, Any]] = []
    killed: list[dict[str, Any]] = []
    for urls, run_ids in setups.values():
        url = urls[rank * len(urls) // WORLD_SIZE]  # ranks 0-3 on the first, 4-7 on the last
        common = {"url": url, "config": PLATEAU}
        for name, metrics in (("mean", MEAN_METRICS), ("max", MAX_METRICS)):
            spec = {"run_id": run_ids[name], "reduce": name, "metrics": metrics[rank]}
            together.append({**common, **spec, "pipelined": rank % 2 == 0})
        killed.append(
            {
                **common,
                "run_id": run_ids["killed"],
                "reduce": "min",
                "metrics": KILL_METRICS[rank],
                "timeout_s": KILL_TIMEOUT_S,
                "hang_after": KILLED_AFTER if rank == KILLED_RANK else None,
            }
        )
    return [together, killed]


def run_job(setups: dict[str, list[str]]) -> dict[str, Job]:
    """Eight ranks training every setup's runs (one torch import per rank for all of them:
    the wall time is mostly eight processes starting torch on two cores)."""
    suffix = f"{random.randrange(1 << 32):08x}"
    jobs = {
        name: Job({run: f"reduction-{name}-{run}-{suffix}" for run in ("mean", "max", "killed")})
        for name in setups
    }
    plan = {name: (urls, jobs[name].run_ids) for name, urls in setups.items()}
    processes: list[subprocess.Popen[str]] = []
    outputs: list[RankOutput] = []
    try:
        for rank in range(WORLD_SIZE):
            command = [
                *(sys.executable, str(WORKER), "--rank", str(rank)),
                *("--world-size", str(WORLD_SIZE)),
                *("--phases", json.dumps(phases_of_rank(rank, plan))),
            ]
            process = subprocess.Popen(command, stdin=PIPE, stdout=PIPE, stderr=PIPE, text=True)
            processes.append(process)
            watch = (
                {(job.run_ids["killed"], KILLED_AFTER) for job in jobs.values()}
                if rank == KILLED_RANK
                else set()
            )
            outputs.append(RankOutput(process, watch))

        for phase in (0, 1):
            for output in outputs:  # all ready first: then released together
                output.ready[phase].wait(PROCESS_DEADLINE_SECONDS)
            for output in outputs:
                output.release(phase)
        victim = outputs[KILLED_RANK]
        assert victim.saw.wait(PROCESS_DEADLINE_SECONDS), "the rank to kill never got there"
        os.kill(victim.process.pid, signal.SIGKILL)
        for output in outputs:
            output.finish()
        failed = {
            rank: output.process.stderr.read()[-3000:] if output.process.stderr else ""
            for rank, output in enumerate(outputs)
            if output.process.returncode != (-signal.SIGKILL if rank == KILLED_RANK else 0)
        }
        assert not failed, failed
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    for name, job in jobs.items():
        for run, run_id in job.run_ids.items():
            job.values[run] = {rank: output.values(run_id) for rank, output in enumerate(outputs)}
        with LRKeeper(setups[name][0], retry=RetryPolicy(deadline=TEST_DEADLINE_SECONDS)) as keeper:
            job.events = {run: keeper.events(run_id) for run, run_id in job.run_ids.items()}
            job.recorded_metrics = {
                run: [item.metrics["val_loss"] for item in keeper.history(run_id, start=1)]
                for run, run_id in job.run_ids.items()
            }
    return jobs


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Job]]:
    """One job of eight ranks over both setups: SQLite behind one service, and PostgreSQL
    behind two replicas on one database."""
    pool = ServerPool(tmp_path_factory.mktemp("reduction"))
    try:
        sqlite = pool("sqlite")
        first = pool("postgresql")
        second = pool("postgresql", database_url=first.database_url)
        yield run_job(
            {
                "sqlite-one-service": [sqlite.base_url],
                "postgresql-two-replicas": [first.base_url, second.base_url],
            }
        )
    finally:
        pool.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite-one-service"),
        pytest.param("postgresql-two-replicas", marks=pytest.mark.postgres),
    ]
)
def job(request: pytest.FixtureRequest, jobs: dict[str, Job]) -> Job:
    return jobs[request.param]


def test_the_job_really_ran_on_every_rank_at_every_step(job: Job) -> None:
    for name, steps in (("mean", STEPS), ("max", STEPS)):
        assert all(sorted(held) == list(range(steps + 1)) for held in job.values[name].values())
    survivors = [rank for rank in range(WORLD_SIZE) if rank != KILLED_RANK]
    assert all(
        sorted(job.values["killed"][rank]) == list(range(KILL_STEPS + 1)) for rank in survivors
    )
    assert max(job.values["killed"][KILLED_RANK]) == KILLED_AFTER


@pytest.mark.parametrize("name", ["mean", "max", "killed"])
def test_every_rank_holds_the_same_values_at_every_step(job: Job, name: str) -> None:
    by_rank = job.values[name]
    for step in range(max(by_rank[0]) + 1):
        held = [values[step] for values in by_rank.values() if step in values]
        assert len(held) >= WORLD_SIZE - 1
        assert all(values == held[0] for values in held), f"{name} step {step}: {held}"


@pytest.mark.parametrize(
    ("name", "metrics", "reduce", "other_reductions"),
    [
        ("mean", MEAN_METRICS, "mean", ["max", "min"]),
        ("max", MAX_METRICS, "max", ["mean", "min"]),
    ],
)
def test_values_equal_torch_fed_the_reduced_metric(
    job: Job, name: str, metrics: list[list[float]], reduce: str, other_reductions: list[str]
) -> None:
    expected = torch_values(reduced(metrics, reduce, every_rank))
    # The test can tell reductions apart, and a single rank's metric from all of them.
    for other in other_reductions:
        assert torch_values(reduced(metrics, other, every_rank)) != expected
    for rank in range(WORLD_SIZE):
        assert torch_values(metrics[rank]) != expected

    held = job.values[name][0]
    assert held[0] == ([group["lr"] for group in GROUPS], [group["momentum"] for group in GROUPS])
    assert [held[step] for step in range(1, STEPS + 1)] == expected


@pytest.mark.parametrize(
    ("name", "metrics", "reduce", "present"),
    [
        ("mean", MEAN_METRICS, "mean", every_rank),
        ("max", MAX_METRICS, "max", every_rank),
        ("killed", KILL_METRICS, "min", killed_rank_gone),
    ],
)
def test_each_step_records_the_reduced_metric_float_for_float(
    job: Job,
    name: str,
    metrics: list[list[float]],
    reduce: str,
    present: Callable[[int, int], bool],
) -> None:
    assert job.recorded_metrics[name] == reduced(metrics, reduce, present)
    if reduce == "mean":  # exact, not a running sum: the two differ on these metrics
        naive = [sum(values) / len(values) for values in zip(*metrics, strict=True)]
        assert naive != job.recorded_metrics[name]


def test_a_killed_rank_leaves_the_ranks_present_to_decide_after_the_timeout(job: Job) -> None:
    expected = torch_values(reduced(KILL_METRICS, "min", killed_rank_gone))
    for other in ("mean", "max"):
        assert torch_values(reduced(KILL_METRICS, other, killed_rank_gone)) != expected
    assert all(torch_values(KILL_METRICS[rank]) != expected for rank in range(WORLD_SIZE))
    after_the_kill = expected[KILLED_AFTER - 1 :]
    assert len({lr[0] for lr, _ in after_the_kill}) > 1, "no cut after the kill: proves little"

    survivor = job.values["killed"][0]
    assert [survivor[step] for step in range(1, KILL_STEPS + 1)] == expected
    timed_out = [event for event in job.events["killed"] if event.kind == "ranks_timed_out"]
    assert [event.step for event in timed_out] == list(range(KILLED_AFTER + 1, KILL_STEPS + 1))
    assert all(event.detail["missing"] == [KILLED_RANK] for event in timed_out)
    assert all(event.detail["reported"] == WORLD_SIZE - 1 for event in timed_out)
    assert all(event.detail["world_size"] == WORLD_SIZE for event in timed_out)


def test_no_rank_timed_out_where_every_rank_reported(job: Job) -> None:
    for name in ("mean", "max"):
        assert [event for event in job.events[name] if event.kind == "ranks_timed_out"] == []
