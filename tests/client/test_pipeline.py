"""The pipelined RemoteLRScheduler: step() returns at once, the optimizer never steps without
the answer, and every failure is raised where the answer is needed.

Where a test must know that an answer is still on its way, a real HTTP proxy in front
of the live server holds the step reports until the test releases them, so no
assertion depends on how fast anything runs.
"""

import contextlib
import copy
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from torch.optim import lr_scheduler

from client import (
    InvalidRequest,
    LRKeeper,
    PendingStep,
    RemoteLRScheduler,
    RetryPolicy,
    ScheduleEnded,
    StepAnswer,
    StepOutOfOrder,
    Unauthorized,
)
from client.pipeline import QUEUE_BOUND
from client.wire import StepConnection, step_reporter_for
from tests.client.conftest import TEST_DEADLINE_SECONDS
from tests.client.training import (
    batches,
    group_values,
    make_optimizer,
    tiny_model,
    train_step,
    twin_setups,
)
from tests.conftest import ACCESS_TOKENS, LiveServer, ServerPool

pytestmark = pytest.mark.torch

ONE_CYCLE = {"type": "OneCycleLR", "params": {"max_lr": [0.1, 0.05], "total_steps": 12}}
PLATEAU = {"type": "ReduceLROnPlateau", "params": {"factor": 0.5, "patience": 0}}
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Bounds a wait that only a broken test would reach; never a timing assertion.
HOLD_SECONDS = 60.0


def torch_one_cycle(optimizer: torch.optim.Optimizer) -> lr_scheduler.OneCycleLR:
    return lr_scheduler.OneCycleLR(optimizer, max_lr=[0.1, 0.05], total_steps=12)


def parameters_of(model: torch.nn.Module) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in model.parameters()]


