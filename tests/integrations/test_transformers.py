"""Hugging Face ``transformers.Trainer`` drives ``RemoteLRScheduler`` passed in ``optimizers``.

The Trainer steps it after every optimizer step, saves its ``state_dict`` in each
checkpoint (``scheduler.pt``) and loads it on ``resume_from_checkpoint``, which
rewinds the run to the checkpoint. Every step's lr equals the same Trainer run
driven by torch's scheduler, across a SIGKILL and a resume too.
"""

from pathlib import Path

import pytest
import torch

from client import LRKeeper, RemoteLRScheduler
from tests.conftest import LiveServer
from tests.integrations.frameworks import STEPS, one_cycle_config, torch_one_cycle
from tests.integrations.killing import kill_and_resume
from tests.integrations.transformers_training import SchedulerFactory, train

pytestmark = [pytest.mark.torch, pytest.mark.integrations]


def trainer_lrs(make_scheduler: SchedulerFactory, output_dir: Path) -> dict[int, list[float]]:
    lrs: dict[int, list[float]] = {}
    train(make_scheduler, STEPS, output_dir, report=lrs.__setitem__)
    return lrs


def test_trainer_schedule_matches_torch_every_step(
    keeper: LRKeeper, run_id: str, tmp_path: Path
) -> None:
    def remote(optimizer: torch.optim.Optimizer) -> RemoteLRScheduler:
        return RemoteLRScheduler(optimizer, run_id, one_cycle_config(), client=keeper)

    expected = trainer_lrs(torch_one_cycle, tmp_path / "torch")
    assert sorted(expected) == list(range(STEPS))
    assert trainer_lrs(remote, tmp_path / "remote") == expected
    assert keeper.get_run(run_id).step == STEPS


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
