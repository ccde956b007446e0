"""``LRKeeper``: lrkeeper's HTTP API (API.md) as one typed method per endpoint.

Every call is retried — exponential backoff with full jitter, ``Retry-After``
honoured — on connection failures, timeouts, 429 and 5xx, until the policy's
deadline; then :class:`~client.errors.DeadlineExceeded`. A call therefore either
returns what the service committed or raises: it never hands back a guessed lr.
Other refusals are raised at once, after one request: a 401 (no token, or one the
service does not know) as ``Unauthorized``, a 403 (a read token on a write, or a
service in protected mode called from another machine) as ``Forbidden``, each
naming the method and URL called. The token is ``token=`` or ``LRKEEPER_TOKEN``.

Retrying every endpoint is safe because each one is idempotent by value:

- ``PUT /runs/{id}``: creating an existing run with the same config is a 200.
- ``POST /steps``: a step the run already has is a replay of what was recorded
  (the service's rule that also gives every rank the same lr). On a ranked run a
  rank's report of a step still waiting for the other ranks is answered 202 again,
  and once decided, with the decision.
- ``PATCH``, ``POST /lr``, ``POST /rewind``: they set a value ("status is
  finished", "lr is X", "the run is at step K"); a repeat sets it again. The only
  trace of a repeat is a second ``lr_set`` / ``rewind`` entry in the events.
- ``POST /preview`` and every ``GET`` store nothing.

Ranked runs (``put_run(..., ranks=...)``): a metric-driven step is decided once every
rank has reported its metric, so ``report_step(..., rank=r)`` and ``lr_at(..., wait=)``
wait for the other ranks (:func:`until_decided`), each request long-polling the service
for at most :data:`LONG_POLL_SECONDS`.

Numbers: non-finite floats travel as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
both ways (strict JSON, as the service answers them) and are decoded back to floats.
"""

import contextlib
import email.utils
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Self, SupportsFloat, cast
from urllib.parse import quote

import httpx
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    wait_random_exponential,
)

from client.errors import (
    DeadlineExceeded,
    LRKeeperError,
    RanksUndecided,
    ServiceError,
    TransportError,
    error_from_problem,
)

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "lrkeeper-client/0.1"
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# Statuses no retry can fix even though they are 5xx.
_PERMANENT_SERVER_STATUSES = frozenset({501, 505})

logger = logging.getLogger(__name__)

JSONObject = dict[str, Any]
ImageFormat = Literal["svg", "png"]
IMAGE_MEDIA_TYPES: dict[str, str] = {"svg": "image/svg+xml", "png": "image/png"}

# The longest one request asks the service to hold it while other ranks report (the
# service clamps it to LRKEEPER_MAX_WAIT_SECONDS, 60 by default). Short enough that a
# connection a proxy or NAT dropped in silence is noticed, and retried, within seconds;
# long enough that a waiting rank sends a handful of requests a minute, not a stream.
LONG_POLL_SECONDS: Final = 10.0
# The service's ranks timeout when a run names none (API.md, "Every rank's metric").
DEFAULT_RANKS_TIMEOUT_S: Final = 300.0
# How long past the run's timeout_s a rank keeps waiting before RanksUndecided. The
# service decides at the first report after timeout_s, which a waiting rank sends within
# a second of it; the rest is room for a slow or restarting service, whose retries the
# retry policy bounds on its own.
DECISION_MARGIN_SECONDS: Final = 30.0
# How far past the run's timeout_s a waiting rank asks again: the timeout is counted
# from the step's first report, which reached the service before this rank's answer did.
_PAST_TIMEOUT_SECONDS = 0.2


@dataclass(frozen=True)
class RetryPolicy:
    """How long one call keeps trying before it raises ``DeadlineExceeded``.

    ``deadline`` bounds the whole call (attempts and waits; each attempt's timeout
    is cut to what is left), so a training step never blocks longer than that.
    ``deadline=0`` turns retrying off: the first failure is raised as itself.
    Waits grow from ``initial_backoff`` doubling up to ``max_backoff``, each one
    drawn at random below that bound (full jitter, so restarted workers do not
    knock in step), unless the answer carried ``Retry-After``.
    """

    deadline: float = 120.0
    initial_backoff: float = 0.1
    max_backoff: float = 5.0


