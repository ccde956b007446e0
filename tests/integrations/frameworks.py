"""The schedule every integration test drives, and each framework's crash-test training run.

A framework's run trains under lrkeeper with the framework's own checkpointing,
resuming from its newest checkpoint; frameworks are imported only when their run
is chosen, so a worker pays for one framework's import, not three.
"""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# OneCycleLR cycles lr and momentum on every step: a step lost, repeated or shifted shows.
STEPS = 16
CHECKPOINT_EVERY = 4


def one_cycle_config(total_steps: int = STEPS) -> dict[str, Any]:
    return {"type": "OneCycleLR", "params": {"max_lr": 0.1, "total_steps": total_steps}}


def torch_one_cycle(optimizer: Any, total_steps: int = STEPS) -> Any:
    """torch's scheduler for :func:`one_cycle_config`: the oracle."""
    from torch.optim import lr_scheduler

    return lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total_steps)


StepReporter = Callable[[int, list[float]], None]
# (url, run_id, checkpoint_dir, steps, report): trains to ``steps``, resuming if it can.
RemoteTraining = Callable[[str, str, Path, int, StepReporter], None]


def _lightning(
    url: str, run_id: str, checkpoint_dir: Path, steps: int, report: StepReporter
) -> None:
    from tests.integrations import lightning_training

    lightning_training.train_remote(url, run_id, checkpoint_dir, steps, report)


def _transformers(
    url: str, run_id: str, checkpoint_dir: Path, steps: int, report: StepReporter
) -> None:
    from tests.integrations import transformers_training

    transformers_training.train_remote(url, run_id, checkpoint_dir, steps, report)


def _accelerate(
    url: str, run_id: str, checkpoint_dir: Path, steps: int, report: StepReporter
) -> None:
    from tests.integrations import accelerate_training

    accelerate_training.train_remote(url, run_id, checkpoint_dir, steps, report)


FRAMEWORKS: Mapping[str, RemoteTraining] = {
    "accelerate": _accelerate,
    "lightning": _lightning,
    "transformers": _transformers,
}
