"""What can go wrong when talking to lrkeeper, as one tree of exceptions.

The service answers every refusal as ``application/problem+json`` whose ``type``
is ``urn:lrkeeper:problem:<slug>``; the slug picks the class below, and the
problem's extension members (``expected_step``, ``differences``, ``errors``)
stay reachable as attributes. Failures on the way to the service are wrapped, so
a caller never has to know httpx::

    LRKeeperError
    ├── ServiceError(status, problem)        the service answered with a problem
    │   ├── InvalidJson                      400 invalid-json: malformed, not UTF-8, too deep
    │   ├── PayloadTooLarge                  413 payload-too-large (``limit``, ``max``)
    │   ├── UnsupportedMediaType             415 unsupported-media-type
    │   ├── InvalidRequest(errors)           422 invalid-request
    │   │   └── InvalidConfig                ... whose fields are in the scheduler or param groups
    │   ├── Unauthorized                     401 unauthorized
    │   ├── Forbidden                        403 forbidden
    │   ├── NotFound                         404 not-found
    │   ├── Conflict                         409
    │   │   ├── RunConflict(differences)     PUT of an existing run with another config
    │   │   ├── StepOutOfOrder(expected_step)  a metric-driven run cannot catch up
    │   │   ├── ScheduleEnded(step, total_steps)
    │   │   ├── ScheduleFailed(step, parameter)  the schedule cannot compute this step
    │   │   ├── RunNotRunning                the run is finished or failed: reopen it first
    │   │   ├── RankMetricConflict(rank, step)  a rank re-reported a step with another metric
    │   │   └── NotEnoughData                lr suggestion before 10 range-test steps
    │   ├── TooManyRequests                  429 (retried)
    │   ├── InternalError                    500 internal-error (retried)
    │   └── ServiceUnavailable               503 service-unavailable (retried)
    ├── TransportError                       no answer: refused, timed out, cut off
    │   └── DeadlineExceeded                 retries gave up at the deadline (``last_error``)
    ├── RanksUndecided(step, reported, world_size)  no decision from the ranks in the wait allowed
    └── CheckpointAheadOfRun                 load_state_dict() of a step the run never reached

Retried failures surface only once retrying stops: as ``DeadlineExceeded``, whose
``last_error`` (also its ``__cause__``) is the final ``TransportError`` or
``ServiceError``. With retries off they surface as themselves.
"""

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

PROBLEM_TYPE_PREFIX = "urn:lrkeeper:problem:"


class LRKeeperError(Exception):
    """Base of every exception the client raises on purpose."""


class ServiceError(LRKeeperError):
    """The service (or a proxy in front of it) answered with an error status.

    ``problem`` is the decoded problem document; a non-problem answer (a proxy's
    HTML page) is turned into one with ``type`` ``about:blank`` so every
    ``ServiceError`` has the same shape.
    """

    slug: ClassVar[str | None] = None

    def __init__(
        self,
        status: int,
        problem: Mapping[str, Any],
        *,
        retry_after: float | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.status = status
        self.problem: dict[str, Any] = dict(problem)
        self.retry_after = retry_after
        self.method = method
        self.url = url
        # The call is named first: with several services (or a proxy) in play, which one
        # refused is half of the answer — a 401 says little until it says from where.
        called = f"{method or 'request to'} {url}: " if url else ""
        super().__init__(f"{called}{status} {self.title}: {self.detail}")

    @property
    def type(self) -> str:
        return str(self.problem.get("type", "about:blank"))

    @property
    def title(self) -> str:
        return str(self.problem.get("title", ""))

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))

    def _int_member(self, name: str) -> int | None:
        """An integer extension member of the problem, or None when it is absent."""
        value = self.problem.get(name)
        return None if value is None else int(value)


class InvalidJson(ServiceError):
    """400: the body was not JSON the service could read (malformed, not UTF-8, too deep)."""

    slug = "invalid-json"


class PayloadTooLarge(ServiceError):
    """413: the body is larger than the service's ``LRKEEPER_MAX_BODY_BYTES``."""

    slug = "payload-too-large"


