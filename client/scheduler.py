"""``RemoteLRScheduler``: torch's LR-scheduler interface, with the schedule kept by lrkeeper.

The schedule's state lives in the service, not in the process: constructing the
scheduler again after a crash (on any machine, in any rank) picks the run up at
the step the service holds, and writes that step's lr — and momentum or
``betas[0]`` when the schedule cycles them — back into the optimizer. torch is
never imported: an optimizer is anything with torch's ``param_groups`` (a list of
dicts holding ``lr``, and ``momentum`` for SGD-like or ``betas`` for Adam-like groups).
"""

import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, SupportsFloat

from client.api import LRKeeper, Run, StepAnswer, as_number
from client.errors import CheckpointAheadOfRun
from client.torch_flavour import torch_flavour

# The optimizer-group key holding what this client registered for a run, so an
# optimizer restored from a checkpoint (whose lr is mid-schedule) still registers
# the run's original groups and is recognised as the same run. torch keeps its
# own ``initial_lr`` in the groups for the same reason.
REGISTERED_KEY = "lrkeeper_registered"

# The metric name a bare number is sent under, for configs that name no monitor.
_DEFAULT_MONITORS = {"ReduceLROnPlateau": "val_loss", "LRRangeTest": "loss"}
_FALLBACK_MONITOR = "loss"


class Optimizer(Protocol):
    """What the scheduler needs of an optimizer: torch's ``param_groups``."""

    param_groups: list[dict[str, Any]]


# A number (or anything with __float__, such as a 0-dim tensor), or names to numbers.
Metrics = SupportsFloat | Mapping[str, SupportsFloat] | None


