"""``RemoteLRScheduler``: torch's LR-scheduler interface, with the schedule kept by lrkeeper.

The schedule's state lives in the service, not in the process: constructing the
scheduler again after a crash (on any machine, in any rank) picks the run up at
the step the service holds, and writes that step's lr — and momentum or
``betas[0]`` when the schedule cycles them — back into the optimizer. torch is
never imported: an optimizer is anything with torch's ``param_groups`` (a list of
dicts holding ``lr``, and ``momentum`` for SGD-like or ``betas`` for Adam-like groups).

Pipelined (the default): :meth:`RemoteLRScheduler.step` hands its report to a
background sender (client.pipeline) and returns at once; the answer is written into
the optimizer just before anything uses it — torch's ``optimizer.step()`` (through
``register_step_pre_hook``), a read of a group's ``lr`` / ``momentum`` / ``betas``,
``optimizer.state_dict()``, or the scheduler's own :meth:`~RemoteLRScheduler.get_last_lr`,
:meth:`~RemoteLRScheduler.state_dict`, :meth:`~RemoteLRScheduler.sync`. In a training
loop the answer is usually in before that: forward and backward take longer than a
round trip. A failed report raises its typed exception at the first of those points,
so an optimizer never steps with values the run did not answer.

How reads of the groups wait: each group dict is replaced, once, by a dict subclass
(:class:`_ScheduledGroup`) whose reads of the scheduled keys first take the answer
still on its way. That is also what makes an optimizer without torch's hooks (any
object with ``param_groups``) pipelined. An optimizer whose groups are not dicts
gets the blocking scheduler.

Ranks: under DDP every rank reports its own metric, and a ranked run
(``rank=``/``world_size=``, or torch.distributed when it is initialised) decides each
metric-driven step once from all of them. The scheduler's report then waits for that
decision, in the sender thread when pipelined (the optimizer's next step waits for it as
for any answer on its way) or in :meth:`~RemoteLRScheduler.step` when blocking.
"""

import os
import random
import socket
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, SupportsFloat

from client.api import LrAnswer, LRKeeper, Ranks, Run, StepAnswer, as_number
from client.errors import CheckpointAheadOfRun, DeadlineExceeded, LRKeeperError, NotFound
from client.pipeline import PendingStep, StepSender
from client.torch_flavour import torch_flavour
from client.wire import step_reporter_for

# The optimizer-group key holding what this client registered for a run, so an
# optimizer restored from a checkpoint (whose lr is mid-schedule) still registers
# the run's original groups and is recognised as the same run. torch keeps its
# own ``initial_lr`` in the groups for the same reason.
REGISTERED_KEY = "lrkeeper_registered"

# The metric name a bare number is sent under, for configs that name no monitor.
_DEFAULT_MONITORS = {
    "ReduceLROnPlateau": "val_loss",
    "LRRangeTest": "loss",
    "hf:reduce_lr_on_plateau": "eval_loss",
}
_FALLBACK_MONITOR = "loss"
# The hf: types whose transformers schedule reads ``optimizer.defaults["lr"]``: the run
# takes it as the param ``lr_init`` (the registry's types with that param; a test keeps
# the two equal).
_READS_DEFAULT_LR = frozenset(
    {"hf:polynomial", "hf:cosine_with_min_lr", "hf:cosine_warmup_with_min_lr"}
)
# The group keys a schedule writes: reading one of them takes the answer on its way first.
_SCHEDULED_KEYS = frozenset({"lr", "momentum", "betas"})


class Optimizer(Protocol):
    """What the scheduler needs of an optimizer: torch's ``param_groups``."""

    param_groups: list[dict[str, Any]]


# A number (or anything with __float__, such as a 0-dim tensor), or names to numbers.
Metrics = SupportsFloat | Mapping[str, SupportsFloat] | None
Reduce = Literal["mean", "min", "max", "sum"]


@dataclass(frozen=True)
class _RankIdentity:
    """Which rank of how many this process is, and whether the caller said so (rather
    than torch.distributed): a rank asked for by name is an error to ignore."""

    rank: int
    world_size: int
    explicit: bool


