"""A training process for the crash tests: trains a tiny model under RemoteLRScheduler.

Run as a script (``python crash_worker.py --url URL --run-id ID --config JSON
--steps N``). It constructs the scheduler (resuming wherever the run is), prints
``{"resumed_at", "lr", "momentum"}``, then one JSON line per step with the values
the optimizer holds after it, until the run has ``--steps`` steps. Retries are
logged to stderr, so a test can see that it rode out an outage.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

# Run as a script, the project root is not on sys.path; the tests' helpers live there.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from client import LRKeeper, RemoteLRScheduler, RetryPolicy
from tests.client.training import batches, make_optimizer, tiny_model, train_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--config", required=True, type=json.loads)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    parser.add_argument("--steps", required=True, type=int)
    parser.add_argument("--deadline", default=60.0, type=float)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    model = tiny_model()
    optimizer = make_optimizer(arguments.optimizer, model)
    policy = RetryPolicy(deadline=arguments.deadline, initial_backoff=0.05, max_backoff=0.5)
    keeper = LRKeeper(arguments.url, retry=policy)
    scheduler = RemoteLRScheduler(optimizer, arguments.run_id, arguments.config, client=keeper)
    report({"resumed_at": scheduler.last_epoch, **values(optimizer)})
    training_data = batches(arguments.steps)
    while scheduler.last_epoch < arguments.steps:
        train_step(model, optimizer, training_data[scheduler.last_epoch])
        answer = scheduler.step()
        report({"step": answer.step, **values(optimizer)})
    keeper.close()


def values(optimizer: object) -> dict[str, list[float]]:
    groups = optimizer.param_groups  # type: ignore[attr-defined]
    return {
        "lr": [group["lr"] for group in groups],
        "momentum": [
            group["betas"][0] if "betas" in group else group["momentum"] for group in groups
        ],
    }


def report(line: dict[str, object]) -> None:
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
