"""A two-process Lightning DDP job (gloo on CPU) under ``RemoteLRScheduler``.

Run as a script (``python lightning_ddp.py --url URL --run-id ID --steps N``):
Lightning's ``ddp`` strategy starts the second rank by running this same command
again. Every rank constructs the scheduler for the same run in
``configure_optimizers`` and steps it; each prints ``{"rank", "step", "lr"}`` per
optimizer step.
"""

import argparse
import json
import sys
from pathlib import Path

# Run as a script, the project root is not on sys.path; the tests' helpers live there.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from client import RemoteLRScheduler
from tests.integrations.frameworks import one_cycle_config
from tests.integrations.lightning_training import TinyRegression, fit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--steps", required=True, type=int)
    arguments = parser.parse_args()

    def remote(optimizer: torch.optim.Optimizer) -> RemoteLRScheduler:
        config = one_cycle_config(arguments.steps)
        return RemoteLRScheduler(optimizer, arguments.run_id, config, url=arguments.url)

    module: TinyRegression

    def report(step: int, lrs: list[float]) -> None:
        # One write per line: both ranks share the pipe, and print() writes the newline apart.
        line = json.dumps({"rank": module.global_rank, "step": step, "lr": lrs})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    module = TinyRegression(remote, on_step=report)
    fit(module, arguments.steps, strategy="ddp", devices=2)


if __name__ == "__main__":
    main()
