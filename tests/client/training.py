"""A tiny but real torch training setup shared by the client's tests.

Two param groups (weight and bias with their own lr, momentum or betas) so that
per-group values are exercised; real ``loss.backward()`` and ``optimizer.step()``.
"""

import copy
from typing import Any, Literal

import torch
from torch import nn

OptimizerKind = Literal["sgd", "adam"]

GroupValues = tuple[float, float | None, tuple[float, ...] | None]


def tiny_model(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 3)


def make_optimizer(kind: OptimizerKind, model: nn.Module) -> torch.optim.Optimizer:
    weight, bias = model.weight, model.bias  # type: ignore[union-attr]
    groups: list[dict[str, Any]]
    if kind == "sgd":
        groups = [{"params": [weight]}, {"params": [bias], "lr": 0.05, "momentum": 0.5}]
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    groups = [{"params": [weight]}, {"params": [bias], "lr": 0.002, "betas": (0.85, 0.99)}]
    return torch.optim.Adam(groups, lr=0.001)


def twin_setups(kind: OptimizerKind) -> tuple[Any, ...]:
    """Two identical models with identical optimizers: one for torch, one for lrkeeper."""
    local_model = tiny_model()
    remote_model = copy.deepcopy(local_model)
    return (
        local_model,
        make_optimizer(kind, local_model),
        remote_model,
        make_optimizer(kind, remote_model),
    )


def batches(count: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 4, generator=generator), torch.randn(8, 3, generator=generator))
        for _ in range(count)
    ]


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor]
) -> float:
    inputs, targets = batch
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return float(loss.item())


def group_values(optimizer: Any) -> list[GroupValues]:
    """lr, momentum and betas of every group: what a scheduler may change."""
    return [
        (
            group["lr"],
            group.get("momentum"),
            tuple(group["betas"]) if "betas" in group else None,
        )
        for group in optimizer.param_groups
    ]
