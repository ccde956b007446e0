"""A tiny ``transformers.Trainer`` run whose scheduler is torch's or lrkeeper's.

The scheduler goes in as ``Trainer(optimizers=(optimizer, scheduler))``; checkpoints
are the Trainer's own (``save_steps``), resumed with ``resume_from_checkpoint``,
which loads the scheduler's ``state_dict`` from the checkpoint's ``scheduler.pt``.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from client import RemoteLRScheduler
from tests.integrations.frameworks import CHECKPOINT_EVERY, StepReporter, one_cycle_config

SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
BATCH_SIZE = 4


class TinyRegression(nn.Module):
    """What the Trainer needs of a model: a forward that takes the batch's keys, returns loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.mse_loss(self.layer(inputs), labels)}


def dataset(steps: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(steps * BATCH_SIZE, 4, generator=generator)
    targets = inputs.mean(dim=1, keepdim=True)
    return [{"inputs": x, "labels": y} for x, y in zip(inputs, targets, strict=True)]


class ReportSteps(transformers.TrainerCallback):
    """Reports the lrs each optimizer step is about to use."""

    def __init__(self, optimizer: torch.optim.Optimizer, report: StepReporter) -> None:
        self.optimizer = optimizer
        self.report = report

    def on_step_begin(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        self.report(state.global_step, [group["lr"] for group in self.optimizer.param_groups])


def train(
    make_scheduler: SchedulerFactory,
    steps: int,
    output_dir: Path,
    *,
    report: StepReporter,
    save_steps: int = 0,
    resume: bool = False,
    eval_steps: int = 0,
) -> None:
    """``steps`` optimizer steps of the Trainer on CPU, checkpointing every ``save_steps``
    and evaluating every ``eval_steps`` (which steps a plateau scheduler with ``eval_loss``)."""
    evaluation: dict[str, Any] = {}
    if eval_steps:
        evaluation = {
            "eval_strategy": "steps",
            "eval_steps": eval_steps,
            "metric_for_best_model": "eval_loss",
        }
    model = TinyRegression()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    arguments = transformers.TrainingArguments(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=BATCH_SIZE,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **evaluation,
    )
    trainer = transformers.Trainer(
        model=model,
        args=arguments,
        train_dataset=dataset(steps),  # type: ignore[arg-type]
        eval_dataset=dataset(2, seed=2) if eval_steps else None,  # type: ignore[arg-type]
        optimizers=(optimizer, make_scheduler(optimizer)),
        callbacks=[ReportSteps(optimizer, report)],
    )
    trainer.train(resume_from_checkpoint=resume or None)


def train_remote(
    url: str, run_id: str, checkpoint_dir: Path, steps: int, report: StepReporter
) -> None:
    """The crash worker's run: resumes from the newest checkpoint-N the Trainer saved."""

    def remote(optimizer: torch.optim.Optimizer) -> RemoteLRScheduler:
        return RemoteLRScheduler(optimizer, run_id, one_cycle_config(steps), url=url)

    resume = any(checkpoint_dir.glob("checkpoint-*"))
    train(remote, steps, checkpoint_dir, report=report, save_steps=CHECKPOINT_EVERY, resume=resume)
