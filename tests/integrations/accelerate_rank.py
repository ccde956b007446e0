"""One rank of a two-process Accelerate job (gloo on CPU) for tests/integrations.

Run as a script with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) set. It trains ``--steps`` optimizer
steps under the README's recipe on run ``--recipe-run``, then the same under
Accelerate's default on run ``--default-run`` (a long schedule, since that one
advances faster), printing ``{"run", "step", "lr"}`` per optimizer step.
"""

import argparse
import functools
import json
import sys
from pathlib import Path

# Run as a script, the project root is not on sys.path; the tests' helpers live there.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from client import RemoteLRScheduler
from tests.integrations.accelerate_training import train
from tests.integrations.frameworks import one_cycle_config


def report(run: str, step: int, lrs: list[float]) -> None:
    print(json.dumps({"run": run, "step": step, "lr": lrs}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--recipe-run", required=True)
    parser.add_argument("--default-run", required=True)
    parser.add_argument("--steps", required=True, type=int)
    arguments = parser.parse_args()

    def remote(
        run_id: str, total_steps: int, optimizer: torch.optim.Optimizer
    ) -> RemoteLRScheduler:
        config = one_cycle_config(total_steps)
        return RemoteLRScheduler(optimizer, run_id, config, url=arguments.url)

    recipe = functools.partial(remote, arguments.recipe_run, arguments.steps)
    train(recipe, arguments.steps, report=functools.partial(report, "recipe"))
    default = functools.partial(remote, arguments.default_run, 4 * arguments.steps)
    train(default, arguments.steps, report=functools.partial(report, "default"), recipe=False)


if __name__ == "__main__":
    main()
