"""The DDP example (example_ddp.py) runs: gloo on CPU, ranks on 127.0.0.1, one run.

Every rank holds the same lr at every step, and that lr is what torch's
ReduceLROnPlateau gives for the all-reduced validation losses the ranks reported. When
every rank reports, the run is ranked (read from torch.distributed) and each step is the
mean of the ranks' equal metrics; when rank 0 alone reports, it is not.
One SQLite server is enough: what is under test is the ranks' agreement, and the
backends are covered by the ranks and crash tests.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.optim import lr_scheduler

from client import LRKeeper, Ranks
from tests.client.example_ddp import SCHEDULE
from tests.conftest import ServerPool

pytestmark = [pytest.mark.torch, pytest.mark.slow]

EXAMPLE = Path(__file__).with_name("example_ddp.py")
EPOCHS = 10


def torch_lrs(val_losses: list[float]) -> list[list[float]]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05, momentum=0.9)
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, **SCHEDULE["params"])
    lrs = []
    for val_loss in val_losses:
        optimizer.step()
        scheduler.step(val_loss)
        lrs.append([float(lr) for lr in scheduler.get_last_lr()])
    return lrs


@pytest.mark.parametrize(
    ("world_size", "rank0_reports"), [(3, False), (2, True)], ids=["every-rank", "rank0-reports"]
)
def test_ddp_ranks_share_one_schedule(
    world_size: int,
    rank0_reports: bool,
    server_factory: ServerPool,
    run_id: str,
    tmp_path: Path,
) -> None:
    server = server_factory("sqlite")
    command = [
        *(sys.executable, str(EXAMPLE), "--url", server.base_url, "--run-id", run_id),
        *("--epochs", str(EPOCHS), "--world-size", str(world_size), "--out", str(tmp_path)),
    ]
    if rank0_reports:
        command.append("--rank0-reports")
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world_size)]
    assert all(held == ranks[0] for held in ranks), "every rank holds the same values"
    steps = [line["step"] for line in ranks[0]]
    assert steps == list(range(1, EPOCHS + 1))
    lrs = [line["lr"] for line in ranks[0]]
    assert lrs == torch_lrs([line["val_loss"] for line in ranks[0]])
    assert len({lr[0] for lr in lrs}) > 1, "no plateau reduction: the comparison proved little"

    with LRKeeper(server.base_url) as keeper:
        run = keeper.get_run(run_id)
        assert (run.status, run.step) == ("finished", EPOCHS)
        assert run.ranks == (None if rank0_reports else Ranks(world_size=world_size))
        assert "ranks_timed_out" not in {event.kind for event in keeper.events(run_id)}
        reporters = {item.worker for item in keeper.history(run_id, start=1)}
    if rank0_reports:
        assert len(reporters) == 1, "only rank 0 reported"