@dataclass
class HoldingProxy:
    """A real HTTP/1.1 proxy on 127.0.0.1 that forwards to ``upstream`` but holds every
    ``POST .../steps`` until :attr:`release` is set; :attr:`step_arrived` is set once one
    is held, and :attr:`seen` lists every request line it forwarded."""

    upstream: str
    release: threading.Event = field(default_factory=threading.Event)
    step_arrived: threading.Event = field(default_factory=threading.Event)
    seen: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        proxy = self
        upstream = httpx.Client(base_url=self.upstream, timeout=HOLD_SECONDS)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept alive, as the client's connections are

            def do_GET(self) -> None:
                self.forward()

            def do_PUT(self) -> None:
                self.forward()

            def do_POST(self) -> None:
                self.forward()

            def do_PATCH(self) -> None:
                self.forward()

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.seen.append(f"{self.command} {self.path}")
                if self.command == "POST" and self.path.endswith("/steps"):
                    proxy.step_arrived.set()
                    proxy.release.wait(HOLD_SECONDS)
                answer = upstream.request(
                    self.command,
                    self.path,
                    content=body,
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def holding_proxy(live_server: LiveServer) -> Iterator[HoldingProxy]:
    proxy = HoldingProxy(live_server.base_url)
    proxy.start()
    yield proxy
    proxy.stop()


def proxied_keeper(proxy: HoldingProxy) -> LRKeeper:
    return LRKeeper(proxy.url, retry=RetryPolicy(deadline=TEST_DEADLINE_SECONDS))


# -- the overlap --------------------------------------------------------------------------


def test_step_returns_before_the_service_answers_and_the_optimizer_steps_with_the_answer(
    holding_proxy: HoldingProxy, run_id: str
) -> None:
    local_model, local_optimizer, remote_model, remote_optimizer = twin_setups("sgd")
    local = torch_one_cycle(local_optimizer)
    with proxied_keeper(holding_proxy) as keeper:
        remote = RemoteLRScheduler(remote_optimizer, run_id, ONE_CYCLE, client=keeper)
        data = batches(2)
        train_step(local_model, local_optimizer, data[0])
        train_step(remote_model, remote_optimizer, data[0])
        local.step()
        values_before = [dict.__getitem__(group, "lr") for group in remote_optimizer.param_groups]

        pending = remote.step()

        assert holding_proxy.step_arrived.wait(HOLD_SECONDS)
        assert isinstance(pending, PendingStep)
        assert (pending.step, remote.last_epoch) == (1, 1)
        assert not pending.done(), "step() waited for the answer the proxy still holds"
        # Nothing was written behind the optimizer's back while the answer was away.
        assert [
            dict.__getitem__(group, "lr") for group in remote_optimizer.param_groups
        ] == values_before

        holding_proxy.release.set()
        train_step(local_model, local_optimizer, data[1])
        train_step(remote_model, remote_optimizer, data[1])  # its pre-hook takes the answer

        assert group_values(remote_optimizer) == group_values(local_optimizer)
        assert all(
            torch.equal(mine, theirs)
            for mine, theirs in zip(
                remote_model.parameters(), local_model.parameters(), strict=True
            )
        )
        assert not pending.replayed
        remote.close()


def test_sync_to_a_step_the_leader_has_not_sent_yet_waits_for_it(
    holding_proxy: HoldingProxy, run_id: str
) -> None:
    leader_optimizer = make_optimizer("sgd", tiny_model())
    follower_optimizer = make_optimizer("sgd", tiny_model())
    with proxied_keeper(holding_proxy) as keeper:
        leader = RemoteLRScheduler(leader_optimizer, run_id, ONE_CYCLE, client=keeper)
        follower = RemoteLRScheduler(follower_optimizer, run_id, ONE_CYCLE, client=keeper)
        leader.step()
        assert holding_proxy.step_arrived.wait(HOLD_SECONDS)

        failures: list[BaseException] = []

        def follow() -> None:
            try:
                follower.sync(step=1)
            except BaseException as failure:
                failures.append(failure)

        following = threading.Thread(target=follow)
        following.start()
        asked = f"GET /v1/runs/{run_id}/lr?step=1"
        while asked not in holding_proxy.seen and following.is_alive():
            following.join(0.01)
        holding_proxy.release.set()
        following.join(HOLD_SECONDS)

        assert failures == []
        assert asked in holding_proxy.seen, "the follower asked before the step was recorded"
        assert follower.last_epoch == 1
        assert group_values(follower_optimizer) == group_values(leader_optimizer)
        leader.close()
        follower.close()


# -- what torch code reads right after step() ---------------------------------------------


def test_everything_read_right_after_step_equals_the_blocking_scheduler(
    keeper: LRKeeper, run_id: str
) -> None:
    _, blocking_optimizer, _, pipelined_optimizer = twin_setups("adam")
    config = {
        "type": "CyclicLR",
        "params": {"base_lr": 0.001, "max_lr": 0.006, "step_size_up": 3},
    }
    blocking = RemoteLRScheduler(
        blocking_optimizer, f"{run_id}-blocking", config, client=keeper, pipelined=False
    )
    pipelined = RemoteLRScheduler(pipelined_optimizer, run_id, config, client=keeper)

    seen_lrs = set()
    for step in range(1, 8):
        blocking_answer = blocking.step()
        pipelined_answer = pipelined.step()
        assert isinstance(blocking_answer, StepAnswer)
        assert pipelined.last_epoch == blocking.last_epoch == step
        assert pipelined.get_last_lr() == blocking.get_last_lr()
        assert group_values(pipelined_optimizer) == group_values(blocking_optimizer)
        saved = {**pipelined.state_dict(), "run_id": blocking.run_id}
        assert saved == blocking.state_dict()
        assert (pipelined_answer.lr, pipelined_answer.momentum) == (
            blocking_answer.lr,
            blocking_answer.momentum,
        )
        seen_lrs.add(tuple(pipelined.get_last_lr()))
    assert len(seen_lrs) > 1, "the lr never changed: the comparison proved nothing"


def test_optimizer_state_dict_right_after_step_holds_the_answer(
    keeper: LRKeeper, run_id: str
) -> None:
    model = tiny_model()
    optimizer = make_optimizer("sgd", model)
    scheduler = RemoteLRScheduler(optimizer, run_id, ONE_CYCLE, client=keeper)
    train_step(model, optimizer, batches(1)[0])
    scheduler.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)  # the state_dict pre-hook takes the answer

    saved_groups = torch.load(io.BytesIO(buffer.getvalue()))["param_groups"]
    recorded = keeper.lr_at(run_id, 1)
    assert [group["lr"] for group in saved_groups] == recorded.lr
    assert [group["momentum"] for group in saved_groups] == recorded.momentum