# -- answers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranks:
    """A ranked run's ranks: each metric-driven step is decided once all ``world_size``
    ranks have reported it (or ``timeout_s`` seconds after the first one did), from their
    metrics folded by ``reduce`` (``mean``, ``min``, ``max`` or ``sum``)."""

    world_size: int
    reduce: str = "mean"
    timeout_s: float = DEFAULT_RANKS_TIMEOUT_S

    @classmethod
    def from_json(cls, body: JSONObject) -> Self:
        return cls(
            world_size=int(body["world_size"]),
            reduce=str(body.get("reduce", "mean")),
            timeout_s=float(body.get("timeout_s", DEFAULT_RANKS_TIMEOUT_S)),
        )

    @property
    def decision_wait(self) -> float:
        """How long a rank waits for a step's decision before giving up: the timeout,
        after which the service decides without the missing ranks, and a margin."""
        return self.timeout_s + DECISION_MARGIN_SECONDS


@dataclass(frozen=True)
class Run:
    """A run as the service holds it (``GET /v1/runs/{run_id}``)."""

    run_id: str
    status: str
    step: int
    lr: list[float]
    momentum: list[float] | None
    scheduler: JSONObject
    param_groups: list[JSONObject]
    state: JSONObject
    metadata: JSONObject
    created_at: datetime | None
    updated_at: datetime | None
    ranks: Ranks | None = None

    @classmethod
    def from_json(cls, body: JSONObject) -> Self:
        ranks = body.get("ranks")
        return cls(
            run_id=body["run_id"],
            status=body["status"],
            step=int(body["step"]),
            lr=_floats(body["lr"]),
            momentum=_optional_floats(body.get("momentum")),
            scheduler=dict(body["scheduler"]),
            param_groups=[dict(group) for group in body["param_groups"]],
            state=decode_floats(body.get("state", {})),
            metadata=dict(body.get("metadata") or {}),
            created_at=_timestamp(body.get("created_at")),
            updated_at=_timestamp(body.get("updated_at")),
            ranks=Ranks.from_json(ranks) if isinstance(ranks, dict) else None,
        )


@dataclass(frozen=True)
class Event:
    """A plateau reduction, warm restart, manual lr change, rewind or range-test stop."""

    kind: str
    detail: JSONObject
    step: int | None = None
    recorded_at: datetime | None = None

    @classmethod
    def from_json(cls, body: JSONObject) -> Self:
        step = body.get("step")
        return cls(
            kind=body["kind"],
            detail=decode_floats(body.get("detail", {})),
            step=None if step is None else int(step),
            recorded_at=_timestamp(body.get("recorded_at")),
        )


@dataclass(frozen=True)
class StepAnswer:
    """What ``POST /steps`` answered: the values to use after step ``step``."""

    step: int
    lr: list[float]
    momentum: list[float] | None
    replayed: bool
    events: list[Event] = field(default_factory=list)
    stop: bool | None = None

    @classmethod
    def from_json(cls, body: JSONObject) -> Self:
        return cls(
            step=int(body["step"]),
            lr=_floats(body["lr"]),
            momentum=_optional_floats(body.get("momentum")),
            replayed=bool(body["replayed"]),
            events=[Event.from_json(event) for event in body.get("events", [])],
            stop=body.get("stop"),
        )


@dataclass(frozen=True)
class LrAnswer:
    """The lr (and momentum) after step ``step``."""

    step: int
    lr: list[float]
    momentum: list[float] | None

    @classmethod
    def from_json(cls, body: JSONObject) -> Self:
        return cls(
            step=int(body["step"]),
            lr=_floats(body["lr"]),
            momentum=_optional_floats(body.get("momentum")),
        )


@dataclass(frozen=True)
class HistoryItem:
    """One recorded step of a run's history."""

    step: int
    lr: list[float]
    momentum: list[float] | None
    metrics: dict[str, float]
    worker: str | None
    recorded_at: datetime | None
    superseded: bool = False

    @classmethod
    def from_json(cls, body: JSONObject) -> Self:
        return cls(
            step=int(body["step"]),
            lr=_floats(body["lr"]),
            momentum=_optional_floats(body.get("momentum")),
            metrics=decode_floats(body.get("metrics") or {}),
            worker=body.get("worker"),
            recorded_at=_timestamp(body.get("recorded_at")),
            superseded=bool(body.get("superseded", False)),
        )


