"""The one ASGI middleware around the app: it counts every answer and is the last safety net.

Counting and the safety net share one ``send`` wrapper because each wrapper costs
the hot path a closure call per message; one layer does both jobs for the price
of one. It sits outside the exception handlers, so a 500 it answers is counted too.
"""

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import UNMATCHED_ROUTE, AnswerRecorder, Metrics
from service.problems import internal_error_response, log_unexpected_error


class EdgeMiddleware:
    """Records each HTTP answer under its route template; an unhandled exception becomes a 500.

    The traceback goes to the log, never into the answer. A pure ASGI middleware
    rather than an ``Exception`` handler: Starlette re-raises after such a handler,
    which would log every failure twice.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.recorder = AnswerRecorder(metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0  # 0 until the response starts
        started = time.perf_counter()

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except Exception:
            log_unexpected_error(scope)
            if status:
                raise
            status = 500
            await internal_error_response()(scope, receive, send)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            self.recorder.record(scope["method"], route, status or 500, started)
