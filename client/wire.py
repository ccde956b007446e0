"""The step reports' own wire: ``POST /steps`` on one kept-alive socket, read by ``http.client``.

The pipelined scheduler's background sender spends its time here, in the training
process, holding the GIL the training thread also needs. On a kept-alive
connection to a local service the standard library's ``http.client`` costs about
a third of httpx's client CPU per call (bench/results.md, bench.client's line on
"the pipelined sender's wire": 448 µs against 1,518 µs per step report), so the sender
speaks ``http.client`` (its response parser, and one write per request of our own)
— where that is the same conversation httpx would have had:
a plain ``http://`` URL with no proxy configured in the environment, and no
``httpx.Client`` injected by the caller. Anywhere else (TLS, a proxy httpx would
honour, a test's transport) it reports through the ``LRKeeper`` itself.

Either way a report is retried by the client's own policy
(:func:`~client.api.call_with_retries`) and a refusal becomes the same typed
exception (:func:`~client.api.service_error`).
"""

import http.client
import json
import socket
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol, SupportsFloat
from urllib.parse import urlsplit

from client.api import (
    USER_AGENT,
    JSONObject,
    LRKeeper,
    RetryPolicy,
    StepAnswer,
    call_with_retries,
    encode_floats,
    run_path,
    service_error,
    step_report_body,
    until_decided,
    wait_query,
)
from client.errors import TransportError

# What a kept-alive connection the server has since closed (uvicorn drops idle ones after
# 5 s) fails with at its next request. The request never reached the application, so it
# is resent at once on a new connection instead of waiting out a retry backoff.
_CLOSED_WHILE_IDLE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


class StepReporter(Protocol):
    """What the background sender needs: one way to report a step (waiting, on a ranked
    run, for the step's decision as :meth:`LRKeeper.report_step` does), and to let go of it."""

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
    ) -> StepAnswer: ...

    def close(self) -> None: ...


def step_reporter_for(keeper: LRKeeper) -> StepReporter:
    """A :class:`StepConnection` of its own when that talks to the service exactly as
    ``keeper`` would; otherwise ``keeper`` itself (httpx clients are thread-safe)."""
    if keeper.http_injected or not _direct_http(keeper.url):
        return _SharedClient(keeper)
    return StepConnection(keeper.url, keeper.token, timeout=keeper.timeout, retry=keeper.retry)


class StepConnection:
    """``POST /v1/runs/{run_id}/steps`` on one kept-alive connection, retried by ``retry``.

    Not thread-safe: it belongs to the one thread that sends (the scheduler's sender).
    """

    def __init__(self, url: str, token: str | None, *, timeout: float, retry: RetryPolicy) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"StepConnection speaks plain http://, not {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = retry
        self._host = parts.hostname
        self._port = parts.port or 80
        self._base_path = parts.path.rstrip("/")
        head = [
            f"Host: {_host_header(parts.hostname, parts.port)}",
            "Accept: application/json, application/problem+json",
            "Accept-Encoding: identity",
            "Content-Type: application/json",
            f"User-Agent: {USER_AGENT}",
        ]
        if token:
            head.append(f"Authorization: Bearer {token}")
        self._head = "".join(f"{line}\r\n" for line in head)
        self._socket: socket.socket | None = None

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
        """What :meth:`LRKeeper.report_step <client.api.LRKeeper.report_step>` answers,
        waiting for a ranked step's decision the same way."""
        body = step_report_body(step, metrics, worker, rank)
        content = json.dumps(encode_floats(body), allow_nan=False).encode()
        path = f"{self._base_path}{run_path(run_id)}/steps"

        def send(poll: float | None) -> JSONObject:
            target = path if poll is None else f"{path}?wait={wait_query(poll)}"

            def attempt(timeout: float) -> Any:
                return self._post(target, content, timeout)

            # The read timeout covers the time the service was asked to hold the request.
            timeout = self.timeout + (poll or 0.0)
            answer: JSONObject = call_with_retries(f"POST {target}", attempt, self.retry, timeout)
            return answer

        decision = until_decided(
            step, send, first_poll=None, wait=wait, ranks_timeout_s=ranks_timeout_s
        )
        return StepAnswer.from_json(decision)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _post(self, path: str, content: bytes, timeout: float) -> Any:
        operation = f"POST {path}"
        # Head and body in one write, on a socket without Nagle's delay: http.client's own
        # request() writes them apart, a second system call (and a second segment the
        # server's wakeup may see alone) for every report.
        request = (
            f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(content)}\r\n\r\n"
        ).encode() + content
        while True:
            reused = self._socket is not None
            try:
                connection = self._connect(timeout)
                connection.sendall(request)
                response = http.client.HTTPResponse(connection, method="POST")
                response.begin()
                payload = response.read()
            except (OSError, http.client.HTTPException) as failure:
                self.close()
                if reused and isinstance(failure, _CLOSED_WHILE_IDLE):
                    continue  # at most once: the next connection is a new one
                raise TransportError(
                    f"{operation}: {type(failure).__name__}: {failure}"
                ) from failure
            break
        if response.will_close:
            self.close()
        if not 200 <= response.status < 300:
            raise service_error(
                response.status,
                response.reason,
                payload,
                response.getheader("Retry-After"),
                method="POST",
                url=f"http://{self._host}:{self._port}{path}",
            )
        try:
            return json.loads(payload)
        except ValueError as failure:
            # A body cut short by a dying server; worth another attempt.
            raise TransportError(f"{operation}: unreadable answer: {failure}") from failure

    def _connect(self, timeout: float) -> socket.socket:
        """The kept-alive connection with this attempt's timeout, opened if there is none."""
        if self._socket is None:
            self._socket = socket.create_connection((self._host, self._port), timeout)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self._socket.settimeout(timeout)
        return self._socket


class _SharedClient:
    """The scheduler's ``LRKeeper`` as a reporter; closing it is its owner's business."""

    def __init__(self, keeper: LRKeeper) -> None:
        self._keeper = keeper

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
        return self._keeper.report_step(
            run_id,
            step,
            metrics,
            worker=worker,
            rank=rank,
            wait=wait,
            ranks_timeout_s=ranks_timeout_s,
        )

    def close(self) -> None:
        pass


def _direct_http(url: str) -> bool:
    """Plain HTTP that httpx would not send through a proxy (it honours the environment's
    HTTP_PROXY / ALL_PROXY): then a bare connection is the same conversation."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    proxies = urllib.request.getproxies_environment()
    if "http" not in proxies and "all" not in proxies:
        return True
    return bool(urllib.request.proxy_bypass_environment(parts.hostname, proxies))


def _host_header(hostname: str, port: int | None) -> str:
    """``Host`` as RFC 9112 wants it: no credentials, IPv6 literals in brackets."""
    host = f"[{hostname}]" if ":" in hostname else hostname
    return host if port is None else f"{host}:{port}"