def test_optimizer_loaded_while_an_answer_is_away_keeps_the_loaded_values_and_stays_pipelined(
    keeper: LRKeeper, run_id: str
) -> None:
    model = tiny_model()
    optimizer = make_optimizer("sgd", model)
    scheduler = RemoteLRScheduler(optimizer, run_id, ONE_CYCLE, client=keeper)
    checkpoint = copy.deepcopy(optimizer.state_dict())
    scheduler.step()

    # As with the blocking scheduler, the answer came first and the loaded values win.
    optimizer.load_state_dict(checkpoint)
    assert group_values(optimizer) == [
        (group["lr"], group["momentum"], None) for group in checkpoint["param_groups"]
    ]

    # load_state_dict put plain dicts in; the scheduler wrapped them again, so a read
    # right after the next step() still takes its answer.
    scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == keeper.lr_at(run_id, 2).lr


def test_optimizer_without_torchs_hooks_takes_the_answer_when_its_groups_are_read(
    keeper: LRKeeper, run_id: str
) -> None:
    class ParamGroupsOnly:
        def __init__(self) -> None:
            self.param_groups = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.5}]

    optimizer = ParamGroupsOnly()
    scheduler = RemoteLRScheduler(optimizer, run_id, ONE_CYCLE, client=keeper)
    assert scheduler.pipelined
    for step in range(1, 4):
        scheduler.step()
        held_lr = [group["lr"] for group in optimizer.param_groups]
        held_momentum = [group.get("momentum") for group in optimizer.param_groups]
        recorded = keeper.lr_at(run_id, step)  # recorded: the read above took its answer
        assert (held_lr, held_momentum) == (recorded.lr, recorded.momentum)


def test_a_hand_edit_right_after_step_wins_over_the_answer(keeper: LRKeeper, run_id: str) -> None:
    optimizer = make_optimizer("sgd", tiny_model())
    scheduler = RemoteLRScheduler(optimizer, run_id, ONE_CYCLE, client=keeper)
    scheduler.step()
    optimizer.param_groups[0]["lr"] = 0.5
    assert optimizer.param_groups[0]["lr"] == 0.5
    assert scheduler.get_last_lr() == keeper.lr_at(run_id, 1).lr


def test_pickled_groups_are_plain_dicts(keeper: LRKeeper, run_id: str) -> None:
    optimizer = make_optimizer("sgd", tiny_model())
    scheduler = RemoteLRScheduler(optimizer, run_id, ONE_CYCLE, client=keeper)
    scheduler.step()
    copied = copy.deepcopy(optimizer.param_groups)
    assert all(type(group) is dict for group in copied)
    assert [group["lr"] for group in copied] == keeper.lr_at(run_id, 1).lr


# -- failures -----------------------------------------------------------------------------


def test_optimizer_step_raises_schedule_ended_and_leaves_the_weights_untouched(
    keeper: LRKeeper, run_id: str
) -> None:
    model = tiny_model()
    optimizer = make_optimizer("sgd", model)
    config = {"type": "OneCycleLR", "params": {"max_lr": [0.1, 0.05], "total_steps": 3}}
    scheduler = RemoteLRScheduler(optimizer, run_id, config, client=keeper)
    data = batches(4)
    for batch in data[:3]:
        train_step(model, optimizer, batch)
        scheduler.step()
    held = group_values(optimizer)
    weights = parameters_of(model)

    scheduler.step()  # step 4 of 3: refused, but step() does not wait to hear it
    with pytest.raises(ScheduleEnded):
        train_step(model, optimizer, data[3])

    assert all(
        torch.equal(now, before) for now, before in zip(parameters_of(model), weights, strict=True)
    )
    assert group_values(optimizer) == held
    assert scheduler.last_epoch == 3
    assert keeper.get_run(run_id).step == 3


