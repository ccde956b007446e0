"""Hugging Face ``transformers.Trainer`` drives ``RemoteLRScheduler`` passed in ``optimizers``.

The Trainer steps it after every optimizer step, saves its ``state_dict`` in each
checkpoint (``scheduler.pt``) and loads it on ``resume_from_checkpoint``, which
rewinds the run to the checkpoint; a plateau config is stepped with the evaluation
loss. Every step's lr equals the same Trainer run driven by torch's scheduler,
across a SIGKILL and a resume too.
"""

from pathlib import Path

import pytest
import torch
from torch.optim import lr_scheduler

from client import LRKeeper
from tests.conftest import LiveServer
from tests.integrations.frameworks import (
    STEPS,
    RemoteSchedulers,
    one_cycle_config,
    torch_one_cycle,
)
from tests.integrations.killing import kill_and_resume
from tests.integrations.transformers_training import SchedulerFactory, train

pytestmark = [pytest.mark.torch, pytest.mark.integrations]


# mode="max" on a falling loss: nothing improves, so every evaluation after the first halves lr.
PLATEAU = {"mode": "max", "factor": 0.5, "patience": 0}


def trainer_lrs(
    make_scheduler: SchedulerFactory, output_dir: Path, eval_steps: int = 0
) -> dict[int, list[float]]:
    lrs: dict[int, list[float]] = {}
    train(make_scheduler, STEPS, output_dir, report=lrs.__setitem__, eval_steps=eval_steps)
    return lrs


def test_trainer_schedule_matches_torch_every_step(
    keeper: LRKeeper, run_id: str, tmp_path: Path
) -> None:
    remote = RemoteSchedulers(keeper, run_id, one_cycle_config())
    expected = trainer_lrs(torch_one_cycle, tmp_path / "torch")
    assert sorted(expected) == list(range(STEPS))
    assert trainer_lrs(remote, tmp_path / "remote") == expected
    remote.close()
    assert keeper.get_run(run_id).step == STEPS


def test_plateau_schedule_is_stepped_with_the_trainers_eval_loss(
    keeper: LRKeeper, run_id: str, tmp_path: Path
) -> None:
    def local(optimizer: torch.optim.Optimizer) -> lr_scheduler.ReduceLROnPlateau:
        return lr_scheduler.ReduceLROnPlateau(optimizer, **PLATEAU)

    config = {"type": "ReduceLROnPlateau", "params": PLATEAU, "monitor": "eval_loss"}
    remote = RemoteSchedulers(keeper, run_id, config)

    expected = trainer_lrs(local, tmp_path / "torch", eval_steps=4)
    assert trainer_lrs(remote, tmp_path / "remote", eval_steps=4) == expected
    assert len({tuple(lrs) for lrs in expected.values()}) > 2, "the plateau must cut lr"


def test_killed_trainer_resumed_from_its_checkpoint_matches_torch(
    sqlite_server: LiveServer, keeper: LRKeeper, run_id: str, tmp_path: Path
) -> None:
    expected = trainer_lrs(torch_one_cycle, tmp_path / "torch")
    checkpoints = tmp_path / "remote"
    killed, resumed = kill_and_resume("transformers", sqlite_server.base_url, run_id, checkpoints)
    assert resumed[0][0] < killed[-1][0], "the resumed process must go back to a checkpoint"
    for step, lrs in killed + resumed:
        assert lrs == expected[step], f"step {step}"
    assert resumed[-1][0] == STEPS - 1
    history = list(keeper.history(run_id, page_size=1000))
    assert [item.lr for item in history][:STEPS] == [expected[step] for step in range(STEPS)]
