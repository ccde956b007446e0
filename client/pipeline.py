"""The pipelined scheduler's background sender, and the answer it owes each report.

``RemoteLRScheduler.step()`` hands its report to a :class:`StepSender` and returns a
:class:`PendingStep`; the sender's one thread sends the reports in the order they
were handed over, each with the client's retry policy, and resolves each
``PendingStep`` with its answer or its failure. Because the reports go in order,
whoever needs the values after step N waits for N's answer alone: every earlier
report has been answered by then.

On a ranked run the sender's "answer" to a metric-driven step is its decision: the
reporter keeps asking (long-polling) while the other ranks have not reported, so the
thread waits there, and whoever needs the values — the optimizer's next step, first of
all — waits for the decision exactly as for any answer still on its way.

A failed report poisons the reports handed over after it (they fail with the same
error, unsent), because each was numbered on the assumption that the one before it
would be recorded: sending step N+1 after N failed would make the service catch up
over N without N's metrics. The scheduler starts a new *generation* once it has
raised the failure, and reports of the new generation are sent again.

Threads: one daemon thread per sender, started by its first report. A daemon, so a
training process that never closes its scheduler still exits; an ``atexit`` handler
first gives every sender up to :data:`EXIT_FLUSH_SECONDS` to send what it was handed,
and logs a warning naming what it could not send (those steps were never
acknowledged: the run stays at its last acknowledged step, where a restart resumes).
"""

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Final

from client.api import Event, Ranks, StepAnswer
from client.errors import TransportError
from client.wire import StepReporter

logger = logging.getLogger(__name__)

# Reports handed over but not yet answered; one more makes step() wait for a slot, so a
# loop that steps far faster than the service answers cannot grow memory without end.
QUEUE_BOUND: Final = 128
# At interpreter exit, how long all senders together may take to send what they hold.
EXIT_FLUSH_SECONDS: Final = 10.0
# How often a waiter checks that the sender it waits on is still alive.
_LIVENESS_CHECK_SECONDS = 1.0


class PendingStep:
    """The answer to one step report, once the background sender has it.

    ``step`` is known at once (the client numbers its reports). The other attributes
    of :class:`~client.api.StepAnswer` — ``lr``, ``momentum``, ``replayed``,
    ``events``, ``stop`` — wait for the answer; if the report failed they raise its
    failure (the client's typed exception), every time they are read, as
    :meth:`result` does.
    """

    __slots__ = ("_answer", "_failure", "_resolved", "_sender", "generation", "metrics", "step")

    def __init__(
        self,
        step: int,
        metrics: Mapping[str, float | int] | None,
        generation: int,
        sender: "StepSender",
    ) -> None:
        self.step = step
        self.metrics = metrics
        self.generation = generation
        self._sender = sender
        # Set by the sending thread, under the sender's lock, after _answer or _failure.
        self._resolved = False
        self._answer: StepAnswer | None = None
        self._failure: BaseException | None = None

    def done(self) -> bool:
        """Whether the answer (or the failure) is in: :meth:`result` will not wait."""
        return self._resolved

    def result(self) -> StepAnswer:
        """The service's answer, waiting for it if need be; raises the report's failure.

        The wait is bounded by the retry policy's deadline, after which the sender
        resolves the report with ``DeadlineExceeded``; on a ranked run, waiting for the
        other ranks is bounded by the run's ``timeout_s`` and a margin, after which it
        resolves with ``RanksUndecided``.
        """
        if not self._resolved:
            self._sender.wait_for(self)
        if self._failure is not None:
            raise self._failure
        assert self._answer is not None
        return self._answer

    @property
    def lr(self) -> list[float]:
        return self.result().lr

    @property
    def momentum(self) -> list[float] | None:
        return self.result().momentum

    @property
    def replayed(self) -> bool:
        return self.result().replayed

    @property
    def events(self) -> list[Event]:
        return self.result().events

    @property
    def stop(self) -> bool | None:
        return self.result().stop

    def __repr__(self) -> str:
        if not self._resolved:
            return f"PendingStep(step={self.step}, pending)"
        if self._failure is not None:
            return f"PendingStep(step={self.step}, failed: {self._failure!r})"
        return f"PendingStep(step={self.step}, {self._answer!r})"


class _Stop:
    """Placed after the last report: the thread sends everything before it, then ends."""


