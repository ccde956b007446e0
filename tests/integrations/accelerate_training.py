"""A tiny Accelerate training loop whose scheduler is torch's or lrkeeper's.

``accelerator.prepare(model, optimizer, loader, scheduler)`` as users write it,
with gradient accumulation, and the README's recipe for lrkeeper:
``Accelerator(step_scheduler_with_optimizer=False)`` and ``scheduler.step()`` only
when ``accelerator.sync_gradients``. Accelerate's default instead steps a prepared
scheduler once per *process* per optimizer step (it assumes each process saw
1/N of the data), which would advance a shared run N times. ``recipe=False``
trains with that default, to show the trap.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import accelerate
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client import RemoteLRScheduler
from tests.integrations.frameworks import CHECKPOINT_EVERY, StepReporter, one_cycle_config

SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
BATCH_SIZE = 4
ACCUMULATION = 2


def dataset(steps: int, seed: int = 1) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(steps * ACCUMULATION * BATCH_SIZE, 4, generator=generator)
    return TensorDataset(inputs, inputs.mean(dim=1, keepdim=True))


def train(
    make_scheduler: SchedulerFactory,
    steps: int,
    *,
    report: StepReporter,
    recipe: bool = True,
    checkpoint_dir: Path | None = None,
) -> None:
    """``steps`` optimizer steps of ``ACCUMULATION`` micro-batches each; with
    ``checkpoint_dir``, ``accelerator.save_state`` every ``CHECKPOINT_EVERY`` steps
    into ``step-N``, and a start resumes from the newest with ``load_state``."""
    accelerator = accelerate.Accelerator(
        cpu=True,
        gradient_accumulation_steps=ACCUMULATION,
        step_scheduler_with_optimizer=not recipe,
    )
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    # Each process gets 1/N of the batches: N times the data keeps `steps` steps per process.
    loader = DataLoader(dataset(steps * accelerator.num_processes), batch_size=BATCH_SIZE)
    scheduler = make_scheduler(optimizer)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    done = 0
    saved = sorted(checkpoint_dir.glob("step-*"), key=_step_of) if checkpoint_dir else []
    if saved:
        accelerator.load_state(str(saved[-1]))
        done = _step_of(saved[-1])
        loader = accelerator.skip_first_batches(loader, done * ACCUMULATION)
    for inputs, targets in loader:
        with accelerator.accumulate(model):
            if accelerator.sync_gradients:
                report(done, [group["lr"] for group in optimizer.param_groups])
            loss = nn.functional.mse_loss(model(inputs), targets)
            accelerator.backward(loss)
            optimizer.step()
            if accelerator.sync_gradients or not recipe:
                scheduler.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            done += 1
            if checkpoint_dir is not None and done % CHECKPOINT_EVERY == 0:
                accelerator.save_state(str(checkpoint_dir / f"step-{done}"))


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("step-"))


def train_remote(
    url: str, run_id: str, checkpoint_dir: Path, steps: int, report: StepReporter
) -> None:
    """The crash worker's run: resumes from the newest ``accelerator.save_state``."""

    def remote(optimizer: torch.optim.Optimizer) -> RemoteLRScheduler:
        return RemoteLRScheduler(optimizer, run_id, one_cycle_config(steps), url=url)

    train(remote, steps, report=report, checkpoint_dir=checkpoint_dir)