def test_failed_report_drops_the_ones_handed_over_after_it_and_later_reports_are_sent(
    keeper: LRKeeper, run_id: str
) -> None:
    scheduler = RemoteLRScheduler(
        make_optimizer("sgd", tiny_model()), run_id, PLATEAU, client=keeper
    )
    scheduler.step()  # no metric: refused
    dropped = scheduler.step(1.0)  # numbered after the refused one: never sent
    with pytest.raises(InvalidRequest):
        scheduler.get_last_lr()
    with pytest.raises(InvalidRequest):
        dropped.result()
    assert scheduler.last_epoch == 0
    assert [item.step for item in keeper.history(run_id)] == [0]

    scheduler.step(1.0)
    scheduler.step(2.0)
    assert scheduler.get_last_lr() == keeper.lr_at(run_id, 2).lr
    recorded = [(item.step, item.metrics) for item in keeper.history(run_id, start=1)]
    assert recorded == [(1, {"val_loss": 1.0}), (2, {"val_loss": 2.0})]


def test_known_failure_is_raised_by_the_next_step(keeper: LRKeeper, run_id: str) -> None:
    scheduler = RemoteLRScheduler(
        make_optimizer("sgd", tiny_model()), run_id, PLATEAU, client=keeper
    )
    refused = scheduler.step()
    with pytest.raises(InvalidRequest):
        refused.result()  # the refusal is in
    with pytest.raises(InvalidRequest):
        scheduler.step(1.0)  # raised before this report is handed over
    assert scheduler.last_epoch == 0
    scheduler.step(1.0)
    assert scheduler.state_dict()["last_epoch"] == 1


def test_metric_driven_run_pipelined_equals_torch(keeper: LRKeeper, run_id: str) -> None:
    losses = [1.0, 0.9, 0.95, 0.97, 0.5, 0.6, 0.7, 0.8]
    local_model, local_optimizer, remote_model, remote_optimizer = twin_setups("sgd")
    local = lr_scheduler.ReduceLROnPlateau(local_optimizer, factor=0.5, patience=0)
    remote = RemoteLRScheduler(remote_optimizer, run_id, PLATEAU, client=keeper)
    for loss, batch in zip(losses, batches(len(losses)), strict=True):
        train_step(local_model, local_optimizer, batch)
        train_step(remote_model, remote_optimizer, batch)
        local.step(loss)
        remote.step(torch.tensor(loss))
    train_step(local_model, local_optimizer, batches(1)[0])
    train_step(remote_model, remote_optimizer, batches(1)[0])
    assert group_values(remote_optimizer) == group_values(local_optimizer)
    assert torch.equal(remote_model.weight, local_model.weight)
    assert len({lr for lr, _, _ in group_values(remote_optimizer)}) > 1


# -- the sender's life --------------------------------------------------------------------


def sender_threads(run_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"lrkeeper-steps-{run_id}"]


def test_close_sends_what_was_handed_over_and_ends_the_sender_thread(
    keeper: LRKeeper, run_id: str
) -> None:
    scheduler = RemoteLRScheduler(
        make_optimizer("sgd", tiny_model()), run_id, ONE_CYCLE, client=keeper
    )
    for _ in range(5):
        scheduler.step()
    assert sender_threads(run_id)
    scheduler.close()
    assert sender_threads(run_id) == []
    assert keeper.get_run(run_id).step == 5


def test_more_reports_than_the_queue_holds_are_all_sent_in_order(
    keeper: LRKeeper, run_id: str
) -> None:
    optimizer = make_optimizer("sgd", tiny_model())
    config = {"type": "ExponentialLR", "params": {"gamma": 0.99}}
    scheduler = RemoteLRScheduler(optimizer, run_id, config, client=keeper)
    steps = QUEUE_BOUND + 20
    answers = [scheduler.step() for _ in range(steps)]
    assert [answer.step for answer in answers] == list(range(1, steps + 1))
    assert not any(answer.replayed for answer in answers)
    assert scheduler.get_last_lr() == keeper.lr_at(run_id, steps).lr
    scheduler.close()


EXITING_WITHOUT_CLOSE = """
import json, sys
from client import RemoteLRScheduler
class ParamGroupsOnly:
    param_groups = [dict(lr=0.1, momentum=0.9)]
config = json.loads(sys.argv[3])
scheduler = RemoteLRScheduler(ParamGroupsOnly(), sys.argv[2], config, url=sys.argv[1])
for _ in range(3):
    scheduler.step()
print("stepped", scheduler.last_epoch, flush=True)
"""