@dataclass(frozen=True)
class Preview:
    """A schedule computed without storing anything: row k holds the values after step k."""

    lr: list[list[float]]
    momentum: list[list[float]] | None

    @classmethod
    def from_json(cls, body: JSONObject) -> Self:
        momentum = body.get("momentum")
        return cls(
            lr=[_floats(row) for row in body["lr"]],
            momentum=None if momentum is None else [_floats(row) for row in momentum],
        )


SuggestionMethod = Literal["steepest", "minimum", "valley"]
SUGGESTION_METHODS: tuple[SuggestionMethod, ...] = ("steepest", "minimum", "valley")


@dataclass(frozen=True)
class LrSuggestion:
    """What an LR range test suggests (``GET /lr-suggestion``): ``lr`` read by ``method``,
    every method's suggestion in ``suggestions``, CyclicLR's ``base_lr`` / ``max_lr``, and
    the smoothed ``curve`` as ``(lr, loss)`` pairs."""

    lr: float
    min_loss_lr: float
    base_lr: float
    max_lr: float
    method: str
    curve: list[tuple[float, float]]
    suggestions: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: JSONObject) -> Self:
        return cls(
            lr=_float(body["lr"]),
            min_loss_lr=_float(body["min_loss_lr"]),
            base_lr=_float(body["base_lr"]),
            max_lr=_float(body["max_lr"]),
            method=str(body["method"]),
            curve=[(_float(lr), _float(loss)) for lr, loss in body["curve"]],
            suggestions={
                name: _float(value) for name, value in (body.get("suggestions") or {}).items()
            },
        )


# -- the client ---------------------------------------------------------------------------


