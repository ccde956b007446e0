"""Waking the requests that wait for a ranked step's decision (``?wait=S``).

The decision itself is always read from the database (another replica may take it),
so these wake-ups only shorten the wait when this process took it: a waiting request
sleeps until either its step is decided here or its next look at the database is due.
One ``asyncio.Event`` per (run, step) being waited for, dropped with its last waiter,
so nothing grows with runs nobody waits on.
"""

import asyncio
import contextlib
from collections.abc import Iterator

# A waiting request looks at the database after this long, then twice as long each
# time up to LAST_LOOK_SECONDS: a decision taken on another replica is seen within that.
FIRST_LOOK_SECONDS = 0.02
LAST_LOOK_SECONDS = 0.25


class StepWaiters:
    """The (run, step)s some request of this process is waiting for."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, int], asyncio.Event] = {}
        self._counts: dict[tuple[str, int], int] = {}

    def decided(self, run_id: str, step: int) -> None:
        event = self._events.get((run_id, step))
        if event is not None:
            event.set()

    @contextlib.contextmanager
    def waiting(self, run_id: str, step: int) -> Iterator[asyncio.Event]:
        key = (run_id, step)
        event = self._events.setdefault(key, asyncio.Event())
        self._counts[key] = self._counts.get(key, 0) + 1
        try:
            yield event
        finally:
            self._counts[key] -= 1
            if not self._counts[key]:
                del self._counts[key], self._events[key]


@contextlib.contextmanager
def waiting_for(waiters: StepWaiters | None, run_id: str, step: int) -> Iterator[asyncio.Event]:
    """``waiters.waiting`` — or, for a caller without waiters, an event nobody sets."""
    if waiters is None:
        yield asyncio.Event()
        return
    with waiters.waiting(run_id, step) as event:
        yield event