def test_process_ending_without_close_sends_its_last_reports_and_exits(
    live_server: LiveServer, keeper: LRKeeper, run_id: str
) -> None:
    config = {"type": "ExponentialLR", "params": {"gamma": 0.9}}
    finished = subprocess.run(
        [
            sys.executable,
            "-c",
            EXITING_WITHOUT_CLOSE,
            live_server.base_url,
            run_id,
            json.dumps(config),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["stepped", "3"]
    assert keeper.get_run(run_id).step == 3


# -- the sender's wire --------------------------------------------------------------------


def test_sender_uses_http_client_only_where_httpx_would_talk_the_same_way(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with LRKeeper(live_server.base_url) as plain:
        assert isinstance(step_reporter_for(plain), StepConnection)
    with httpx.Client(base_url=live_server.base_url) as http, LRKeeper(http=http) as injected:
        assert not isinstance(step_reporter_for(injected), StepConnection)
    with LRKeeper("https://lrkeeper.example") as tls:
        assert not isinstance(step_reporter_for(tls), StepConnection)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    with LRKeeper(live_server.base_url) as proxied:
        assert not isinstance(step_reporter_for(proxied), StepConnection)


def test_step_connection_answers_and_refuses_as_the_httpx_client_does(
    keeper: LRKeeper, live_server: LiveServer, run_id: str
) -> None:
    keeper.put_run(run_id, PLATEAU, [{"lr": 0.1}])
    connection = StepConnection(
        live_server.base_url, None, timeout=30, retry=RetryPolicy(deadline=TEST_DEADLINE_SECONDS)
    )
    try:
        answer = connection.report_step(run_id, 1, {"val_loss": float("nan")}, worker="w")
        replay = keeper.report_step(run_id, 1, {"val_loss": float("nan")}, worker="w")
        assert (answer.replayed, replay.replayed) == (False, True)
        assert (answer.step, answer.lr, answer.events) == (replay.step, replay.lr, replay.events)
        (recorded,) = keeper.history(run_id, start=1)
        assert (recorded.worker, repr(recorded.metrics["val_loss"])) == ("w", "nan")
        with pytest.raises(StepOutOfOrder) as over_http_client:
            connection.report_step(run_id, 5, {"val_loss": 1.0})
        with pytest.raises(StepOutOfOrder) as over_httpx:
            keeper.report_step(run_id, 5, {"val_loss": 1.0})
        assert over_http_client.value.problem == over_httpx.value.problem
        assert over_http_client.value.expected_step == 2
    finally:
        connection.close()


def test_step_connection_survives_the_server_closing_its_kept_alive_connection(
    server_factory: ServerPool, run_id: str
) -> None:
    server = server_factory("sqlite")
    with LRKeeper(server.base_url) as keeper:
        keeper.put_run(run_id, {"type": "ExponentialLR", "params": {"gamma": 0.9}}, [{"lr": 0.1}])
    # No retries: only the resend on a fresh connection can save the second report.
    connection = StepConnection(server.base_url, None, timeout=30, retry=RetryPolicy(deadline=0))
    try:
        assert connection.report_step(run_id, 1).step == 1
        server.stop()
        server.start()
        assert connection.report_step(run_id, 2).step == 2
    finally:
        connection.close()


def test_step_connection_sends_the_token_and_a_refusal_is_unauthorized(
    token_server: LiveServer, run_id: str
) -> None:
    with LRKeeper(token_server.base_url, ACCESS_TOKENS.write) as keeper:
        keeper.put_run(run_id, {"type": "ExponentialLR", "params": {"gamma": 0.9}}, [{"lr": 0.1}])
        patient = RetryPolicy(deadline=TEST_DEADLINE_SECONDS)
        with (
            contextlib.closing(
                StepConnection(
                    token_server.base_url, ACCESS_TOKENS.write, timeout=30, retry=patient
                )
            ) as writer,
            contextlib.closing(
                StepConnection(
                    token_server.base_url, ACCESS_TOKENS.wrong, timeout=30, retry=patient
                )
            ) as stranger,
        ):
            assert writer.report_step(run_id, 1).lr == keeper.lr_at(run_id, 1).lr
            with pytest.raises(Unauthorized):
                stranger.report_step(run_id, 2)
