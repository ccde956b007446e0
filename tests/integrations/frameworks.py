"""The schedule every integration test drives, and each framework's crash-test training run.

A framework's run trains under lrkeeper with the framework's own checkpointing,
resuming from its newest checkpoint; frameworks are imported only when their run
is chosen, so a worker pays for one framework's import, not three.
"""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from client import LRKeeper, RemoteLRScheduler

# OneCycleLR cycles lr and momentum on every step: a step lost, repeated or shifted shows.
STEPS = 16
CHECKPOINT_EVERY = 4


def one_cycle_config(total_steps: int = STEPS) -> dict[str, Any]:
    return {"type": "OneCycleLR", "params": {"max_lr": 0.1, "total_steps": total_steps}}


def torch_one_cycle(optimizer: Any, total_steps: int = STEPS) -> Any:
    """torch's scheduler for :func:`one_cycle_config`: the oracle."""
    from torch.optim import lr_scheduler

    return lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total_steps)


class RemoteSchedulers:
    """The factory a framework calls with its optimizer, keeping what it made.

    A pipelined ``step()`` returns before its report is recorded, so training ends
    with the last report still on its way; :meth:`close` takes that answer, as a
    training script does when it closes its scheduler, before a test reads the run.
    """

    def __init__(self, keeper: LRKeeper, run_id: str, config: Mapping[str, Any]) -> None:
        self.keeper, self.run_id, self.config = keeper, run_id, config
        self.made: list[RemoteLRScheduler] = []

    def __call__(self, optimizer: Any) -> RemoteLRScheduler:
        self.made.append(RemoteLRScheduler(optimizer, self.run_id, self.config, client=self.keeper))
        return self.made[-1]

    def close(self) -> None:
        for scheduler in self.made:
            scheduler.close()


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
