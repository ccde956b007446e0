"""LRKeeper's endpoint methods against the live server: paging, decoding, edits, defaults."""

import math
import uuid
from typing import Any

import httpx
import pytest
import torch
from torch.optim import lr_scheduler

from client import LRKeeper, NotFound, RemoteLRScheduler, RetryPolicy
from tests.conftest import LiveServer

COSINE = {"type": "CosineAnnealingLR", "params": {"T_max": 10, "eta_min": 0.001}}
GROUPS: list[dict[str, Any]] = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.01, "betas": [0.9, 0.999]}]


class ParamGroupsOnly:
    def __init__(self) -> None:
        self.param_groups = [dict(group) for group in GROUPS]


def test_list_runs_follows_cursors_and_filters(keeper: LRKeeper) -> None:
    prefix = f"listing-{uuid.uuid4().hex[:8]}-"
    run_ids = [f"{prefix}{index}" for index in range(5)]
    for run_id in run_ids:
        keeper.put_run(run_id, COSINE, GROUPS)
    keeper.finish(run_ids[3])

    listed = list(keeper.list_runs(prefix=prefix, page_size=2))
    assert sorted(run.run_id for run in listed) == run_ids
    finished = list(keeper.list_runs(prefix=prefix, status="finished", page_size=2))
    assert [(run.run_id, run.status) for run in finished] == [(run_ids[3], "finished")]


def test_history_slices_by_start_end_and_every(keeper: LRKeeper, run_id: str) -> None:
    keeper.put_run(run_id, COSINE, GROUPS)
    keeper.report_step(run_id, 10)  # a catch-up records every step in between
    steps = [item.step for item in keeper.history(run_id, start=2, end=8, every=2, page_size=2)]
    assert steps == [2, 4, 6, 8]


def test_history_with_points_is_one_thinned_answer_keeping_the_extremes(
    keeper: LRKeeper, run_id: str
) -> None:
    keeper.put_run(run_id, COSINE, GROUPS)
    keeper.report_step(run_id, 200)  # T_max=10: the lr swings ten times between its bounds
    full = list(keeper.history(run_id))
    thinned = list(keeper.history(run_id, points=20))
    assert len(thinned) <= 20
    assert all(item in full for item in thinned)
    assert thinned[0].step == 0 and thinned[-1].step == 200
    assert min(item.lr[0] for item in thinned) == min(item.lr[0] for item in full)


def test_history_csv_streams_one_header_and_every_row(keeper: LRKeeper, run_id: str) -> None:
    keeper.put_run(run_id, COSINE, GROUPS)
    keeper.report_step(run_id, 1500, {"loss": 0.25})
    text = "".join(keeper.history_csv(run_id))
    lines = text.splitlines()
    assert lines[0] == "step,lr_0,lr_1,loss,worker,recorded_at,superseded"
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1501))
    assert lines[-1].split(",")[3] == "0.25"


def test_history_csv_of_a_missing_run_raises_not_found(keeper: LRKeeper) -> None:
    with pytest.raises(NotFound):
        "".join(keeper.history_csv(f"missing-{uuid.uuid4().hex[:8]}"))


def test_run_state_decodes_non_finite_strings_to_floats(keeper: LRKeeper, run_id: str) -> None:
    run = keeper.put_run(run_id, {"type": "ReduceLROnPlateau", "params": {}}, GROUPS)
    assert run.state["best"] == math.inf
    assert run.scheduler["monitor"] == "val_loss"
    answer = keeper.report_step(run_id, 1, {"val_loss": math.nan})
    assert answer.lr == [0.1, 0.01]
    (recorded,) = keeper.history(run_id, start=1)
    assert math.isnan(recorded.metrics["val_loss"])


def test_preview_equals_torch_and_stores_nothing(keeper: LRKeeper, run_id: str) -> None:
    config = {"type": "OneCycleLR", "params": {"max_lr": 0.1, "total_steps": 12}}
    preview = keeper.preview(config, [{"lr": 0.1, "momentum": 0.9}], steps=12)

    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=12)
    expected_lr, expected_momentum = [[0.0]], [[0.0]]
    expected_lr[0] = [optimizer.param_groups[0]["lr"]]
    expected_momentum[0] = [optimizer.param_groups[0]["momentum"]]
    for _ in range(12):
        optimizer.step()
        scheduler.step()
        expected_lr.append([optimizer.param_groups[0]["lr"]])
        expected_momentum.append([optimizer.param_groups[0]["momentum"]])
    assert preview.lr == expected_lr
    assert preview.momentum == expected_momentum
    assert not list(keeper.list_runs(prefix=run_id))


def test_set_lr_reaches_the_optimizer_through_sync_and_later_steps_continue_from_it(
    keeper: LRKeeper, run_id: str
) -> None:
    optimizer = ParamGroupsOnly()
    scheduler = RemoteLRScheduler(optimizer, run_id, COSINE, client=keeper)
    scheduler.step()
    scheduler.get_last_lr()  # step 1 is recorded before the hand edit, in torch's order
    keeper.set_lr(run_id, [0.05, 0.005], reason="loss spike")
    scheduler.sync()
    assert [group["lr"] for group in optimizer.param_groups] == [0.05, 0.005]
    assert scheduler.last_epoch == 1
    scheduler.step()

    # torch after the same hand edit of its param groups
    weights = [torch.nn.Parameter(torch.zeros(1)) for _ in GROUPS]
    local_optimizer = torch.optim.SGD(
        [{"params": [weights[0]], "lr": 0.1, "momentum": 0.9},
         {"params": [weights[1]], "lr": 0.01}],
        lr=0.1,
    )  # fmt: skip
    local = lr_scheduler.CosineAnnealingLR(local_optimizer, T_max=10, eta_min=0.001)
    local_optimizer.step()
    local.step()
    for group, lr in zip(local_optimizer.param_groups, [0.05, 0.005], strict=True):
        group["lr"] = lr
    local_optimizer.step()
    local.step()
    assert scheduler.get_last_lr() == [group["lr"] for group in local_optimizer.param_groups]
    assert [event.kind for event in keeper.events(run_id)] == ["lr_set"]


