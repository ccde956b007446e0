"""The one ASGI middleware around the app: request ids, body size, metrics, access log, 500s.

These jobs share one middleware, and one ``send`` wrapper, because each layer
costs the hot path a call per message; one layer does them all for the price of
one. It sits outside the exception handlers, so a 500 it answers is counted,
logged and carries its request id like any other answer.

The body limit is decided before the app runs whenever it can be: a declared
``Content-Length`` over ``LRKEEPER_MAX_BODY_BYTES`` is answered 413 at once, and
nothing of the body is read (the answer says ``Connection: close``, so uvicorn
drops the connection instead of reading the rest to reach the next request). A
chunked body has no length to check, so only then is ``receive`` wrapped: its
bytes are counted as they arrive and the 413 goes out the moment the count
passes the limit. A request without a body costs one pass over its headers.
"""

import os
import re
import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.limits import PayloadLimits, current_payload_limits
from service.logs import current_request_id, log_request
from service.metrics import UNMATCHED_ROUTE, AnswerRecorder, Metrics
from service.problems import (
    PayloadTooLarge,
    internal_error_response,
    log_unexpected_error,
    problem_response,
)

# A client's own id is kept when it is short and safe to echo into headers and logs.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_DISCONNECT: Message = {"type": "http.disconnect"}


def request_id_from(sent: bytes | None) -> str:
    """The client's ``X-Request-ID`` when it is sane, else 128 fresh random bits in hex.

    Random bytes rather than ``uuid.uuid4().hex`` (the same 32 hex digits, less
    the version nibble): building the UUID object measured 5x the cost of the bytes.
    """
    if sent is not None and _SANE_REQUEST_ID.fullmatch(sent):
        return sent.decode("ascii")
    return os.urandom(16).hex()


class EdgeMiddleware:
    """Tags, bounds, counts and logs each HTTP request; an unhandled exception becomes a 500.

    The traceback goes to the log, never into the answer. A pure ASGI middleware
    rather than an ``Exception`` handler: Starlette re-raises after such a handler,
    which would log every failure twice.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        payload_limits: PayloadLimits,
        routes: Sequence[BaseRoute],
    ) -> None:
        self.app = app
        self.recorder = AnswerRecorder(metrics)
        self.max_body_bytes = max_body_bytes
        self.payload_limits = payload_limits
        self.routes = routes
        # Sent as is to every refused request: the send wrapper never changes a message's
        # header list in place, it builds a new one.
        self.too_large = problem_response(
            PayloadTooLarge(
                f"the request body is larger than LRKEEPER_MAX_BODY_BYTES ({max_body_bytes} bytes)",
                limit="max_body_bytes",
                max=max_body_bytes,
            ),
            headers={"Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        declared_length: bytes | None = None
        chunked = False
        sent_id: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared_length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"x-request-id":
                sent_id = value
        request_id = request_id_from(sent_id)
        id_header = (b"x-request-id", request_id.encode("ascii"))
        request_id_token = current_request_id.set(request_id)
        # Only a body is validated against the payload limits.
        has_body = declared_length is not None or chunked
        limits_token = current_payload_limits.set(self.payload_limits) if has_body else None
        status = 0  # 0 until the response starts
        refused = False  # True once the edge has answered 413 in the app's stead
        received = 0

        async def send_tagged(message: Message) -> None:
            nonlocal status
            if refused:
                return  # the app answering a body it was cut off from; the 413 stands
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        async def refuse() -> None:
            nonlocal refused
            await self.too_large(scope, receive, send_tagged)
            refused = True

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    if not status:
                        await refuse()
                    # To the app, a body cut off is a client gone: it stops reading.
                    return _DISCONNECT
            return message

        try:
            if (
                declared_length is not None
                and declared_length.isdigit()
                and int(declared_length) > self.max_body_bytes
            ):
                self._match_route(scope)  # only so the log and metrics name the route
                await refuse()
            else:
                await self.app(scope, receive_counted if chunked else receive, send_tagged)
        except Exception:
            if not refused:
                log_unexpected_error(scope)
                if status:
                    raise
                status = 500
                await internal_error_response()(scope, receive, send_tagged)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            seconds = time.perf_counter() - started
            self.recorder.record(scope["method"], route, status or 500, seconds)
            log_request(scope["method"], route, status or 500, seconds, scope.get("path_params"))
            if limits_token is not None:
                current_payload_limits.reset(limits_token)
            current_request_id.reset(request_id_token)

    def _match_route(self, scope: Scope) -> None:
        """Put the route (and path params) the router would have found into ``scope``."""
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                return
