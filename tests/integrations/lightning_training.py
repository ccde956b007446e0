"""A tiny Lightning training run whose scheduler is torch's or lrkeeper's, nothing else differing.

The scheduler comes from ``configure_optimizers`` exactly as a user writes it:
``{"scheduler": ..., "interval": ..., "monitor": ...}``, with no override of
``lr_scheduler_step``. Every optimizer step reports the lr it used (``on_step``).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client import RemoteLRScheduler
from tests.integrations.frameworks import CHECKPOINT_EVERY, StepReporter, one_cycle_config

SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

BATCHES_PER_EPOCH = 6


def dataset(seed: int = 1) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(BATCHES_PER_EPOCH * 4, 4, generator=generator)
    return TensorDataset(inputs, inputs.mean(dim=1, keepdim=True))


class TinyRegression(lightning.LightningModule):
    def __init__(
        self,
        make_scheduler: SchedulerFactory,
        *,
        interval: str = "step",
        monitor: str | None = None,
        on_step: StepReporter | None = None,
    ) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.make_scheduler = make_scheduler
        self.interval = interval
        self.monitor = monitor
        self.on_step = on_step
        self.lrs: dict[int, list[float]] = {}

    def training_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
        lrs = [group["lr"] for group in self.trainer.optimizers[0].param_groups]
        self.lrs[self.trainer.global_step] = lrs
        if self.on_step is not None:
            self.on_step(self.trainer.global_step, lrs)
        inputs, targets = batch
        loss = nn.functional.mse_loss(self.layer(inputs), targets)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_index: int) -> None:
        inputs, targets = batch
        self.log("val_loss", nn.functional.mse_loss(self.layer(inputs), targets))

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.5)
        scheduler: dict[str, Any] = {
            "scheduler": self.make_scheduler(optimizer),
            "interval": self.interval,
        }
        if self.monitor is not None:
            scheduler["monitor"] = self.monitor
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def fit(
    module: TinyRegression,
    max_steps: int,
    *,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 0,
    resume_from: Path | None = None,
    **trainer_options: Any,
) -> lightning.Trainer:
    """Train ``max_steps`` optimizer steps, validating every epoch; with ``checkpoint_dir``,
    Lightning's own ModelCheckpoint saves every ``checkpoint_every`` steps."""
    callbacks: list[lightning.Callback] = []
    if checkpoint_dir is not None:
        callbacks.append(
            lightning.pytorch.callbacks.ModelCheckpoint(
                dirpath=checkpoint_dir,
                filename="{step}",
                every_n_train_steps=checkpoint_every,
                save_top_k=-1,
            )
        )
    trainer = lightning.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=checkpoint_dir is not None,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_options,
    )
    training_data = DataLoader(dataset(), batch_size=4)
    validation_data = DataLoader(dataset(seed=2), batch_size=8)
    trainer.fit(module, training_data, validation_data, ckpt_path=resume_from)
    return trainer


def newest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The checkpoint of the highest step ModelCheckpoint wrote as ``step=N.ckpt``."""
    saved = list(checkpoint_dir.glob("step=*.ckpt"))
    return max(saved, key=lambda path: int(path.stem.removeprefix("step="))) if saved else None


def train_remote(
    url: str, run_id: str, checkpoint_dir: Path, steps: int, report: StepReporter
) -> None:
    """The crash worker's run: resumes from the newest checkpoint with Lightning's ckpt_path."""

    def remote(optimizer: torch.optim.Optimizer) -> RemoteLRScheduler:
        return RemoteLRScheduler(optimizer, run_id, one_cycle_config(steps), url=url)

    fit(
        TinyRegression(remote, on_step=report),
        steps,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=CHECKPOINT_EVERY,
        resume_from=newest_checkpoint(checkpoint_dir),
    )