class RemoteLRScheduler:
    """A drop-in for ``torch.optim.lr_scheduler.*``, backed by the run ``run_id``.

    ``scheduler`` is the run's config, ``{"type": "OneCycleLR", "params": {...}}``
    (``"monitor"`` beside them for metric-driven types): the run is created from it
    and the optimizer's groups, or found as it is if it exists with the same config
    (so every rank may construct it). ``scheduler=None`` attaches to an existing run.
    Either way the optimizer ends up holding the run's current values and
    ``last_epoch`` is the run's current step.

    An ``hf:`` type whose transformers schedule reads ``optimizer.defaults["lr"]``
    (``hf:polynomial``, ``hf:cosine_with_min_lr``, ``hf:cosine_warmup_with_min_lr``)
    is sent with ``lr_init`` set to it unless the config names one.

    ``monitor`` names the metric a bare number passed to :meth:`step` is sent
    under; by default the run's own ``monitor`` (``val_loss`` for ReduceLROnPlateau).

    ``pipelined`` (default True): :meth:`step` returns at once and the answer reaches
    the optimizer before its next step (module docstring). ``pipelined=False`` makes
    :meth:`step` wait for the answer and write it before returning, and raise there if
    the report fails: for code that must know the report is recorded when ``step()``
    returns, or an optimizer that reads its groups in ways no dict method sees.

    Ranks: with ``rank`` and ``world_size`` — or, when neither is given, from
    ``torch.distributed`` once it is initialised with more than one process — the run is
    created ranked (``ranks={"world_size", "reduce", "timeout_s"}`` in its PUT) and every
    report says which rank sends it. A metric-driven step is then decided once, from
    every rank's metric folded by ``reduce`` (``"mean"`` by default, or ``"min"``,
    ``"max"``, ``"sum"``), or by the ranks present ``rank_timeout_s`` seconds (the
    service's default: 300) after the step's first report; each rank's report waits for
    that decision. ``ranks=False`` opts out: for jobs where one rank alone reports (the
    others follow with :meth:`sync`), which a ranked run would hold waiting for ranks
    that never report. ``ranks=True`` insists on ranked mode. Attaching to an existing run
    (``scheduler=None``) follows the run: ranked if it was created ranked.
    """

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
        pipelined: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        reduce: Reduce | None = None,
        rank_timeout_s: float | None = None,
        ranks: bool | None = None,
    ) -> None:
        groups = getattr(optimizer, "param_groups", None)
        if not isinstance(groups, list) or not groups:
            raise TypeError(f"{type(optimizer).__name__} is not an optimizer: no param_groups")
        if client is not None and (url is not None or token is not None):
            raise ValueError("pass either client or url/token, not both")
        identity = _rank_identity(rank, world_size, ranks)
        if identity is None and (reduce is not None or rank_timeout_s is not None):
            raise ValueError(
                "reduce= and rank_timeout_s= configure a ranked run: pass rank= and "
                "world_size= (or initialise torch.distributed)"
            )
        self.optimizer = optimizer
        self.run_id = run_id
        self._owns_client = client is None
        self.client = client if client is not None else LRKeeper(url, token)
        self.worker = _worker_id()
        self.last_answer: StepAnswer | None = None
        # The step whose values the optimizer holds, and the last one handed to the sender.
        self._acknowledged_step = 0
        self._reported_step = 0
        self._last_lr: list[float] = []
        self._pending: PendingStep | None = None
        # Bumped when a failed report has been raised: later reports are sent again.
        self._generation = 0
        self._sender: StepSender | None = None
        self._hook_handles: list[Any] = []
        # Set from the run below: the rank its reports carry, and the run's ranks.
        self.rank: int | None = None
        self.ranks: Ranks | None = None

        try:
            if scheduler is None:
                run = self.client.get_run(run_id)
            else:
                config = with_optimizer_default_lr(scheduler, optimizer)
                ranks_body = _ranks_body(identity, reduce, rank_timeout_s)
                run = self.client.put_run(
                    run_id, config, self._registered_groups(), metadata, ranks=ranks_body
                )
                if ranks_body is not None and run.ranks is None:
                    raise LRKeeperError(
                        f"{self.client.url} answered run {run_id!r} without the ranks it was "
                        "created with: the service predates ranked runs"
                    )
            if len(run.lr) != len(groups):
                raise ValueError(
                    f"run {run_id!r} has {len(run.lr)} param groups, the optimizer {len(groups)}"
                )
            self.rank = _rank_for(run, identity, ranks)
            self.ranks = run.ranks
        except BaseException:
            self.close()
            raise
        self.scheduler_config: dict[str, Any] = run.scheduler
        self.monitor = _resolve_monitor(run.scheduler, monitor)
        self.base_lrs: list[float] = _base_lrs(run)
        # Also torch's LRScheduler (or ReduceLROnPlateau) when torch is loaded, for frameworks.
        self.__class__ = torch_flavour(type(self), run.scheduler)
        self._apply(run.step, run.lr, run.momentum)
        self.pipelined = pipelined and all(isinstance(group, dict) for group in groups)
        if self.pipelined:
            self._sender = StepSender(
                step_reporter_for(self.client),
                run_id,
                self.worker,
                rank=self.rank,
                ranks=self.ranks,
            )
            self._wrap_groups()
            self._hook_handles = _register_hooks(optimizer, weakref.ref(self))

    # -- torch's interface --------------------------------------------------------------

    @property
    def last_epoch(self) -> int:
        """The number of steps reported, torch's ``last_epoch``; never waits.

        Pipelined, a report still on its way is counted: a loop ``while
        scheduler.last_epoch < total_steps`` keeps its overlap. Should that report fail,
        the failure is raised where its answer is needed, and ``last_epoch`` falls back
        to the run's acknowledged step.
        """
        return self._reported_step

    def step(self, metrics: Metrics = None) -> StepAnswer | PendingStep:
        """Report one finished step (with its metrics) and take the lr the run answers.

        ``metrics`` is a number (sent under :attr:`monitor`, as
        ``ReduceLROnPlateau.step(val_loss)`` takes it), a mapping of names to
        numbers, or nothing. Every rank may call it for every step: a step the run
        already has answers what it recorded, so all ranks hold the same values. On a
        ranked run a metric-driven step's answer is its decision from every rank's
        metric: it comes once the other ranks have reported (or the run's timeout has
        passed), and ``RanksUndecided`` is raised if it never does.

        Pipelined, it returns a :class:`~client.pipeline.PendingStep` at once (its
        ``step`` is known; ``replayed``, ``events``, ``stop``, ``lr`` wait for the answer),
        after raising the failure of an earlier report if that is already known.
        Blocking, it returns the service's :class:`~client.api.StepAnswer`, and if the
        call fails (even after retries) nothing in the optimizer has changed. torch's
        ``step()`` returns None, so code written for it is unaffected either way.
        """
        body = self._metrics_body(metrics)  # converted now: a tensor may change later
        if self._sender is None:
            answer = self.client.report_step(
                self.run_id,
                self._reported_step + 1,
                body,
                worker=self.worker,
                rank=self.rank,
                wait=None if self.ranks is None else self.ranks.decision_wait,
                ranks_timeout_s=None if self.ranks is None else self.ranks.timeout_s,
            )
            self.last_answer = answer
            self._apply(answer.step, answer.lr, answer.momentum)
            return answer
        if self._pending is not None and self._pending.done():
            self._settle()  # an answer already in costs nothing; a failure is raised now
        pending = self._sender.submit(self._reported_step + 1, body, self._generation)
        self._pending = pending
        self._reported_step = pending.step
        return pending

    def get_last_lr(self) -> list[float]:
        """The lr of each group after the last step (torch's ``get_last_lr()``)."""
        self._settle()
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume this run at this step; plain data, torch-savable."""
        self._settle()
        return {
            "run_id": self.run_id,
            "last_epoch": self._acknowledged_step,
            "base_lrs": list(self.base_lrs),
            "_last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume at the checkpoint's step, so model, optimizer and schedule agree again.

        A run that went on past the checkpoint is rewound to it (the later steps
        stay in its history, superseded); a run that never reached it raises
        :class:`~client.errors.CheckpointAheadOfRun`. Load it on every rank before
        any rank steps on (DDP's first backward pass already waits for all ranks).
        A report still on its way is answered first, so it cannot land after the rewind.
        """
        saved_run_id = state_dict.get("run_id")
        if saved_run_id != self.run_id:
            raise ValueError(
                f"the state is from run {saved_run_id!r}, this scheduler drives {self.run_id!r}"
            )
        self._settle()
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

        This is how ranks that do not report follow the one that does. A ``step`` the
        run has not reached yet is waited for, up to the retry deadline: the rank that
        reports may have handed it to its sender and not yet sent it. On a ranked run, a
        step waiting for ranks is waited for until its decision (up to the run's timeout
        and a margin).
        """
        self._settle()
        answer = self.client.current_lr(self.run_id) if step is None else self._recorded(step)
        self._apply(answer.step, answer.lr, answer.momentum)

    def finish(self, status: str = "finished") -> None:
        """Mark the run finished (or ``failed``) at the end of training, once the last
        report is recorded (a step reported after it would be refused)."""
        self._settle()
        self.client.finish(self.run_id, status)

    def close(self) -> None:
        """Take the answer still on its way (raising its failure), end the sender thread,
        and close the connection this scheduler opened (not a client that was passed in)."""
        try:
            self._settle()
        finally:
            if self._sender is not None:
                self._sender.close()
            for handle in self._hook_handles:
                handle.remove()
            self._hook_handles.clear()
            if self._owns_client:
                self.client.close()

    def __del__(self) -> None:
        # No waiting in a finalizer: the sender sends what it holds and ends on its own.
        sender = getattr(self, "_sender", None)
        if sender is not None:
            sender.close(timeout=0)
        for handle in getattr(self, "_hook_handles", ()):
            handle.remove()

    def __repr__(self) -> str:
        return f"RemoteLRScheduler({self.run_id!r}, last_epoch={self.last_epoch}, {self.client!r})"

    # -- internals ----------------------------------------------------------------------

    def _settle(self) -> None:
        """Wait for the answer to the last report handed over, and write it into the
        optimizer; the reports go in order, so every earlier one is answered too.

        A failed report is raised here, once: the scheduler is then back at the run's
        acknowledged step, and the reports handed over after the failed one are dropped.
        """
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        try:
            answer = pending.result()
        except BaseException:
            if not pending.done():  # interrupted while waiting (Ctrl-C): nothing is decided
                self._pending = pending
                raise
            self._reported_step = self._acknowledged_step
            self._generation += 1
            raise
        self.last_answer = answer
        self._apply(answer.step, answer.lr, answer.momentum)

    def _recorded(self, step: int) -> LrAnswer:
        """``lr_at(step)``, waiting while the run has not reached ``step`` (see :meth:`sync`).

        A step the run has passed but no longer holds (a rewind superseded it) is
        ``NotFound`` at once; waiting would not bring it back.
        """
        policy = self.client.retry
        started = time.monotonic()
        attempts = 0
        backoff = policy.initial_backoff
        ranks = self.ranks
        # A ranked run's next step, still waiting for ranks, is long-polled until decided.
        wait = None if ranks is None else ranks.decision_wait
        timeout_s = None if ranks is None else ranks.timeout_s
        while True:
            attempts += 1
            try:
                return self.client.lr_at(self.run_id, step, wait=wait, ranks_timeout_s=timeout_s)
            except NotFound as missing:
                if self.client.current_lr(self.run_id).step >= step:
                    # Reached now: recorded since the first look, or superseded for good.
                    return self.client.lr_at(self.run_id, step)
                elapsed = time.monotonic() - started
                wait = random.uniform(0, backoff)
                if elapsed + wait >= policy.deadline:
                    raise DeadlineExceeded(
                        f"GET lr at step {step}",
                        attempts=attempts,
                        elapsed=elapsed,
                        deadline=policy.deadline,
                        last_error=missing,
                    ) from missing
                time.sleep(wait)
                backoff = min(backoff * 2, policy.max_backoff)

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

    def _wrap_groups(self) -> None:
        """Make every plain-dict group a :class:`_ScheduledGroup` of this scheduler: at
        construction, and again after ``optimizer.load_state_dict`` put plain dicts back."""
        groups = self.optimizer.param_groups
        for index, group in enumerate(groups):
            if type(group) is dict:
                groups[index] = _ScheduledGroup(group, _settler(weakref.ref(self)))

    def _apply(self, step: int, lrs: Sequence[float], momenta: Sequence[float] | None) -> None:
        """Write the run's values into the optimizer as torch's schedulers do."""
        groups = self.optimizer.param_groups
        for group, lr in zip(groups, lrs, strict=True):
            _write(group, "lr", lr)
        if momenta is not None:
            for group, momentum in zip(groups, momenta, strict=True):
                if "betas" in group:
                    betas = _read(group, "betas")
                    _write(group, "betas", (momentum, *betas[1:]))
                else:
                    _write(group, "momentum", momentum)
        self._acknowledged_step = step
        self._reported_step = step
        self._last_lr = list(lrs)

    def _metrics_body(self, metrics: Metrics) -> dict[str, Any] | None:
        if metrics is None:
            return None
        if isinstance(metrics, Mapping):
            return {str(name): as_number(value) for name, value in metrics.items()}
        return {self.monitor: as_number(metrics)}


class _ScheduledGroup(dict[str, Any]):
    """An optimizer param group that takes its scheduler's answer on the way before it
    shows (or lets anyone overwrite) a scheduled value.

    torch's optimizers and training code read ``group["lr"]``; each read of ``lr``,
    ``momentum`` or ``betas`` — and every method that hands out all values at once —
    first calls ``settle``. A hand edit (``group["lr"] = x``) settles first too, so it
    wins over the answer, as it did when the answer was written inside ``step()``.
    Pickled or deep-copied it is a plain dict: no thread or scheduler travels with it.
    """

    __slots__ = ("_settle",)

    def __init__(self, group: Mapping[str, Any], settle: Callable[[], None]) -> None:
        super().__init__(group)
        self._settle = settle

    def __getitem__(self, key: str) -> Any:
        if key in _SCHEDULED_KEYS:
            self._settle()
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in _SCHEDULED_KEYS:
            self._settle()
        return super().get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in _SCHEDULED_KEYS:
            self._settle()
        super().__setitem__(key, value)

    def items(self) -> Any:
        self._settle()
        return super().items()

    def values(self) -> Any:
        self._settle()
        return super().values()

    def copy(self) -> dict[str, Any]:
        self._settle()
        return dict(super().items())

    def __eq__(self, other: object) -> bool:
        self._settle()
        return super().__eq__(other)

    def __ne__(self, other: object) -> bool:
        self._settle()
        return super().__ne__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._settle()
        return super().__repr__()

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.copy(),))


def _settler(scheduler: "weakref.ref[RemoteLRScheduler]") -> Callable[[], None]:
    """``scheduler._settle`` without keeping the scheduler alive (the optimizer holds this)."""

    def settle() -> None:
        alive = scheduler()
        if alive is not None and alive._pending is not None:
            alive._settle()

    return settle


def _register_hooks(optimizer: Optimizer, scheduler: "weakref.ref[RemoteLRScheduler]") -> list[Any]:
    """torch's optimizer hooks, where the optimizer has them: take the answer before the
    optimizer steps, saves or loads its state, and re-wrap the groups a load replaced."""
    settle = _settler(scheduler)

    def before_step(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
        settle()
        rewrap()

    def before_state_dict(_optimizer: Any) -> None:
        settle()

    def before_load(_optimizer: Any, _state_dict: Any) -> None:
        settle()

    def rewrap(_optimizer: Any = None) -> None:
        alive = scheduler()
        if alive is not None:
            alive._wrap_groups()

    handles = []
    for method_name, hook in (
        ("register_step_pre_hook", before_step),
        ("register_state_dict_pre_hook", before_state_dict),
        ("register_load_state_dict_pre_hook", before_load),
        ("register_load_state_dict_post_hook", rewrap),
    ):
        register = getattr(optimizer, method_name, None)
        if callable(register):
            handles.append(register(hook))
    return handles


def _rank_identity(
    rank: int | None, world_size: int | None, ranks: bool | None
) -> _RankIdentity | None:
    """This process's rank as the caller gives it, else torch.distributed's when it is
    initialised with more than one process; None when not ranked (or ``ranks=False``)."""
    named = rank is not None or world_size is not None
    if ranks is False:
        if named:
            raise ValueError("ranks=False, but rank= or world_size= was given")
        return None
    distributed = _distributed_rank()
    if named:
        if rank is None or world_size is None:
            if distributed is None:
                raise ValueError(
                    "pass both rank= and world_size= (torch.distributed is not initialised)"
                )
            rank = distributed[0] if rank is None else rank
            world_size = distributed[1] if world_size is None else world_size
        if isinstance(rank, bool) or isinstance(world_size, bool):
            raise TypeError("rank and world_size are ints")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is not one of world_size={world_size} ranks")
        return _RankIdentity(rank, world_size, explicit=True)
    if distributed is not None and distributed[1] > 1:
        return _RankIdentity(*distributed, explicit=False)
    if ranks is True:
        raise ValueError(
            "ranks=True, but no rank: pass rank= and world_size=, or initialise "
            "torch.distributed with more than one process"
        )
    return None


def _distributed_rank() -> tuple[int, int] | None:
    """``(get_rank(), get_world_size())`` of an initialised torch.distributed, never
    importing torch: a process group exists only in a process that loaded it."""
    torch = sys.modules.get("torch")
    distributed = getattr(torch, "distributed", None) if torch is not None else None
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return None
    return int(distributed.get_rank()), int(distributed.get_world_size())


def _ranks_body(
    identity: _RankIdentity | None, reduce: str | None, timeout_s: float | None
) -> dict[str, Any] | None:
    """The PUT's ``ranks``: the service's default timeout unless one was asked for."""
    if identity is None:
        return None
    body: dict[str, Any] = {"world_size": identity.world_size, "reduce": reduce or "mean"}
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    return body


def _rank_for(run: Run, identity: _RankIdentity | None, ranks: bool | None) -> int | None:
    """The rank this scheduler's reports carry: only a ranked run takes one (the service
    refuses ``rank`` on any other), and a ranked run's metric-driven steps need it."""
    if run.ranks is None:
        if identity is not None and (identity.explicit or ranks is True):
            raise ValueError(
                f"run {run.run_id!r} is not ranked, but rank={identity.rank} was asked for"
            )
        return None
    if identity is None:
        raise ValueError(
            f"run {run.run_id!r} is ranked (world_size={run.ranks.world_size}): pass rank= "
            "and world_size=, or initialise torch.distributed"
        )
    if identity.world_size != run.ranks.world_size:
        raise ValueError(
            f"run {run.run_id!r} has world_size={run.ranks.world_size}, this job "
            f"{identity.world_size}"
        )
    return identity.rank


