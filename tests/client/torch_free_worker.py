"""Drives a run in a process where torch and the training frameworks cannot be imported.

Run as a script (``python torch_free_worker.py URL RUN_ID CONFIG_JSON``): it blocks
torch, transformers, lightning and accelerate, imports the client,
drives the run with a duck-typed optimizer through :func:`drive` and prints one
JSON object. tests/client/test_torch_flavour.py drives another run the same way
with torch loaded and compares.
"""

import json
import sys
from pathlib import Path
from typing import Any

BLOCKED = ("torch", "transformers", "lightning", "pytorch_lightning", "accelerate")


def drive(scheduler: Any) -> dict[str, Any]:
    """Steps, checkpoints, steps on, rewinds to the checkpoint, steps: every value seen."""
    seen: list[Any] = [scheduler.get_last_lr()]
    for _ in range(4):
        scheduler.step()
        seen.append(scheduler.get_last_lr())
    checkpoint = scheduler.state_dict()
    for _ in range(3):
        scheduler.step()
    scheduler.load_state_dict(checkpoint)
    seen.append(scheduler.get_last_lr())
    scheduler.step()
    seen.append(scheduler.get_last_lr())
    momenta = [group["momentum"] for group in scheduler.optimizer.param_groups]
    state = {key: value for key, value in scheduler.state_dict().items() if key != "run_id"}
    return {"seen": seen, "momenta": momenta, "state": state, "last_epoch": scheduler.last_epoch}


class DuckOptimizer:
    """The groups tests/client/training.py's SGD optimizer starts with, without torch."""

    def __init__(self) -> None:
        self.param_groups = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.5}]


def main() -> None:
    for name in BLOCKED:
        sys.modules[name] = None  # type: ignore[assignment]  # importing it now raises
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from client import RemoteLRScheduler

    url, run_id, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    scheduler = RemoteLRScheduler(DuckOptimizer(), run_id, config, url=url)
    print(
        json.dumps(
            {
                "class": [cls.__name__ for cls in type(scheduler).__mro__],
                "loaded": [name for name in BLOCKED if sys.modules.get(name) is not None],
                **drive(scheduler),
            }
        )
    )


if __name__ == "__main__":
    main()