class LRKeeper:
    """A connection to one lrkeeper service.

    ``url`` and ``token`` default to ``LRKEEPER_URL`` (else ``http://127.0.0.1:8000``)
    and ``LRKEEPER_TOKEN``. Pass ``http`` to use your own ``httpx.Client`` (a proxy,
    TLS settings, or an app in a test); its ``base_url`` is used when ``url`` is not
    given, and it is left open by :meth:`close`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        injected_base = str(http.base_url) if http is not None else ""
        self.url = (url or injected_base or os.environ.get("LRKEEPER_URL") or DEFAULT_URL).rstrip(
            "/"
        )
        self.token = token or os.environ.get("LRKEEPER_TOKEN") or None
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client()

    @property
    def http_injected(self) -> bool:
        """Whether calls go through an ``httpx.Client`` the caller passed in (a proxy, TLS
        settings, a test's transport), which every connection of this client must then use."""
        return not self._owns_http

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LRKeeper({self.url!r})"

    def ready(self) -> None:
        """Return once the service is ready (``/readyz``: database reachable and migrated).

        An unready service answers 503, which is retried: this waits up to the retry
        deadline, so a training job started together with its service can call it first.
        """
        self._json("GET", "/readyz")

    # -- runs ---------------------------------------------------------------------------

    def put_run(
        self,
        run_id: str,
        scheduler: Mapping[str, Any],
        param_groups: Sequence[Mapping[str, Any]],
        metadata: Mapping[str, Any] | None = None,
        *,
        ranks: Mapping[str, Any] | None = None,
    ) -> Run:
        """Create the run, or find it as it is when it exists with the same config.

        ``ranks`` (``{"world_size": N, "reduce": "mean", "timeout_s": T}``, reduce and
        timeout_s optional) makes it a ranked run: each metric-driven step is decided from
        every rank's metric (:class:`Ranks`). Raises ``RunConflict`` when the run exists
        with another scheduler, other groups or other ranks.
        """
        body: JSONObject = {"scheduler": scheduler, "param_groups": list(param_groups)}
        if metadata is not None:
            body["metadata"] = metadata
        if ranks is not None:
            body["ranks"] = dict(ranks)
        return Run.from_json(self._json("PUT", run_path(run_id), body=body))

    def get_run(self, run_id: str) -> Run:
        return Run.from_json(self._json("GET", run_path(run_id)))

    def list_runs(
        self, *, status: str | None = None, prefix: str | None = None, page_size: int | None = None
    ) -> Iterator[Run]:
        """Every run matching the filters, fetching further pages as the iteration needs them."""
        params = {"status": status, "prefix": prefix, "limit": page_size}
        for item in self._paged("/v1/runs", params):
            yield Run.from_json(item)

    def update_run(
        self, run_id: str, *, status: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Run:
        body: JSONObject = {}
        if status is not None:
            body["status"] = status
        if metadata is not None:
            body["metadata"] = metadata
        return Run.from_json(self._json("PATCH", run_path(run_id), body=body))

    def finish(self, run_id: str, status: str = "finished") -> Run:
        """Mark the run ``finished`` (or ``failed``)."""
        return self.update_run(run_id, status=status)

    # -- the hot path -------------------------------------------------------------------

    def report_step(
        self,
        run_id: str,
        step: int,
        metrics: Mapping[str, SupportsFloat] | None = None,
        *,
        worker: str | None = None,
        rank: int | None = None,
        wait: float | None = None,
        ranks_timeout_s: float | None = None,
    ) -> StepAnswer:
        """Report that ``step`` steps are done; answers the values to use from now on.

        A step the run already has answers what was recorded (``replayed``), so
        every rank may report every step.

        On a ranked run, ``rank`` says which rank reports. A metric-driven step is decided
        once every rank has reported it: until then the service answers 202, and this call
        sends the same report again, long-polling, until the decision comes (which it
        answers like any other). ``wait`` bounds that in seconds; past it,
        ``RanksUndecided`` (``wait=0``: the report is sent once). Pass the run's
        ``ranks_timeout_s`` (:attr:`Run.ranks`) when known: the call then asks again just
        after it, when the service decides without the missing ranks. The default ``wait``
        is that timeout (else the service's default, 300 s) plus
        :data:`DECISION_MARGIN_SECONDS`.
        """
        body = step_report_body(step, metrics, worker, rank)
        path = f"{run_path(run_id)}/steps"

        def send(poll: float | None) -> JSONObject:
            params = None if poll is None else {"wait": wait_query(poll)}
            answer: JSONObject = self._json("POST", path, params=params, body=body, hold=poll)
            return answer

        decision = until_decided(
            step, send, first_poll=None, wait=wait, ranks_timeout_s=ranks_timeout_s
        )
        return StepAnswer.from_json(decision)

    def current_lr(self, run_id: str) -> LrAnswer:
        """The run's lr now, including a ``set_lr`` made since its last step."""
        return LrAnswer.from_json(self._json("GET", f"{run_path(run_id)}/lr"))

    def lr_at(
        self,
        run_id: str,
        step: int,
        *,
        wait: float | None = None,
        ranks_timeout_s: float | None = None,
    ) -> LrAnswer:
        """The lr recorded after ``step``; ``NotFound`` if the run has not reached it.

        ``wait`` (seconds): on a ranked run whose next step ``step`` is still waiting for
        ranks, wait up to that long for its decision (long-polling), then raise
        ``RanksUndecided`` (``wait=0``: at once). Without ``wait`` it is the one request it
        always was. ``ranks_timeout_s`` as for :meth:`report_step`.
        """
        path = f"{run_path(run_id)}/lr"

        def send(poll: float | None) -> JSONObject:
            params: JSONObject = {"step": step}
            if poll is not None:
                params["wait"] = wait_query(poll)
            answer: JSONObject = self._json("GET", path, params=params, hold=poll)
            return answer

        # wait=0 still goes on the query: it asks for the pending answer (202), not a 404.
        first_poll = None if wait is None else min(LONG_POLL_SECONDS, wait)
        decision = until_decided(
            step, send, first_poll=first_poll, wait=wait or 0.0, ranks_timeout_s=ranks_timeout_s
        )
        return LrAnswer.from_json(decision)

    # -- changing a running run ---------------------------------------------------------

    def set_lr(self, run_id: str, lr: Sequence[SupportsFloat], reason: str | None = None) -> Run:
        """Set the current lr as a hand edit of the param groups would."""
        body: JSONObject = {"lr": [as_number(value) for value in lr]}
        if reason is not None:
            body["reason"] = reason
        return Run.from_json(self._json("POST", f"{run_path(run_id)}/lr", body=body))

    def rewind(self, run_id: str, step: int) -> Run:
        """Put the run back to the state after ``step`` (later history is kept, superseded)."""
        return Run.from_json(self._json("POST", f"{run_path(run_id)}/rewind", body={"step": step}))

    # -- history ------------------------------------------------------------------------

    def history(
        self,
        run_id: str,
        *,
        start: int | None = None,
        end: int | None = None,
        every: int | None = None,
        include_superseded: bool = False,
        page_size: int | None = None,
        points: int | None = None,
    ) -> Iterator[HistoryItem]:
        """The recorded steps from ``start`` to ``end`` (inclusive), page after page.

        With ``points``, one request: at most about that many rows, chosen so that every
        bucket's lowest and highest values are kept (for charts); ``every`` and
        ``page_size`` do not combine with it.
        """
        params = {
            "start": start,
            "end": end,
            "every": every,
            "limit": page_size,
            "include_superseded": "true" if include_superseded else None,
        }
        path = f"{run_path(run_id)}/history"
        if points is not None:
            page = self._json("GET", path, params={**params, "points": points})
            items: Iterable[JSONObject] = page["items"]
        else:
            items = self._paged(path, params)
        for item in items:
            yield HistoryItem.from_json(item)

    def events(self, run_id: str) -> list[Event]:
        return [Event.from_json(item) for item in self._paged(f"{run_path(run_id)}/events", {})]

    def preview(
        self,
        scheduler: Mapping[str, Any],
        param_groups: Sequence[Mapping[str, Any]],
        steps: int,
        metrics: Sequence[SupportsFloat] | None = None,
    ) -> Preview:
        """The schedule for ``steps`` steps, computed by the service and stored nowhere."""
        body = preview_body(scheduler, param_groups, steps, metrics)
        return Preview.from_json(self._json("POST", "/v1/preview", body=body))

    def scheduler_types(self) -> list[JSONObject]:
        """Every scheduler type with its parameters, their types and defaults."""
        return [dict(item) for item in self._json("GET", "/v1/scheduler-types")["items"]]

    def lr_suggestion(self, run_id: str, method: SuggestionMethod | None = None) -> LrSuggestion:
        """An LR range test's suggestion by ``method`` (the service's default: steepest);
        ``NotEnoughData`` before 10 steps."""
        return LrSuggestion.from_json(
            self._json("GET", f"{run_path(run_id)}/lr-suggestion", params={"method": method})
        )

    # -- pictures and exports -----------------------------------------------------------

    def lr_suggestion_chart(
        self,
        run_id: str,
        image_format: ImageFormat = "svg",
        *,
        method: SuggestionMethod | None = None,
    ) -> bytes:
        """A range test's smoothed loss against lr (log axis), every method's suggestion
        marked and ``method``'s first (``GET /lr-suggestion/chart.svg|png``)."""
        return self._bytes(
            "GET",
            f"{run_path(run_id)}/lr-suggestion/chart.{image_format}",
            params={"method": method},
            accept=IMAGE_MEDIA_TYPES[image_format],
        )

    def run_chart(
        self,
        run_id: str,
        image_format: ImageFormat = "svg",
        *,
        scale: str | None = None,
        start: int | None = None,
        end: int | None = None,
        metrics: Sequence[str] | None = None,
    ) -> bytes:
        """The run drawn as an SVG document or a PNG image (``GET /chart.svg|png``): lr per
        group, ``metrics`` (and the monitored one) on a second axis, events marked."""
        params = {
            "scale": scale,
            "start": start,
            "end": end,
            "metrics": None if metrics is None else ",".join(metrics),
        }
        return self._bytes(
            "GET",
            f"{run_path(run_id)}/chart.{image_format}",
            params=params,
            accept=IMAGE_MEDIA_TYPES[image_format],
        )

    def preview_chart(
        self,
        scheduler: Mapping[str, Any],
        param_groups: Sequence[Mapping[str, Any]],
        steps: int,
        image_format: ImageFormat = "svg",
        metrics: Sequence[SupportsFloat] | None = None,
    ) -> bytes:
        """:meth:`preview`'s schedule drawn as an SVG document or a PNG image."""
        return self._bytes(
            "POST",
            f"/v1/preview/chart.{image_format}",
            body=preview_body(scheduler, param_groups, steps, metrics),
            accept=IMAGE_MEDIA_TYPES[image_format],
        )

    def history_csv(
        self,
        run_id: str,
        *,
        start: int | None = None,
        end: int | None = None,
        include_superseded: bool = False,
    ) -> Iterator[str]:
        """The run's history as the service writes it in CSV (one header line, every row),
        streamed in pieces of text as they arrive (``GET /history?format=csv``, no ``limit``).

        Not retried: a stream cut halfway raises TransportError, and only the caller knows
        whether the part already handed on may be written again.
        """
        query = {
            "start": start,
            "end": end,
            "include_superseded": "true" if include_superseded else None,
            "format": "csv",
        }
        params = {name: value for name, value in query.items() if value is not None}
        with self._stream(
            "GET", f"{run_path(run_id)}/history", params, accept="text/csv"
        ) as answer:
            yield from answer.iter_text()

    # -- transport ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _stream(
        self, method: str, path: str, params: Mapping[str, Any], *, accept: str
    ) -> Iterator[httpx.Response]:
        """One streamed call, not retried; its problems and transport failures as ours."""
        url = f"{self.url}{path}"
        try:
            with self._http.stream(
                method,
                url,
                params=params,
                headers=self._headers(accept, has_body=False),
                timeout=self.timeout,
            ) as response:
                if not response.is_success:
                    response.read()
                    raise _service_error(response)
                yield response
        except httpx.TransportError as failure:
            raise TransportError(
                f"{method} {url}: {type(failure).__name__}: {failure}"
            ) from failure

    def _headers(self, accept: str, *, has_body: bool) -> dict[str, str]:
        headers = {"Accept": f"{accept}, application/problem+json", "User-Agent": USER_AGENT}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _bytes(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        accept: str,
    ) -> bytes:
        """Like :meth:`_json`, for an answer that is not JSON (an image): its bytes."""
        answer: bytes = self._call(method, path, params, body, accept, _content)
        return answer

    def _paged(self, path: str, params: Mapping[str, Any]) -> Iterator[JSONObject]:
        cursor: str | None = None
        while True:
            page = self._json("GET", path, params={**params, "cursor": cursor})
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def _json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        hold: float | None = None,
    ) -> Any:
        """Send one call, retrying as the policy allows; the decoded JSON answer.

        ``hold``: the seconds the service may hold the call before answering (a
        long-poll's ``wait``), added to each attempt's timeout so that waiting as asked
        is not taken for a dead connection.
        """
        return self._call(method, path, params, body, "application/json", _decoded_json, hold=hold)

    def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: Any,
        accept: str,
        decode: Callable[[httpx.Response, str], Any],
        *,
        hold: float | None = None,
    ) -> Any:
        query = {name: value for name, value in (params or {}).items() if value is not None}
        content = None if body is None else json.dumps(encode_floats(body), allow_nan=False)

        def attempt(timeout: float) -> Any:
            return self._attempt(method, path, query, content, timeout, accept, decode)

        timeout = self.timeout + (hold or 0.0)
        return call_with_retries(f"{method} {path}", attempt, self.retry, timeout)

    def _attempt(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any],
        content: str | None,
        timeout: float,
        accept: str,
        decode: Callable[[httpx.Response, str], Any],
    ) -> Any:
        url = f"{self.url}{path}"
        try:
            response = self._http.request(
                method,
                url,
                params=query,
                content=content,
                headers=self._headers(accept, has_body=content is not None),
                timeout=timeout,
            )
        except httpx.TransportError as failure:
            # The whole URL: "connection refused" means little until it says to where.
            raise TransportError(
                f"{method} {url}: {type(failure).__name__}: {failure}"
            ) from failure
        if not response.is_success:
            raise _service_error(response)
        return decode(response, f"{method} {url}")