def _group_values(group: Mapping[str, Any]) -> dict[str, Any]:
    """lr plus momentum (SGD-like) or betas (Adam-like): what the service schedules."""
    values: dict[str, Any] = {"lr": as_number(group["lr"])}
    if "betas" in group:
        values["betas"] = [as_number(beta) for beta in group["betas"]]
    elif "momentum" in group:
        values["momentum"] = as_number(group["momentum"])
    return values


def _read(group: dict[str, Any], key: str) -> Any:
    """``group[key]`` past a :class:`_ScheduledGroup`'s settling: its caller is settling."""
    return dict.__getitem__(group, key) if isinstance(group, dict) else group[key]


def _write(group: dict[str, Any], key: str, value: Any) -> None:
    """A tensor-valued lr (torch's capturable optimizers) is filled in place, as torch does."""
    current = dict.get(group, key) if isinstance(group, dict) else group.get(key)
    if current is not None and not isinstance(current, float) and hasattr(current, "fill_"):
        current.fill_(value)
    elif isinstance(group, dict):
        dict.__setitem__(group, key, value)
    else:
        group[key] = value


def with_optimizer_default_lr(config: Mapping[str, Any], optimizer: Any) -> Mapping[str, Any]:
    """``config`` with ``lr_init`` = the optimizer's default lr wherever an ``hf:`` type
    reads it and the config leaves it out, composites' children included.

    transformers reads ``optimizer.defaults["lr"]``, which only the client can see; the
    service's default (the first group's lr) is the same for most optimizers, not all.
    """
    defaults = getattr(optimizer, "defaults", None)
    default_lr = defaults.get("lr") if isinstance(defaults, Mapping) else None
    if not isinstance(default_lr, int | float) or isinstance(default_lr, bool):
        return config
    return _fill_lr_init(config, default_lr)


def _fill_lr_init(config: Mapping[str, Any], default_lr: float) -> Mapping[str, Any]:
    params = config.get("params")
    if not isinstance(params, Mapping):
        return config
    if config.get("type") in _READS_DEFAULT_LR and "lr_init" not in params:
        return {**config, "params": {**params, "lr_init": default_lr}}
    children = params.get("schedulers")
    if isinstance(children, list):
        filled = [
            _fill_lr_init(child, default_lr) if isinstance(child, Mapping) else child
            for child in children
        ]
        return {**config, "params": {**params, "schedulers": filled}}
    return config


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
