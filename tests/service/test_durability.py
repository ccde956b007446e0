"""Every acknowledged step survives SIGKILL: a 200 means the step is durably committed.

Eight worker processes report steps of a metric-free schedule, each to its own
run and all to one shared run (as the ranks of one job do), while the service is
SIGKILLed under them. After a restart on the same database every step that was
answered 200 is there exactly once with the lr that answer carried, and stepping
continues where the schedule left off.
"""

import multiprocessing
import queue
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS, Backend, ServerPool

WORKERS = 8
# The kill comes once every worker has this many steps acknowledged on its own run.
ACKNOWLEDGED_STEPS_BEFORE_KILL = 25
QUEUE_DEADLINE_SECONDS = 120
SCHEDULER = {"type": "CosineAnnealingLR", "params": {"T_max": 400, "eta_min": 0.001}}
PARAM_GROUPS = [{"lr": 0.1}, {"lr": 0.02, "momentum": 0.9}]


@dataclass(frozen=True)
class Acknowledged:
    worker: int
    run_id: str
    step: int
    lr: list[Any]


@dataclass(frozen=True)
class WorkerStopped:
    worker: int
    reason: str
    unexpected: bool


def report_steps_until_the_service_dies(
    base_url: str, worker: int, own_run_id: str, shared_run_id: str, reports: Any
) -> None:
    """One training process: step k of its own run, then step k of the shared run, forever.

    Stops at the first transport error (the service was killed). Any answer other
    than 200 before that is a failure the test reports.
    """
    with httpx.Client(base_url=base_url, timeout=60) as http:
        step = 0
        while True:
            step += 1
            for run_id in (own_run_id, shared_run_id):
                try:
                    response = http.post(
                        f"/v1/runs/{run_id}/steps", json={"step": step, "worker": f"w{worker}"}
                    )
                except httpx.TransportError as error:
                    reports.put(WorkerStopped(worker, repr(error), unexpected=False))
                    return
                if response.status_code != 200:
                    message = f"{run_id} step {step}: {response.status_code} {response.text}"
                    reports.put(WorkerStopped(worker, message, unexpected=True))
                    return
                answer = response.json()
                reports.put(Acknowledged(worker, run_id, answer["step"], answer["lr"]))


def create_run(http: httpx.Client, run_id: str) -> None:
    response = http.put(
        f"/v1/runs/{run_id}", json={"scheduler": SCHEDULER, "param_groups": PARAM_GROUPS}
    )
    assert response.status_code == 201, response.text


def history_by_step(http: httpx.Client, run_id: str) -> dict[int, list[list[Any]]]:
    """Every history row of the run, superseded ones included, grouped by step."""
    rows: dict[int, list[list[Any]]] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"include_superseded": "true", "limit": 10000}
        if cursor:
            params["cursor"] = cursor
        page = http.get(f"/v1/runs/{run_id}/history", params=params)
        assert page.status_code == 200, page.text
        for item in page.json()["items"]:
            rows.setdefault(item["step"], []).append(item["lr"])
        cursor = page.json()["next_cursor"]
        if not cursor:
            return rows


def collect_reports_while_killing(
    reports: Any, kill: Any
) -> tuple[list[Acknowledged], list[WorkerStopped]]:
    """Read acknowledgements; SIGKILL the service once every worker is far enough along."""
    acknowledged: list[Acknowledged] = []
    stopped: list[WorkerStopped] = []
    own_run_acks = [0] * WORKERS
    killed = False
    while len(stopped) < WORKERS:
        report = reports.get(timeout=QUEUE_DEADLINE_SECONDS)
        if isinstance(report, WorkerStopped):
            stopped.append(report)
            if report.unexpected and not killed:
                kill()
                killed = True
            continue
        acknowledged.append(report)
        if report.run_id.endswith(f"-own-{report.worker}"):
            own_run_acks[report.worker] += 1
        if not killed and min(own_run_acks) >= ACKNOWLEDGED_STEPS_BEFORE_KILL:
            kill()
            killed = True
    return acknowledged, stopped


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_acknowledged_steps_survive_sigkill_and_stepping_continues(
    backend: Backend, server_factory: ServerPool
) -> None:
    server = server_factory(backend)
    prefix = f"durable-{uuid.uuid4().hex[:8]}"
    own_run_ids = [f"{prefix}-own-{worker}" for worker in range(WORKERS)]
    shared_run_id = f"{prefix}-shared"
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        for run_id in [*own_run_ids, shared_run_id]:
            create_run(http, run_id)

    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    workers = [
        context.Process(
            target=report_steps_until_the_service_dies,
            args=(server.base_url, worker, own_run_ids[worker], shared_run_id, reports),
        )
        for worker in range(WORKERS)
    ]
    for process in workers:
        process.start()
    try:
        acknowledged, stopped = collect_reports_while_killing(reports, server.kill)
    except queue.Empty:
        pytest.fail(f"workers stopped reporting; server log:\n{server.log_tail()}")
    finally:
        for process in workers:
            process.join(timeout=QUEUE_DEADLINE_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()

    assert [report.reason for report in stopped if report.unexpected] == []

    server.start()

    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        preview = http.post(
            "/v1/preview",
            json={"scheduler": SCHEDULER, "param_groups": PARAM_GROUPS, "steps": 400},
        )
        assert preview.status_code == 200, preview.text
        expected_lr = preview.json()["lr"]

        for run_id in [*own_run_ids, shared_run_id]:
            acks = [report for report in acknowledged if report.run_id == run_id]
            assert acks, f"{run_id}: nothing was acknowledged before the kill"
            history = history_by_step(http, run_id)
            for ack in acks:
                assert history.get(ack.step) == [ack.lr], f"{run_id} step {ack.step}"
                assert ack.lr == expected_lr[ack.step], f"{run_id} step {ack.step}"

            current_step = http.get(f"/v1/runs/{run_id}").json()["step"]
            last_acknowledged = max(ack.step for ack in acks)
            # A step committed while its answer was lost to the kill is the only excess.
            assert current_step in (last_acknowledged, last_acknowledged + 1)
            next_answer = http.post(f"/v1/runs/{run_id}/steps", json={"step": current_step + 1})
            assert next_answer.status_code == 200, next_answer.text
            assert next_answer.json()["replayed"] is False
            assert next_answer.json()["lr"] == expected_lr[current_step + 1]

    own_steps = {
        run_id: {a.step for a in acknowledged if a.run_id == run_id} for run_id in own_run_ids
    }
    for run_id, steps in own_steps.items():
        assert steps == set(range(1, max(steps) + 1)), f"{run_id}: acknowledged steps have gaps"
    shared_answers: dict[int, set[str]] = {}
    for report in acknowledged:
        if report.run_id == shared_run_id:
            shared_answers.setdefault(report.step, set()).add(repr(report.lr))
    assert all(len(answers) == 1 for answers in shared_answers.values()), (
        "ranks got different lrs for one step of the shared run"
    )
