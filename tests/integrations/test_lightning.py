"""PyTorch Lightning takes ``RemoteLRScheduler`` from ``configure_optimizers`` as it is.

No ``lr_scheduler_step`` override: Lightning accepts the scheduler as torch's
(``LRScheduler``, or ``ReduceLROnPlateau`` for a plateau config, which is what makes
Lightning pass it the monitored metric), steps it per step or per epoch, saves its
``state_dict`` in its checkpoints and loads it on resume. Every step's lr equals
the same Lightning run driven by torch's scheduler, in every rank of a DDP job too.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.optim import lr_scheduler

from client import LRKeeper
from tests.conftest import PROJECT_ROOT, LiveServer
from tests.integrations.frameworks import (
    STEPS,
    RemoteSchedulers,
    one_cycle_config,
    torch_one_cycle,
)
from tests.integrations.killing import PROCESS_DEADLINE_SECONDS, kill_and_resume
from tests.integrations.lightning_training import (
    BATCHES_PER_EPOCH,
    SchedulerFactory,
    TinyRegression,
    fit,
)

pytestmark = [pytest.mark.torch, pytest.mark.integrations]

DDP_SCRIPT = Path(__file__).with_name("lightning_ddp.py")

# mode="max" on a falling loss: nothing improves, so every report after the first halves lr.
PLATEAU = {"mode": "max", "factor": 0.5, "patience": 0}


def lightning_lrs(
    make_scheduler: SchedulerFactory, steps: int = STEPS, **options: str
) -> dict[int, list[float]]:
    module = TinyRegression(make_scheduler, **options)
    fit(module, steps)
    return module.lrs


def test_step_interval_schedule_matches_torch_every_step(keeper: LRKeeper, run_id: str) -> None:
    remote = RemoteSchedulers(keeper, run_id, one_cycle_config())
    expected = lightning_lrs(torch_one_cycle)
    assert lightning_lrs(remote) == expected
    remote.close()
    assert keeper.get_run(run_id).step == STEPS


@pytest.mark.parametrize(("interval", "monitor"), [("epoch", "val_loss"), ("step", "train_loss")])
def test_plateau_schedule_gets_lightnings_monitored_metric(
    keeper: LRKeeper, run_id: str, interval: str, monitor: str
) -> None:
    def local(optimizer: torch.optim.Optimizer) -> lr_scheduler.ReduceLROnPlateau:
        return lr_scheduler.ReduceLROnPlateau(optimizer, **PLATEAU)

    config = {"type": "ReduceLROnPlateau", "params": PLATEAU, "monitor": monitor}
    remote = RemoteSchedulers(keeper, run_id, config)

    steps = 4 * BATCHES_PER_EPOCH
    expected = lightning_lrs(local, steps, interval=interval, monitor=monitor)
    assert lightning_lrs(remote, steps, interval=interval, monitor=monitor) == expected
    assert len({tuple(lrs) for lrs in expected.values()}) > 2, "the plateau must cut lr"


def test_killed_training_resumed_from_lightning_checkpoint_matches_torch(
    sqlite_server: LiveServer, keeper: LRKeeper, run_id: str, tmp_path: Path
) -> None:
    expected = lightning_lrs(torch_one_cycle)
    killed, resumed = kill_and_resume("lightning", sqlite_server.base_url, run_id, tmp_path)
    assert resumed[0][0] < killed[-1][0], "the resumed process must go back to a checkpoint"
    for step, lrs in killed + resumed:
        assert lrs == expected[step], f"step {step}"
    assert resumed[-1][0] == STEPS - 1
    history = list(keeper.history(run_id, page_size=1000))
    assert [item.lr for item in history][:STEPS] == [expected[step] for step in range(STEPS)]


def test_ddp_ranks_share_one_run_and_match_torch(
    sqlite_server: LiveServer, keeper: LRKeeper, run_id: str
) -> None:
    """Lightning's ddp strategy on two CPU processes (gloo): every rank steps the run."""
    expected = lightning_lrs(torch_one_cycle)
    completed = subprocess.run(
        [
            *(sys.executable, str(DDP_SCRIPT), "--url", sqlite_server.base_url),
            *("--run-id", run_id, "--steps", str(STEPS)),
        ],
        cwd=PROJECT_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("LRKEEPER_")},
        capture_output=True,
        text=True,
        timeout=PROCESS_DEADLINE_SECONDS,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    for rank in (0, 1):
        assert {line["step"]: line["lr"] for line in lines if line["rank"] == rank} == expected
    assert keeper.get_run(run_id).step == STEPS
