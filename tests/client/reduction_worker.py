"""One rank of a job for test_rank_reduction.py: real torch SGD, its own metric each step.

Run as a script with ``--rank R --world-size N --phases JSON``. Each phase is a list of
runs this rank trains side by side, one optimizer and one ``RemoteLRScheduler(rank=R,
world_size=N)`` each; a run is ``{"run_id", "url", "config", "reduce", "metrics"}``
(this rank's metric for each step), with optional ``"timeout_s"``, ``"pipelined"``
(default true) and ``"hang_after"`` (after step m, stop and wait to be killed).

Once its schedulers of a phase are constructed it prints ``{"ready": phase}`` and waits
for a line on stdin: the test releases every rank together, so that no rank's first
report of a run with a short timeout comes a timeout after another's. Every
``optimizer.step()`` then prints, from a step pre-hook registered after the
scheduler's, the values the optimizer is about to step with, read from its groups'
storage (no settling of its own): ``{"run_id", "step", "lr", "momentum"}``. A pipelined
scheduler's own pre-hook runs first, so the line shows what the optimizer really used.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

# Run as a script, the project root is not on sys.path; the tests' helpers live there.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from client import LRKeeper, RemoteLRScheduler, RetryPolicy

GROUPS: list[dict[str, float]] = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.9}]


class RankedRun:
    """One run as this rank trains it: a tiny model, its SGD optimizer and the scheduler."""

    def __init__(self, spec: dict[str, Any], rank: int, world_size: int) -> None:
        self.spec = spec
        torch.manual_seed(rank)
        self.model = torch.nn.Linear(4, 1)
        weight, bias = self.model.weight, self.model.bias
        self.optimizer = torch.optim.SGD(
            [{"params": [weight], **GROUPS[0]}, {"params": [bias], **GROUPS[1]}]
        )
        self.keeper = LRKeeper(spec["url"], retry=RetryPolicy(deadline=60.0))
        self.scheduler = RemoteLRScheduler(
            self.optimizer,
            spec["run_id"],
            spec["config"],
            client=self.keeper,
            rank=rank,
            world_size=world_size,
            reduce=spec["reduce"],
            rank_timeout_s=spec.get("timeout_s"),
            pipelined=spec.get("pipelined", True),
        )
        self.optimizer.register_step_pre_hook(self._print_values)
        self.inputs = torch.randn(8, 4, generator=torch.Generator().manual_seed(100 + rank))

    def _print_values(self, optimizer: Any, _args: Any, _kwargs: Any) -> None:
        groups = optimizer.param_groups
        line = {
            "run_id": self.spec["run_id"],
            "step": self.scheduler.last_epoch,
            "lr": [dict.__getitem__(group, "lr") for group in groups],
            "momentum": [dict.__getitem__(group, "momentum") for group in groups],
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    def train_once(self) -> None:
        self.optimizer.zero_grad()
        self.model(self.inputs).square().mean().backward()
        self.optimizer.step()

    def close(self) -> None:
        self.scheduler.close()
        self.keeper.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", required=True, type=int)
    parser.add_argument("--world-size", required=True, type=int)
    parser.add_argument("--phases", required=True, type=json.loads)
    arguments = parser.parse_args()

    for number, phase in enumerate(arguments.phases):
        runs = [RankedRun(spec, arguments.rank, arguments.world_size) for spec in phase]
        print(json.dumps({"ready": number}), flush=True)
        sys.stdin.readline()
        steps = len(runs[0].spec["metrics"])
        for index in range(steps):
            for run in runs:
                run.train_once()  # with the values after step `index`
            if any(run.spec.get("hang_after") == index for run in runs):
                sys.stdin.readline()  # the test kills this rank here
                return
            for run in runs:
                run.scheduler.step(run.spec["metrics"][index])
        for run in runs:
            run.train_once()  # the values after the last step
            run.close()


if __name__ == "__main__":
    main()