class UnsupportedMediaType(ServiceError):
    """415: the body was not sent as ``application/json``."""

    slug = "unsupported-media-type"


class InvalidRequest(ServiceError):
    """422: the request names something the service refuses; ``errors`` says where."""

    slug = "invalid-request"

    @property
    def errors(self) -> list[dict[str, Any]]:
        """``[{"loc": [...], "msg": str}, ...]``, the places the service objected to."""
        return list(self.problem.get("errors", []))


class InvalidConfig(InvalidRequest):
    """422 about the scheduler config or the param groups: torch would refuse them too."""


class Unauthorized(ServiceError):
    """401: no token, or one the service's LRKEEPER_TOKENS does not hold (set LRKEEPER_TOKEN).

    Never retried: the same token would be refused again.
    """

    slug = "unauthorized"


class Forbidden(ServiceError):
    """403: a read token used for a write, or a service without tokens (protected mode)
    called from another machine; the detail says which and what to set. Never retried.
    """

    slug = "forbidden"


class NotFound(ServiceError):
    """404: no such run (or no such step on the run's current line of history)."""

    slug = "not-found"


class Conflict(ServiceError):
    """409: the request is well formed but does not fit the run as it stands."""


class RunConflict(Conflict):
    """The run exists with another scheduler or other param groups."""

    slug = "run-conflict"

    @property
    def differences(self) -> Any:
        """What differs between the stored run and the request, as the service describes it."""
        return self.problem.get("differences")


class StepOutOfOrder(Conflict):
    """A metric-driven run cannot skip steps: report ``expected_step`` first."""

    slug = "step-out-of-order"

    @property
    def expected_step(self) -> int | None:
        return self._int_member("expected_step")


class ScheduleEnded(Conflict):
    """A fixed-length schedule (OneCycleLR, LRRangeTest) was stepped past its end."""

    slug = "schedule-ended"

    @property
    def step(self) -> int | None:
        return self._int_member("step")

    @property
    def total_steps(self) -> int | None:
        return self._int_member("total_steps")


class ScheduleFailed(Conflict):
    """The schedule fails at this step (an ``lr_lambda`` dividing by zero, an overflow), as
    torch would crash there; the run is unchanged: set the lr by hand, rewind, or stop it."""

    slug = "schedule-failed"

    @property
    def step(self) -> int | None:
        return self._int_member("step")

    @property
    def parameter(self) -> str | None:
        value = self.problem.get("parameter")
        return None if value is None else str(value)


class RunNotRunning(Conflict):
    """A new step for a finished or failed run; ``PATCH {"status": "running"}`` reopens it."""

    slug = "run-not-running"


class RankMetricConflict(Conflict):
    """A rank reported step ``step`` again with another metric than the one it reported
    first. Its first metric is already counted (or decided), so the step cannot take this
    one; a retried report carries the same metric and is never refused."""

    slug = "rank-metric-conflict"

    @property
    def rank(self) -> int | None:
        return self._int_member("rank")

    @property
    def step(self) -> int | None:
        return self._int_member("step")


class NotEnoughData(Conflict):
    """An lr suggestion was asked for before the range test had enough steps."""

    slug = "not-enough-data"


class TooManyRequests(ServiceError):
    """429 from the service or a proxy; retried, honouring ``Retry-After``."""

    slug = "too-many-requests"


class InternalError(ServiceError):
    """500: the service failed; retried in case the failure was transient."""

    slug = "internal-error"


class ServiceUnavailable(ServiceError):
    """503: the service is up but cannot serve (database unreachable, starting)."""

    slug = "service-unavailable"


class TransportError(LRKeeperError):
    """No answer from the service: connection refused, timeout, connection cut mid-answer."""


class DeadlineExceeded(TransportError):
    """Retrying stopped at the deadline without a usable answer.

    Raised instead of ever returning a stale or guessed lr. ``last_error`` is the
    final attempt's failure.
    """

    def __init__(
        self,
        operation: str,
        *,
        attempts: int,
        elapsed: float,
        deadline: float,
        last_error: LRKeeperError,
    ) -> None:
        self.operation = operation
        self.attempts = attempts
        self.elapsed = elapsed
        self.deadline = deadline
        self.last_error = last_error
        super().__init__(
            f"{operation}: gave up after {attempts} attempts in {elapsed:.1f}s "
            f"(deadline {deadline:g}s); last error: {last_error}"
        )