class RemoteLRScheduler:
    """A drop-in for ``torch.optim.lr_scheduler.*``, backed by the run ``run_id``.

    ``scheduler`` is the run's config, ``{"type": "OneCycleLR", "params": {...}}``
    (``"monitor"`` beside them for metric-driven types): the run is created from it
    and the optimizer's groups, or found as it is if it exists with the same config
    (so every rank may construct it). ``scheduler=None`` attaches to an existing run.
    Either way the optimizer ends up holding the run's current values and
    ``last_epoch`` is the run's current step.

    ``monitor`` names the metric a bare number passed to :meth:`step` is sent
    under; by default the run's own ``monitor`` (``val_loss`` for ReduceLROnPlateau).
    """

    last_epoch: int
    _last_lr: list[float]

    def __init__(
        self,
        optimizer: Optimizer,
        run_id: str,
        scheduler: Mapping[str, Any] | None = None,
        *,
        client: LRKeeper | None = None,
        url: str | None = None,
        token: str | None = None,
        monitor: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        groups = getattr(optimizer, "param_groups", None)
        if not isinstance(groups, list) or not groups:
            raise TypeError(f"{type(optimizer).__name__} is not an optimizer: no param_groups")
        if client is not None and (url is not None or token is not None):
            raise ValueError("pass either client or url/token, not both")
        self.optimizer = optimizer
        self.run_id = run_id
        self._owns_client = client is None
        self.client = client if client is not None else LRKeeper(url, token)
        self.worker = _worker_id()
        self.last_answer: StepAnswer | None = None

        try:
            if scheduler is None:
                run = self.client.get_run(run_id)
            else:
                run = self.client.put_run(run_id, scheduler, self._registered_groups(), metadata)
            if len(run.lr) != len(groups):
                raise ValueError(
                    f"run {run_id!r} has {len(run.lr)} param groups, the optimizer {len(groups)}"
                )
        except BaseException:
            self.close()
            raise
        self.scheduler_config: dict[str, Any] = run.scheduler
        self.monitor = _resolve_monitor(run.scheduler, monitor)
        self.base_lrs: list[float] = _base_lrs(run)
        # Also torch's LRScheduler (or ReduceLROnPlateau) when torch is loaded, for frameworks.
        self.__class__ = torch_flavour(type(self), run.scheduler)
        self._apply(run.step, run.lr, run.momentum)

    # -- torch's interface --------------------------------------------------------------

    def step(self, metrics: Metrics = None) -> StepAnswer:
        """Report one finished step (with its metrics) and take the lr the run answers.

        ``metrics`` is a number (sent under :attr:`monitor`, as
        ``ReduceLROnPlateau.step(val_loss)`` takes it), a mapping of names to
        numbers, or nothing. Every rank may call it for every step: a step the run
        already has answers what it recorded, so all ranks hold the same values.

        Returns the service's answer (``replayed``, ``events``, and ``stop`` for a
        range test); torch's ``step()`` returns None, so code written for it is unaffected.
        If the call fails (even after retries) nothing in the optimizer has changed.
        """
        answer = self.client.report_step(
            self.run_id, self.last_epoch + 1, self._metrics_body(metrics), worker=self.worker
        )
        self.last_answer = answer
        self._apply(answer.step, answer.lr, answer.momentum)
        return answer

    def get_last_lr(self) -> list[float]:
        """The lr of each group after the last step (torch's ``get_last_lr()``)."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume this run at this step; plain data, torch-savable."""
        return {
            "run_id": self.run_id,
            "last_epoch": self.last_epoch,
            "base_lrs": list(self.base_lrs),
            "_last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume at the checkpoint's step, so model, optimizer and schedule agree again.

        A run that went on past the checkpoint is rewound to it (the later steps
        stay in its history, superseded); a run that never reached it raises
        :class:`~client.errors.CheckpointAheadOfRun`. Load it on every rank before
        any rank steps on (DDP's first backward pass already waits for all ranks).
        """
        saved_run_id = state_dict.get("run_id")
        if saved_run_id != self.run_id:
            raise ValueError(
                f"the state is from run {saved_run_id!r}, this scheduler drives {self.run_id!r}"
            )
        checkpoint_step = int(state_dict["last_epoch"])
        run = self.client.get_run(self.run_id)
        if checkpoint_step > run.step:
            raise CheckpointAheadOfRun(self.run_id, checkpoint_step, run.step)
        if checkpoint_step < run.step:
            run = self.client.rewind(self.run_id, checkpoint_step)
        self._apply(run.step, run.lr, run.momentum)

    # -- beyond torch -------------------------------------------------------------------

    def sync(self, step: int | None = None) -> None:
        """Take the run's values without reporting anything: its current values (which
        include a ``set_lr`` made since the last step), or those recorded at ``step``.

        This is how ranks that do not report follow the one that does.
        """
        answer = (
            self.client.current_lr(self.run_id)
            if step is None
            else self.client.lr_at(self.run_id, step)
        )
        self._apply(answer.step, answer.lr, answer.momentum)

    def finish(self, status: str = "finished") -> None:
        """Mark the run finished (or ``failed``) at the end of training."""
        self.client.finish(self.run_id, status)

    def close(self) -> None:
        """Close the connection this scheduler opened (not a client that was passed in)."""
        if self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        return f"RemoteLRScheduler({self.run_id!r}, last_epoch={self.last_epoch}, {self.client!r})"

    # -- internals ----------------------------------------------------------------------

    def _registered_groups(self) -> list[dict[str, Any]]:
        """The groups to create the run from: what was registered for this run before the
        optimizer was checkpointed, else the optimizer's values now. Remembers them."""
        registered = []
        for group in self.optimizer.param_groups:
            remembered = group.get(REGISTERED_KEY)
            if isinstance(remembered, Mapping) and remembered.get("run_id") == self.run_id:
                values = dict(remembered["group"])
            else:
                values = _group_values(group)
                group[REGISTERED_KEY] = {"run_id": self.run_id, "group": values}
            registered.append(values)
        return registered

    def _apply(self, step: int, lrs: Sequence[float], momenta: Sequence[float] | None) -> None:
        """Write the run's values into the optimizer as torch's schedulers do."""
        groups = self.optimizer.param_groups
        for group, lr in zip(groups, lrs, strict=True):
            _write(group, "lr", lr)
        if momenta is not None:
            for group, momentum in zip(groups, momenta, strict=True):
                if "betas" in group:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    _write(group, "momentum", momentum)
        self.last_epoch = step
        self._last_lr = list(lrs)

    def _metrics_body(self, metrics: Metrics) -> dict[str, Any] | None:
        if metrics is None:
            return None
        if isinstance(metrics, Mapping):
            return {str(name): as_number(value) for name, value in metrics.items()}
        return {self.monitor: as_number(metrics)}


def _group_values(group: Mapping[str, Any]) -> dict[str, Any]:
    """lr plus momentum (SGD-like) or betas (Adam-like): what the service schedules."""
    values: dict[str, Any] = {"lr": as_number(group["lr"])}
    if "betas" in group:
        values["betas"] = [as_number(beta) for beta in group["betas"]]
    elif "momentum" in group:
        values["momentum"] = as_number(group["momentum"])
    return values


def _write(group: dict[str, Any], key: str, value: float) -> None:
    """A tensor-valued lr (torch's capturable optimizers) is filled in place, as torch does."""
    current = group.get(key)
    if current is not None and hasattr(current, "fill_"):
        current.fill_(value)
    else:
        group[key] = value


def _resolve_monitor(config: Mapping[str, Any], requested: str | None) -> str:
    configured = config.get("monitor")
    if requested is not None and configured is not None and requested != configured:
        raise ValueError(
            f"monitor={requested!r}, but the run's scheduler reads {configured!r}; "
            "a bare number must go under the name the scheduler monitors"
        )
    if requested is not None:
        return requested
    if configured is not None:
        return str(configured)
    return _DEFAULT_MONITORS.get(str(config.get("type")), _FALLBACK_MONITOR)


def _base_lrs(run: Run) -> list[float]:
    """torch's ``base_lrs``: the scheduler's own when its state has them (CyclicLR and
    OneCycleLR set their own), else the lrs the run was created with."""
    state_base_lrs = run.state.get("base_lrs")
    if isinstance(state_base_lrs, list) and len(state_base_lrs) == len(run.lr):
        return list(state_base_lrs)
    return [group["lr"] for group in run.param_groups]


def _worker_id() -> str:
    """host:pid, plus :rank under torchrun/SLURM-style launchers, for the run's history."""
    parts = [socket.gethostname(), str(os.getpid())]
    rank = os.environ.get("RANK")
    if rank is not None:
        parts.append(rank)
    return ":".join(parts)