class StepSender:
    """One thread sending one scheduler's step reports, in order, through ``reporter``.

    One lock guards the queue and the answers. Handing a report over wakes the thread
    only when it is idle (a wake-up is the most expensive part of ``step()``: a
    futex, and on a VM often an interrupt to the other CPU); a thread still busy
    with the previous report finds the next one when it is done.
    """

    def __init__(
        self,
        reporter: StepReporter,
        run_id: str,
        worker: str,
        *,
        rank: int | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        self.run_id = run_id
        self.worker = worker
        # A ranked run's reports carry the rank and wait for each step's decision.
        self.rank = rank
        self.ranks = ranks
        self._reporter = reporter
        self._queue: deque[PendingStep | _Stop] = deque()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the queue has something for the thread
        self._room = threading.Condition(self._lock)  # fewer than QUEUE_BOUND unanswered
        self._answers = threading.Condition(self._lock)  # a report was resolved
        self._idle = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._unanswered = 0
        # Touched by the sending thread only.
        self._failed_generation: int | None = None
        self._failure: BaseException | None = None

    def submit(
        self, step: int, metrics: Mapping[str, float | int] | None, generation: int
    ) -> PendingStep:
        """Hand a report over; returns at once unless QUEUE_BOUND reports are unanswered."""
        pending = PendingStep(step, metrics, generation, self)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the step sender of run {self.run_id!r} is closed")
            while self._unanswered >= QUEUE_BOUND:
                self._room.wait()
            self._unanswered += 1
            self._queue.append(pending)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"lrkeeper-steps-{self.run_id}", daemon=True
                )
                self._thread.start()
                _LIVE_SENDERS.add(self)
            elif self._idle:
                self._work.notify()
        return pending

    def wait_for(self, pending: PendingStep) -> None:
        """Return once ``pending`` is resolved; a sender that died first is a TransportError."""
        with self._lock:
            while not pending._resolved:
                if not self._answers.wait(_LIVENESS_CHECK_SECONDS) and not self.alive():
                    raise TransportError(
                        f"step {pending.step}: the background sender stopped before answering"
                    )

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def unanswered(self) -> int:
        """Reports handed over and not yet answered."""
        with self._lock:
            return self._unanswered

    def close(self, timeout: float | None = None) -> bool:
        """Send what was handed over, then end the thread and the connection.

        Waits up to ``timeout`` seconds (``None``: as long as the retries take; ``0``:
        not at all, the thread finishes on its own). True when the thread has ended.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.append(_Stop())
                self._work.notify()
            thread = self._thread
        if thread is None:
            self._reporter.close()
            return True
        if timeout is None or timeout > 0:
            thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._queue:
                        self._idle = True
                        self._work.wait()
                    self._idle = False
                    item = self._queue.popleft()
                if isinstance(item, _Stop):
                    return
                answer, failure = self._send(item)
                with self._lock:
                    item._answer, item._failure = answer, failure
                    item._resolved = True
                    self._unanswered -= 1
                    self._answers.notify_all()
                    self._room.notify()
        finally:
            self._reporter.close()

    def _send(self, pending: PendingStep) -> tuple[StepAnswer | None, BaseException | None]:
        """The report's answer or its failure; after a failure, the rest of its generation
        fails unsent (module docstring)."""
        if pending.generation == self._failed_generation and self._failure is not None:
            return None, self._failure
        try:
            answer = self._reporter.report_step(
                self.run_id,
                pending.step,
                pending.metrics,
                worker=self.worker,
                rank=self.rank,
                wait=None if self.ranks is None else self.ranks.decision_wait,
                ranks_timeout_s=None if self.ranks is None else self.ranks.timeout_s,
            )
        except Exception as failure:
            self._failed_generation = pending.generation
            self._failure = failure
            return None, failure
        return answer, None


_LIVE_SENDERS: "weakref.WeakSet[StepSender]" = weakref.WeakSet()


def _flush_at_exit() -> None:
    """Give every sender still holding reports a bounded time to send them (see module doc)."""
    deadline = time.monotonic() + EXIT_FLUSH_SECONDS
    for sender in list(_LIVE_SENDERS):
        if sender.close(max(0.0, deadline - time.monotonic())):
            continue
        logger.warning(
            "lrkeeper: exiting with %d step report(s) of run %r unsent after %.0f s; the run "
            "stays at its last acknowledged step, where a restarted job resumes",
            sender.unanswered(),
            sender.run_id,
            EXIT_FLUSH_SECONDS,
        )


atexit.register(_flush_at_exit)