class RanksUndecided(LRKeeperError):
    """Step ``step`` of a ranked run was still waiting for the other ranks' metrics when the
    wait allowed ran out (``waited`` seconds): ``reported`` of ``world_size`` ranks had
    reported it.

    The service decides a step with the ranks present once the run's ``timeout_s`` has
    passed, so a client waiting longer than that has lost the service, or its clock, not a
    rank: it raises instead of training on without the step's lr. The report is recorded;
    reporting the step again with the same metric waits for the same decision.
    """

    def __init__(
        self, step: int, *, reported: int | None, world_size: int | None, waited: float
    ) -> None:
        self.step = step
        self.reported = reported
        self.world_size = world_size
        self.waited = waited
        ranks = f"{reported} of {world_size} ranks" if world_size is not None else "some ranks"
        super().__init__(
            f"step {step}: no decision after waiting {waited:.1f}s; {ranks} had reported it"
        )


class CheckpointAheadOfRun(LRKeeperError):
    """A scheduler state from step ``checkpoint_step`` was loaded, but the run is only at
    ``run_step``: the service lost steps the checkpoint saw (an older database?), so the
    schedule cannot be made to agree with the model without guessing.
    """

    def __init__(self, run_id: str, checkpoint_step: int, run_step: int) -> None:
        self.run_id = run_id
        self.checkpoint_step = checkpoint_step
        self.run_step = run_step
        super().__init__(
            f"run {run_id!r} is at step {run_step}, but the checkpoint is from step "
            f"{checkpoint_step}: the service does not know the steps in between"
        )


def _with_slugs(cls: type[ServiceError]) -> list[type[ServiceError]]:
    found = [cls] if cls.slug is not None and "slug" in vars(cls) else []
    for subclass in cls.__subclasses__():
        found.extend(_with_slugs(subclass))
    return found


# Every class above that names a slug: a class added later cannot be left out.
_BY_SLUG: dict[str, type[ServiceError]] = {cls.slug: cls for cls in _with_slugs(ServiceError)}  # type: ignore[misc]
_BY_STATUS: dict[int, type[ServiceError]] = {
    400: InvalidJson,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidRequest,
    429: TooManyRequests,
    500: InternalError,
    503: ServiceUnavailable,
}
_CONFIG_ROOTS = frozenset({"scheduler", "param_groups"})


def error_from_problem(
    status: int,
    problem: Mapping[str, Any],
    *,
    retry_after: float | None = None,
    method: str | None = None,
    url: str | None = None,
) -> ServiceError:
    """The exception for an error answer: by problem ``type`` first, by status otherwise.

    A 422 whose every error points into ``scheduler`` or ``param_groups`` becomes
    :class:`InvalidConfig`, so training code can tell "your schedule is wrong"
    from "the client sent something wrong".
    """
    problem_type = str(problem.get("type", ""))
    slug = problem_type.removeprefix(PROBLEM_TYPE_PREFIX) if problem_type else ""
    cls = _BY_SLUG.get(slug) if problem_type.startswith(PROBLEM_TYPE_PREFIX) else None
    if cls is None:
        cls = _BY_STATUS.get(status, ServiceError)
    if cls is InvalidRequest and _points_into_config(problem.get("errors")):
        cls = InvalidConfig
    return cls(status, problem, retry_after=retry_after, method=method, url=url)


def _points_into_config(errors: Any) -> bool:
    if not isinstance(errors, Sequence) or isinstance(errors, str) or not errors:
        return False
    return all(_loc_root(error) in _CONFIG_ROOTS for error in errors)


def _loc_root(error: Any) -> Any:
    """The first field of a ``loc`` after FastAPI's ``body`` prefix."""
    loc = error.get("loc") if isinstance(error, Mapping) else None
    if not isinstance(loc, Sequence) or isinstance(loc, str):
        return None
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    return parts[0] if parts else None
