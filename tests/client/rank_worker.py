"""One rank of a job for the ranks test: no torch, an optimizer that is only ``param_groups``.

Run as a script with ``--url --run-id --config --steps [--metrics JSON]``. It
waits for a line on stdin (so that all ranks create the run at the same moment),
constructs RemoteLRScheduler, prints what it holds, and waits for a second line:
the barrier DDP's first backward pass would be, so that no rank steps before all
have constructed (a rank constructed later would attach at the run's current
step, as a restarted one does). Then it steps ``--steps`` times without further
synchronisation, printing one JSON line per step: the values its groups hold and
whether the answer was a replay.
"""

import argparse
import json
import sys
from typing import Any

from client import LRKeeper, RemoteLRScheduler, RetryPolicy


class ParamGroupsOnly:
    """Anything with torch's ``param_groups`` is an optimizer to RemoteLRScheduler."""

    def __init__(self, param_groups: list[dict[str, Any]]) -> None:
        self.param_groups = param_groups


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--config", required=True, type=json.loads)
    parser.add_argument("--groups", required=True, type=json.loads)
    parser.add_argument("--steps", required=True, type=int)
    parser.add_argument("--metrics", type=json.loads, default=None)
    arguments = parser.parse_args()

    optimizer = ParamGroupsOnly(arguments.groups)
    sys.stdin.readline()
    with LRKeeper(arguments.url, retry=RetryPolicy(deadline=60.0)) as keeper:
        scheduler = RemoteLRScheduler(optimizer, arguments.run_id, arguments.config, client=keeper)
        print(json.dumps({"step": scheduler.last_epoch, "lr": scheduler.get_last_lr()}), flush=True)
        sys.stdin.readline()
        for index in range(arguments.steps):
            metric = None if arguments.metrics is None else arguments.metrics[index]
            answer = scheduler.step(metric)
            groups = optimizer.param_groups
            line = {
                "step": answer.step,
                "lr": [group["lr"] for group in groups],
                "momentum": [group.get("momentum") for group in groups],
                "replayed": answer.replayed,
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
