"""Accelerate: ``accelerator.prepare(..., scheduler)`` with ``RemoteLRScheduler``.

Following the README's recipe (``step_scheduler_with_optimizer=False``, step when
``accelerator.sync_gradients``), the run advances exactly once per optimizer step,
with gradient accumulation, in one process or in two (gloo on CPU), and
``save_state``/``load_state`` carry it across a SIGKILL. Accelerate's default
would step it once per process per optimizer step: the test shows that trap too.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client import LRKeeper
from tests.conftest import LiveServer, free_port
from tests.integrations.accelerate_training import SchedulerFactory, train
from tests.integrations.frameworks import (
    STEPS,
    RemoteSchedulers,
    one_cycle_config,
    torch_one_cycle,
)
from tests.integrations.killing import PROCESS_DEADLINE_SECONDS, PROJECT_ROOT, kill_and_resume

pytestmark = [pytest.mark.torch, pytest.mark.integrations]

RANK_SCRIPT = Path(__file__).with_name("accelerate_rank.py")


def accelerate_lrs(make_scheduler: SchedulerFactory) -> dict[int, list[float]]:
    lrs: dict[int, list[float]] = {}
    train(make_scheduler, STEPS, report=lrs.__setitem__)
    return lrs


def test_prepared_schedule_matches_torch_once_per_optimizer_step(
    keeper: LRKeeper, run_id: str
) -> None:
    remote = RemoteSchedulers(keeper, run_id, one_cycle_config())
    expected = accelerate_lrs(torch_one_cycle)
    assert sorted(expected) == list(range(STEPS))
    assert accelerate_lrs(remote) == expected
    remote.close()
    assert keeper.get_run(run_id).step == STEPS


def test_killed_accelerate_loop_resumed_with_load_state_matches_torch(
    sqlite_server: LiveServer, keeper: LRKeeper, run_id: str, tmp_path: Path
) -> None:
    expected = accelerate_lrs(torch_one_cycle)
    killed, resumed = kill_and_resume("accelerate", sqlite_server.base_url, run_id, tmp_path)
    assert resumed[0][0] < killed[-1][0], "the resumed process must go back to a checkpoint"
    for step, lrs in killed + resumed:
        assert lrs == expected[step], f"step {step}"
    assert resumed[-1][0] == STEPS - 1
    history = list(keeper.history(run_id, page_size=1000))
    assert [item.lr for item in history][:STEPS] == [expected[step] for step in range(STEPS)]


def test_two_processes_advance_the_run_once_per_optimizer_step(
    sqlite_server: LiveServer, keeper: LRKeeper, run_id: str
) -> None:
    expected = accelerate_lrs(torch_one_cycle)
    recipe_run, default_run = f"{run_id}-recipe", f"{run_id}-default"
    port = free_port()
    ranks = [
        subprocess.Popen(
            [
                *(sys.executable, str(RANK_SCRIPT), "--url", sqlite_server.base_url),
                *("--recipe-run", recipe_run, "--default-run", default_run),
                *("--steps", str(STEPS)),
            ],
            cwd=PROJECT_ROOT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("LRKEEPER_")},
                **{"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"},
                **{"LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [rank.communicate(timeout=PROCESS_DEADLINE_SECONDS)[0] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0]

    for output in outputs:
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        recipe = {line["step"]: line["lr"] for line in lines if line["run"] == "recipe"}
        assert recipe == expected
    assert keeper.get_run(recipe_run).step == STEPS
    # Accelerate's default: every process steps the scheduler once per process.
    assert keeper.get_run(default_run).step == 2 * STEPS
