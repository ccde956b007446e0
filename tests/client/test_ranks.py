"""Eight processes stepping one run, as the ranks of a job do, all hold the same values.

Every rank constructs RemoteLRScheduler (the run is created by whichever PUT lands
first) and reports every step; the service's replay rule gives each step's
values to the first rank and the same recorded values to the other seven. The
values also equal torch's for that schedule and metric sequence.
"""

import json
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler

from tests.conftest import LiveServer

pytestmark = [pytest.mark.torch, pytest.mark.slow]

WORKER = Path(__file__).with_name("rank_worker.py")
RANKS = 8
GROUPS = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.9}]
SHARED_LOSSES = [1.0, 0.8, 0.81, 0.82, 0.83, 0.7, 0.71, 0.72, 0.73, 0.74, 0.75, 0.6, 0.61, 0.62]
STEPS = len(SHARED_LOSSES)

SCHEDULES = {
    "plateau-with-shared-metric": (
        {"type": "ReduceLROnPlateau", "params": {"factor": 0.5, "patience": 2}},
        lambda optimizer: lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2),
        SHARED_LOSSES,
    ),
    "cosine": (
        {"type": "CosineAnnealingLR", "params": {"T_max": 10, "eta_min": 0.001}},
        lambda optimizer: lr_scheduler.CosineAnnealingLR(optimizer, T_max=10, eta_min=0.001),
        None,
    ),
}


def torch_lrs(make_scheduler: Any, metrics: list[float] | None) -> list[list[float]]:
    weights = [torch.nn.Parameter(torch.zeros(1)) for _ in GROUPS]
    optimizer = torch.optim.SGD(
        [{"params": [weight], **group} for weight, group in zip(weights, GROUPS, strict=True)],
        lr=0.1,
    )
    scheduler = make_scheduler(optimizer)
    lrs = []
    for index in range(STEPS):
        optimizer.step()
        if metrics is None:
            scheduler.step()
        else:
            scheduler.step(metrics[index])
        lrs.append([group["lr"] for group in optimizer.param_groups])
    return lrs


def release(ranks: list[subprocess.Popen[str]]) -> None:
    for rank in ranks:
        assert rank.stdin is not None
        rank.stdin.write("go\n")
        rank.stdin.flush()


def read_line(rank: subprocess.Popen[str]) -> str:
    assert rank.stdout is not None
    line = rank.stdout.readline()
    if not line:
        raise AssertionError(f"rank exited early: {rank.wait(timeout=60)}")
    return line


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_every_rank_holds_identical_values_at_every_step(
    schedule: str, live_server: LiveServer, run_id: str
) -> None:
    config, make_scheduler, metrics = SCHEDULES[schedule]
    command = [
        *(sys.executable, str(WORKER), "--url", live_server.base_url, "--run-id", run_id),
        *("--config", json.dumps(config), "--groups", json.dumps(GROUPS), "--steps", str(STEPS)),
    ]
    if metrics is not None:
        command += ["--metrics", json.dumps(metrics)]
    ranks = [
        subprocess.Popen(command, stdin=PIPE, stdout=PIPE, stderr=PIPE, text=True)
        for _ in range(RANKS)
    ]
    release(ranks)  # together: the run is created by racing PUTs
    constructed = [json.loads(read_line(rank)) for rank in ranks]
    release(ranks)  # every rank constructed: the barrier DDP's first backward pass is
    outputs = []
    for rank, first_line in zip(ranks, constructed, strict=True):
        out, err = rank.communicate(timeout=180)
        assert rank.returncode == 0, err
        outputs.append([first_line, *(json.loads(line) for line in out.splitlines())])

    assert all(line == {"step": 0, "lr": [0.1, 0.02]} for line in constructed)
    expected = torch_lrs(make_scheduler, metrics)
    assert len(set(map(tuple, map(tuple, expected)))) > 1, "the lr must change to prove anything"
    for step in range(1, STEPS + 1):
        lines = [output[step] for output in outputs]
        assert all(line["step"] == step for line in lines)
        assert all(line["lr"] == expected[step - 1] for line in lines), f"step {step}: {lines}"
        assert all(line["momentum"] == [0.9, 0.9] for line in lines)
        # One rank advanced the run; the other seven were answered from the record.
        assert sum(not line["replayed"] for line in lines) == 1, f"step {step}"