def test_lr_at_answers_recorded_steps_and_current_lr_the_latest(
    keeper: LRKeeper, run_id: str
) -> None:
    scheduler = RemoteLRScheduler(ParamGroupsOnly(), run_id, COSINE, client=keeper)
    lrs = [scheduler.get_last_lr()]
    for _ in range(3):
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    assert [keeper.lr_at(run_id, step).lr for step in range(4)] == lrs
    current = keeper.current_lr(run_id)
    assert (current.step, current.lr) == (3, lrs[3])


def test_sync_to_a_recorded_step_takes_its_values(keeper: LRKeeper, run_id: str) -> None:
    leader = RemoteLRScheduler(ParamGroupsOnly(), run_id, COSINE, client=keeper)
    follower_optimizer = ParamGroupsOnly()
    follower = RemoteLRScheduler(follower_optimizer, run_id, COSINE, client=keeper)
    leader.step()
    leader.step()
    follower.sync(step=1)
    assert follower.last_epoch == 1
    assert follower.get_last_lr() == keeper.lr_at(run_id, 1).lr
    assert [group["lr"] for group in follower_optimizer.param_groups] == follower.get_last_lr()


def test_finish_and_metadata_are_patched(keeper: LRKeeper, run_id: str) -> None:
    scheduler = RemoteLRScheduler(
        ParamGroupsOnly(), run_id, COSINE, client=keeper, metadata={"model": "tiny"}
    )
    assert keeper.get_run(run_id).metadata == {"model": "tiny"}
    keeper.update_run(run_id, metadata={"model": "tiny", "note": "done"})
    scheduler.finish()
    run = keeper.get_run(run_id)
    assert (run.status, run.metadata["note"]) == ("finished", "done")


def test_scheduler_types_lists_every_type(keeper: LRKeeper) -> None:
    names = {entry["type"] for entry in keeper.scheduler_types()}
    assert names >= {
        "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR",
        "ExponentialLR", "PolynomialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
        "CyclicLR", "OneCycleLR", "ReduceLROnPlateau", "SequentialLR", "ChainedScheduler",
        "LRRangeTest",
    }  # fmt: skip


def test_attaching_without_a_config_takes_the_existing_run(keeper: LRKeeper, run_id: str) -> None:
    # Blocking, so the step is recorded before another scheduler looks at the run.
    creator = RemoteLRScheduler(ParamGroupsOnly(), run_id, COSINE, client=keeper, pipelined=False)
    creator.step()
    optimizer = ParamGroupsOnly()
    attached = RemoteLRScheduler(optimizer, run_id, client=keeper)
    assert attached.last_epoch == 1
    assert [group["lr"] for group in optimizer.param_groups] == creator.get_last_lr()
    assert attached.base_lrs == [0.1, 0.01]


def test_bare_metric_goes_under_the_monitor_the_run_names(keeper: LRKeeper, run_id: str) -> None:
    config = {"type": "ReduceLROnPlateau", "params": {"mode": "max"}, "monitor": "acc"}
    scheduler = RemoteLRScheduler(ParamGroupsOnly(), run_id, config, client=keeper)
    assert scheduler.monitor == "acc"
    scheduler.step(torch.tensor(0.75))  # a 0-dim tensor, as training code passes it
    scheduler.get_last_lr()  # the report is recorded once its answer is in
    (recorded,) = keeper.history(run_id, start=1)
    assert recorded.metrics == {"acc": 0.75}
    with pytest.raises(ValueError, match="monitor"):
        RemoteLRScheduler(ParamGroupsOnly(), run_id, config, client=keeper, monitor="val_loss")


def test_injected_http_client_is_used_and_left_open(live_server: LiveServer, run_id: str) -> None:
    with httpx.Client(base_url=live_server.base_url) as http:
        api = LRKeeper(http=http, retry=RetryPolicy(deadline=30))
        assert api.url == live_server.base_url
        api.put_run(run_id, COSINE, GROUPS)
        api.close()
        assert http.get(f"/v1/runs/{run_id}").status_code == 200


def test_url_and_token_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRKEEPER_URL", "http://lrkeeper.internal:9000/")
    monkeypatch.setenv("LRKEEPER_TOKEN", "from-env")
    with LRKeeper() as api:
        assert (api.url, api.token) == ("http://lrkeeper.internal:9000", "from-env")
    monkeypatch.delenv("LRKEEPER_URL")
    monkeypatch.delenv("LRKEEPER_TOKEN")
    with LRKeeper() as api:
        assert (api.url, api.token) == ("http://127.0.0.1:8000", None)


def test_object_without_param_groups_is_refused() -> None:
    with pytest.raises(TypeError, match="param_groups"):
        RemoteLRScheduler(object(), "any", COSINE, url="http://127.0.0.1:1")  # type: ignore[arg-type]
