"""A training process for the integration crash tests: one framework, lrkeeper's scheduler.

Run as a script (``python crash_worker.py FRAMEWORK --url URL --run-id ID
--checkpoint-dir DIR --steps N``). It trains with the framework's own loop and
checkpointing, resuming from the newest checkpoint in ``DIR`` if there is one, and
prints one JSON line ``{"step", "lr"}`` per optimizer step (the lrs that step used),
so a test can SIGKILL it mid-run, start it again, and compare every line with torch.
"""

import argparse
import json
import sys
from pathlib import Path

# Run as a script, the project root is not on sys.path; the tests' helpers live there.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integrations.frameworks import FRAMEWORKS


def report(step: int, lrs: list[float]) -> None:
    print(json.dumps({"step": step, "lr": lrs}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=sorted(FRAMEWORKS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--checkpoint-dir", required=True, type=Path)
    parser.add_argument("--steps", required=True, type=int)
    arguments = parser.parse_args()
    train = FRAMEWORKS[arguments.framework]
    train(arguments.url, arguments.run_id, arguments.checkpoint_dir, arguments.steps, report)


if __name__ == "__main__":
    main()
