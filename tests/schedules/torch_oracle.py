"""Run a parity case in real torch 2.13.0: the oracle every engine value is checked against.

A case is the engine's own vocabulary (a scheduler config, JSON param groups, a
number of steps, metrics, hand edits of the lr); this module turns it into a
torch optimizer and scheduler and records what the optimizer's param groups hold
after construction and after every step, exactly as a training loop would see them.

Expression strings (``lr_lambda``, ``scale_fn``) become Python lambdas through
``eval``: that is fine here, in test code, because the engine must compute the
same thing from the same text without ``eval``.
"""

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import lr_scheduler

# What an expression may name, on the torch side: the builtins the engine accepts,
# the math module's functions and constants under their bare names, and ``math``.
_EXPRESSION_NAMES: dict[str, Any] = {
    **{name: getattr(math, name) for name in dir(math) if not name.startswith("_")},
    "min": min,
    "max": max,
    "abs": abs,
    "math": math,
}

COMPOSITE_TYPES = ("SequentialLR", "ChainedScheduler")
MOMENTUM_CYCLING_TYPES = ("CyclicLR", "OneCycleLR")
METRIC_TYPES = ("ReduceLROnPlateau",)
DEFAULT_MONITOR = {"ReduceLROnPlateau": "val_loss"}


def compile_expression(source: str, variable: str) -> Callable[[Any], Any]:
    """``"0.95 ** epoch"`` → ``lambda epoch: 0.95 ** epoch`` (Python's own arithmetic)."""
    code = compile(f"lambda {variable}: ({source})", f"<{variable} expression>", "eval")
    return eval(code, {"__builtins__": {}, **_EXPRESSION_NAMES})


def optimizer_kind(param_groups: Sequence[Mapping[str, Any]]) -> str:
    """Adam for groups with betas, SGD for groups with momentum, Adagrad (neither) otherwise.

    Adagrad stands for "an optimizer that supports neither momentum nor beta1",
    which is what the engine infers from groups that carry neither key.
    """
    if all("betas" in group for group in param_groups):
        return "Adam"
    if all("momentum" in group for group in param_groups):
        return "SGD"
    if not any("betas" in group or "momentum" in group for group in param_groups):
        return "Adagrad"
    raise ValueError(f"param groups mix optimizer kinds: {list(param_groups)!r}")


def make_optimizer(param_groups: Sequence[Mapping[str, Any]]) -> torch.optim.Optimizer:
    """One one-element parameter per group; group values exactly as the JSON gives them."""
    kind = optimizer_kind(param_groups)
    torch_groups: list[dict[str, Any]] = []
    for group in param_groups:
        torch_group: dict[str, Any] = {"params": [torch.zeros(1, requires_grad=True)]}
        for key, value in group.items():
            torch_group[key] = tuple(value) if key == "betas" else value
        torch_groups.append(torch_group)
    if kind == "Adam":
        return torch.optim.Adam(torch_groups)
    if kind == "SGD":
        return torch.optim.SGD(torch_groups)
    return torch.optim.Adagrad(torch_groups)


def _torch_params(config_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The config's params as torch's keyword arguments (expression strings → callables)."""
    kwargs = dict(params)
    if config_type in ("LambdaLR", "MultiplicativeLR") and "lr_lambda" in kwargs:
        source = kwargs["lr_lambda"]
        if isinstance(source, list):
            kwargs["lr_lambda"] = [compile_expression(item, "epoch") for item in source]
        else:
            kwargs["lr_lambda"] = compile_expression(source, "epoch")
    if config_type == "CyclicLR" and kwargs.get("scale_fn") is not None:
        kwargs["scale_fn"] = compile_expression(kwargs["scale_fn"], "x")
    return kwargs


def make_scheduler(config: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> Any:
    """Build torch's scheduler for a config; children first, in list order, as torch users do."""
    config_type = config["type"]
    params = config.get("params", {})
    if config_type in COMPOSITE_TYPES:
        children = [make_scheduler(child, optimizer) for child in params.get("schedulers", [])]
        if config_type == "SequentialLR":
            return lr_scheduler.SequentialLR(
                optimizer, schedulers=children, milestones=params.get("milestones", [])
            )
        return lr_scheduler.ChainedScheduler(children, optimizer=optimizer)
    scheduler_class = getattr(lr_scheduler, config_type)
    return scheduler_class(optimizer, **_torch_params(config_type, params))


def cycles_momentum(config: Mapping[str, Any]) -> bool:
    """Whether any scheduler in the tree writes momentum / beta1 (API.md: then it is reported)."""
    params = config.get("params", {})
    if config["type"] in COMPOSITE_TYPES:
        return any(cycles_momentum(child) for child in params.get("schedulers", []))
    return config["type"] in MOMENTUM_CYCLING_TYPES and params.get("cycle_momentum", True)


def monitor_name(config: Mapping[str, Any]) -> str | None:
    """The metric name a metric-driven root config reads, None for the others."""
    if config["type"] not in METRIC_TYPES:
        return None
    return config.get("monitor", DEFAULT_MONITOR[config["type"]])


@dataclass
class TorchError:
    """An exception torch raised: at construction (step 0) or at a step."""

    step: int
    type: str
    message: str


@dataclass
class TorchRun:
    """What torch's param groups held after construction (index 0) and after each step."""

    lr: list[list[float]] = field(default_factory=list)
    momentum: list[list[float]] | None = None
    error: TorchError | None = None


def _group_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def _group_momenta(optimizer: torch.optim.Optimizer) -> list[float]:
    return [
        group["betas"][0] if "betas" in group else group["momentum"]
        for group in optimizer.param_groups
    ]


def run_in_torch(
    config: Mapping[str, Any],
    param_groups: Sequence[Mapping[str, Any]],
    steps: int,
    metrics: Sequence[float] | None = None,
    lr_edits: Mapping[int, Sequence[float]] | None = None,
) -> TorchRun:
    """Construct, then step ``steps`` times, recording the groups after each.

    ``metrics[i]`` is passed to step i+1 of a metric-driven root scheduler.
    ``lr_edits[k]`` is written into ``param_groups[i]["lr"]`` right after step k
    (k = 0: after construction), the hand edit that API.md's ``POST /lr`` mirrors.
    Stops at the first exception and records it instead of raising.
    """
    edits = lr_edits or {}
    record_momentum = cycles_momentum(config)
    run = TorchRun(momentum=[] if record_momentum else None)
    with warnings.catch_warnings():
        # torch warns that the scheduler steps before the optimizer: irrelevant here.
        warnings.simplefilter("ignore")
        try:
            optimizer = make_optimizer(param_groups)
            scheduler = make_scheduler(config, optimizer)
        except Exception as error:  # every torch refusal is data here
            run.error = TorchError(0, type(error).__name__, str(error))
            return run
        for step in range(steps + 1):
            if step > 0:
                try:
                    if monitor_name(config) is not None:
                        assert metrics is not None, "a metric-driven case needs metrics"
                        scheduler.step(metrics[step - 1])
                    else:
                        scheduler.step()
                except Exception as error:
                    run.error = TorchError(step, type(error).__name__, str(error))
                    return run
            run.lr.append(_group_lrs(optimizer))
            if run.momentum is not None:
                run.momentum.append(_group_momenta(optimizer))
            if step in edits:
                for group, lr in zip(optimizer.param_groups, edits[step], strict=True):
                    group["lr"] = lr
    return run
