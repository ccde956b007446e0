"""A pipelined training process for the SIGKILL test: nothing in its loop waits for an answer.

Run as a script (``python pipeline_worker.py --url URL --run-id ID --config JSON
--steps N``). It constructs the (pipelined) scheduler, resuming wherever the run is,
prints ``{"resumed_at", "lr", "momentum"}``, then trains with a plain ``for`` loop that
reads nothing back. A step post-hook, registered after the scheduler's pre-hook,
prints the values each optimizer step used: ``{"used_after": k, ...}`` says the
answer to step k was received and applied — acknowledged. At the end it prints
``{"done": last_epoch}`` after ``close()`` has sent the last report.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Run as a script, the project root is not on sys.path; the tests' helpers live there.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from client import LRKeeper, RemoteLRScheduler, RetryPolicy
from tests.client.training import batches, make_optimizer, tiny_model, train_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--config", required=True, type=json.loads)
    parser.add_argument("--steps", required=True, type=int)
    arguments = parser.parse_args()

    model = tiny_model()
    optimizer = make_optimizer("sgd", model)
    keeper = LRKeeper(arguments.url, retry=RetryPolicy(deadline=120.0, max_backoff=0.5))
    scheduler = RemoteLRScheduler(optimizer, arguments.run_id, arguments.config, client=keeper)
    report({"resumed_at": scheduler.last_epoch, **values(optimizer)})

    def after_optimizer_step(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
        # The pre-hook has applied the answer, so this reads without waiting.
        report({"used_after": scheduler.state_dict()["last_epoch"], **values(optimizer)})

    optimizer.register_step_post_hook(after_optimizer_step)
    training_data = batches(arguments.steps)
    for index in range(scheduler.last_epoch, arguments.steps):
        train_step(model, optimizer, training_data[index])
        scheduler.step()
    scheduler.close()
    report({"done": scheduler.last_epoch, **values(optimizer)})
    keeper.close()


def values(optimizer: Any) -> dict[str, list[float]]:
    groups = optimizer.param_groups
    return {
        "lr": [group["lr"] for group in groups],
        "momentum": [group["momentum"] for group in groups],
    }


def report(line: dict[str, object]) -> None:
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