def _decoded_json(response: httpx.Response, operation: str) -> Any:
    try:
        return response.json()
    except ValueError as failure:
        # A body cut short by a dying server; worth another attempt.
        raise TransportError(f"{operation}: unreadable answer: {failure}") from failure


def _content(response: httpx.Response, _operation: str) -> bytes:
    return response.content


def call_with_retries(
    operation: str, attempt: Callable[[float], Any], policy: RetryPolicy, timeout: float
) -> Any:
    """``attempt(timeout)`` until it succeeds, fails for good, or the deadline comes.

    Each attempt's timeout is cut to what is left of the deadline. Waits follow the
    policy's backoff, or ``Retry-After`` when it asks for longer.
    """
    if policy.deadline <= 0:
        return attempt(timeout)
    started = time.monotonic()

    def remaining() -> float:
        return policy.deadline - (time.monotonic() - started)

    # The first attempt goes without tenacity: building its machinery costs ~45 µs, a
    # tenth of a step report's client CPU, and most calls succeed at once. A retryable
    # failure is handed to the loop below as its attempt 1, so waits, attempt counts and
    # the deadline are what they would have been.
    try:
        return attempt(max(0.001, min(timeout, remaining())))
    except LRKeeperError as failure:
        if not is_retryable(failure):
            raise
        first_failure: LRKeeperError | None = failure
    last_attempt_seconds = time.monotonic() - started
    backoff = wait_random_exponential(multiplier=policy.initial_backoff, max=policy.max_backoff)

    def wait(state: RetryCallState) -> float:
        retry_after = _retry_after_of(state)
        delay: float = backoff(state)
        return delay if retry_after is None else max(delay, retry_after)

    def should_stop(state: RetryCallState) -> bool:
        # Stop rather than start an attempt that cannot end before the deadline
        # (judged by the last one): a sliver of time only ends in a timeout, which
        # would hide the real cause from DeadlineExceeded.last_error.
        return remaining() - state.upcoming_sleep <= last_attempt_seconds

    def timed_attempt() -> Any:
        nonlocal last_attempt_seconds, first_failure
        if first_failure is not None:
            made, first_failure = first_failure, None
            raise made
        began = time.monotonic()
        try:
            return attempt(max(0.001, min(timeout, remaining())))
        finally:
            last_attempt_seconds = time.monotonic() - began

    retrying = Retrying(
        stop=should_stop,
        wait=wait,
        retry=retry_if_exception(is_retryable),
        before_sleep=_log_retry(operation),
        sleep=time.sleep,
    )
    try:
        return retrying(timed_attempt)
    except RetryError as gave_up:
        # Only LRKeeperErrors are retried, so only they can end the retrying.
        last_error = cast(LRKeeperError, gave_up.last_attempt.exception())
        raise DeadlineExceeded(
            operation,
            attempts=gave_up.last_attempt.attempt_number,
            elapsed=time.monotonic() - started,
            deadline=policy.deadline,
            last_error=last_error,
        ) from last_error


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt could succeed: the service may be back, or less busy."""
    if isinstance(error, ServiceError):
        return error.status == 429 or (
            error.status >= 500 and error.status not in _PERMANENT_SERVER_STATUSES
        )
    if isinstance(error, TransportError):
        # A malformed URL or request will not heal by waiting.
        return not isinstance(error.__cause__, httpx.UnsupportedProtocol | httpx.LocalProtocolError)
    return False


def _retry_after_of(state: RetryCallState) -> float | None:
    error = state.outcome.exception() if state.outcome is not None else None
    return error.retry_after if isinstance(error, ServiceError) else None


def _log_retry(operation: str) -> Any:
    def log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "lrkeeper: %s failed (attempt %d: %s); retrying in %.2fs",
            operation,
            state.attempt_number,
            error,
            sleep,
        )

    return log


def _service_error(response: httpx.Response) -> ServiceError:
    return service_error(
        response.status_code,
        response.reason_phrase,
        response.content,
        response.headers.get("Retry-After"),
        method=response.request.method,
        url=str(response.request.url),
    )


def service_error(
    status: int,
    reason: str,
    body: bytes,
    retry_after: str | None,
    *,
    method: str,
    url: str,
) -> ServiceError:
    """The exception for an error answer, whichever HTTP library received it (httpx here,
    ``http.client`` in client.wire): a non-problem body (a proxy's HTML page) becomes a
    problem of type ``about:blank`` so every ``ServiceError`` has the same shape."""
    try:
        problem = json.loads(body)
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {
            "type": "about:blank",
            "title": reason,
            "status": status,
            "detail": body.decode("utf-8", errors="replace")[:500],
        }
    return error_from_problem(
        status, problem, retry_after=_parse_retry_after(retry_after), method=method, url=url
    )


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: either delay-seconds or an HTTP date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


# -- numbers ------------------------------------------------------------------------------


def step_report_body(
    step: int,
    metrics: Mapping[str, SupportsFloat] | None,
    worker: str | None,
    rank: int | None = None,
) -> JSONObject:
    """``POST /steps``'s body, for every wire that sends one (this client, client.wire)."""
    body: JSONObject = {"step": step}
    if metrics is not None:
        body["metrics"] = {str(name): as_number(value) for name, value in metrics.items()}
    if worker is not None:
        body["worker"] = worker
    if rank is not None:
        body["rank"] = rank
    return body


def wait_query(seconds: float) -> str:
    """A long-poll's ``wait`` as the query carries it (milliseconds are plenty)."""
    return f"{max(0.0, seconds):.3f}"


def until_decided(
    step: int,
    send: Callable[[float | None], JSONObject],
    *,
    first_poll: float | None,
    wait: float | None,
    ranks_timeout_s: float | None,
) -> JSONObject:
    """``send(first_poll)``'s answer, or while it says the step is pending (202
    ``{"pending": true, ...}``: other ranks have not reported), the answer of ``send(poll)``
    asked again and again, each long-polling up to ``poll`` seconds, until one is not.

    ``send`` is one call with its retries; sending the same report again is safe (the
    service answers a rank's repeated report with the step's state). The whole wait is
    bounded by ``wait`` (default: ``ranks_timeout_s``, else the service's default timeout,
    plus :data:`DECISION_MARGIN_SECONDS`), then :class:`~client.errors.RanksUndecided`.

    The service decides without the missing ranks at the first report (or ``GET /lr``) of
    the step once ``ranks_timeout_s`` has passed since the step's first report, so when
    the timeout is known a poll ends just after it: the decision then comes at once,
    rather than up to a long-poll later.
    """
    timeout_s = DEFAULT_RANKS_TIMEOUT_S if ranks_timeout_s is None else ranks_timeout_s
    budget = timeout_s + DECISION_MARGIN_SECONDS if wait is None else wait
    started = time.monotonic()
    answer = send(first_poll)
    # The step's first report reached the service no later than this answer came back.
    timeout_passes = time.monotonic() + timeout_s + _PAST_TIMEOUT_SECONDS
    while answer.get("pending") is True:
        now = time.monotonic()
        left = budget - (now - started)
        if left <= 0:
            raise RanksUndecided(
                step,
                reported=_optional_int(answer.get("reported")),
                world_size=_optional_int(answer.get("world_size")),
                waited=now - started,
            )
        poll = min(LONG_POLL_SECONDS, left)
        if ranks_timeout_s is not None and now < timeout_passes:
            poll = min(poll, timeout_passes - now)
        answer = send(poll)
    return answer


def _optional_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def preview_body(
    scheduler: Mapping[str, Any],
    param_groups: Sequence[Mapping[str, Any]],
    steps: int,
    metrics: Sequence[SupportsFloat] | None,
) -> JSONObject:
    """``POST /preview``'s body, which its charts take too."""
    body: JSONObject = {"scheduler": scheduler, "param_groups": list(param_groups), "steps": steps}
    if metrics is not None:
        body["metrics"] = [as_number(value) for value in metrics]
    return body


def as_number(value: SupportsFloat) -> float | int:
    """A metric or lr as JSON can carry it: ints and floats as they are, anything with
    ``__float__`` (a 0-dim tensor, a numpy scalar) converted, strings and bools refused."""
    if isinstance(value, bool | str | bytes):
        raise TypeError(f"expected a number, got {type(value).__name__}: {value!r}")
    if isinstance(value, int | float):
        return value
    return float(value)


def encode_floats(value: Any) -> Any:
    """Non-finite floats as the strings the API defines, everywhere inside ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {key: encode_floats(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode_floats(item) for item in value]
    return value


def decode_floats(value: Any) -> Any:
    """Inverse of :func:`encode_floats` for numeric data (scheduler state, metrics)."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {key: decode_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_floats(item) for item in value]
    return value


def _float(value: Any) -> float:
    return _NON_FINITE[value] if isinstance(value, str) else value


def _floats(values: Sequence[Any]) -> list[float]:
    return [_float(value) for value in values]


def _optional_floats(values: Sequence[Any] | None) -> list[float] | None:
    return None if values is None else _floats(values)


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def run_path(run_id: str) -> str:
    return f"/v1/runs/{quote(run_id, safe='')}"
