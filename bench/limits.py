"""How fast an oversized body is refused, what it costs the server, and what the edge costs.

    python -m bench.limits [--rounds N]

Three measurements, each beside its baseline from the same sitting:

1. A 50 MB body announced by ``Content-Length``, sent over a raw socket while the
   answer is read: time to the 413, bytes the client got to send, and the
   server's VmRSS before and after every round (``lrkeeper serve`` on SQLite).
   Baseline: a small PUT refused with a 422 on the same server.
2. The same 50 MB sent chunked (no ``Content-Length``), by httpx.
3. service.edge's cost per request without a body, in process: the middleware
   around an app that answers at once, with the JSON access line written to
   /dev/null, against the bare app.
"""

import argparse
import asyncio
import logging
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.service import Server, start_lrkeeper
from service.edge import EdgeMiddleware
from service.limits import PayloadLimits
from service.logs import JsonFormatter, RequestIdFilter
from service.metrics import create_metrics

FIFTY_MB = 50 * 1000 * 1000
CHUNK = b" " * 65536


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def declared_refusal(port: int) -> tuple[float, int, bytes]:
    """(ms to the whole answer, bytes of body sent by then, status line)."""
    connection = socket.create_connection(("127.0.0.1", port))
    head = (
        "PUT /v1/runs/bench-limits HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {FIFTY_MB}\r\n\r\n"
    )
    sent = 0
    sent_at_answer = 0

    def send_body() -> None:
        nonlocal sent
        try:
            while sent < FIFTY_MB:
                connection.sendall(CHUNK)
                sent += len(CHUNK)
        except OSError:
            pass

    started = time.perf_counter()
    connection.sendall(head.encode())
    sender = threading.Thread(target=send_body)
    sender.start()
    answer = b""
    try:
        while received := connection.recv(65536):
            answer += received
            if b"\r\n\r\n" in answer and not sent_at_answer:
                sent_at_answer = sent
    except ConnectionResetError:
        pass
    elapsed_ms = (time.perf_counter() - started) * 1000
    sender.join()
    connection.close()
    return elapsed_ms, sent_at_answer, answer.split(b"\r\n", 1)[0]


def chunked_refusal(client: httpx.Client) -> tuple[float, int, int]:
    """(ms to the answer, bytes the generator produced, status)."""
    produced = 0

    def chunks() -> Iterator[bytes]:
        nonlocal produced
        while produced < FIFTY_MB:
            produced += len(CHUNK)
            yield CHUNK

    started = time.perf_counter()
    response = client.put(
        "/v1/runs/bench-limits", content=chunks(), headers={"content-type": "application/json"}
    )
    return (time.perf_counter() - started) * 1000, produced, response.status_code


def small_refusal(client: httpx.Client) -> float:
    started = time.perf_counter()
    response = client.put("/v1/runs/bench-limits", json={"scheduler": {"type": "StepLR"}})
    assert response.status_code == 422, response.text
    return (time.perf_counter() - started) * 1000


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):7.2f}  max {max(values):7.2f}"


def measure_server(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="lrkeeper-bench-limits-") as scratch:
        workdir = Path(scratch)
        server: Server = start_lrkeeper(f"sqlite:///{workdir / 'bench.db'}", workdir)
        try:
            pid = server.process.pid
            port = int(server.base_url.rsplit(":", 1)[1])
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                small_refusal(client)  # warm
                rss_start = vm_rss_kb(pid)
                baseline, declared, chunked, sent, produced, rss = [], [], [], [], [], []
                for _ in range(rounds):
                    baseline.append(small_refusal(client))
                    elapsed, sent_bytes, status_line = declared_refusal(port)
                    assert b" 413 " in status_line, status_line
                    declared.append(elapsed)
                    sent.append(sent_bytes)
                    rss.append(vm_rss_kb(pid))
                    elapsed, produced_bytes, status = chunked_refusal(client)
                    assert status == 413, status
                    chunked.append(elapsed)
                    produced.append(produced_bytes)
                    rss.append(vm_rss_kb(pid))
        finally:
            server.stop()
    ratio = statistics.median(declared) / statistics.median(baseline)
    rss_line = f"start {rss_start / 1024:.1f}, max {max(rss) / 1024:.1f}, end {rss[-1] / 1024:.1f}"
    print(f"server, {rounds} rounds (ms)")
    print(f"  small PUT refused (422), baseline  {summary(baseline)}")
    print(f"  50 MB declared, 413                {summary(declared)}")
    print(f"  50 MB chunked (httpx), 413         {summary(chunked)}")
    print(f"  declared / baseline (median)       {ratio:.2f}x")
    print(f"  body sent before the 413 (MB)      max {max(sent) / 1e6:.1f} of {FIFTY_MB / 1e6:.0f}")
    print(f"  chunked body produced (MB)         max {max(produced) / 1e6:.1f} of 50")
    print(f"  server VmRSS (MiB)                 {rss_line}")


async def answer_at_once(_scope: object, _receive: object, send: object) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


def measure_edge(requests: int) -> None:
    handler = logging.StreamHandler(open("/dev/null", "w"))  # noqa: SIM115
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    access = logging.getLogger("lrkeeper.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    edge = EdgeMiddleware(
        answer_at_once,
        metrics=create_metrics(),
        max_body_bytes=1024 * 1024,
        payload_limits=PayloadLimits(),
        routes=[],
    )
    headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    scope = {"type": "http", "method": "GET", "path": "/v1/runs/x/lr", "headers": headers}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: object) -> None:
        return None

    async def per_request(app: object) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            await app(dict(scope), receive, send)  # type: ignore[operator]
        return (time.perf_counter() - started) / requests * 1e6

    async def both() -> tuple[list[float], list[float]]:
        bare, wrapped = [], []
        for _ in range(5):  # interleaved, so both share the sitting's noise
            bare.append(await per_request(answer_at_once))
            wrapped.append(await per_request(edge))
        return bare, wrapped

    bare, wrapped = asyncio.run(both())
    access.setLevel(logging.WARNING)
    without_log = asyncio.run(per_request_only(edge, scope, receive, send, requests))
    print(f"edge, in process, µs per request without a body ({requests} x 5)")
    print(f"  bare app                           {statistics.median(bare):6.2f}")
    print(f"  edge + bare app (JSON access line) {statistics.median(wrapped):6.2f}")
    print(f"  edge + bare app (access log off)   {without_log:6.2f}")
    own_cost = statistics.median(wrapped) - statistics.median(bare)
    print(f"  edge's own cost                    {own_cost:6.2f}")


async def per_request_only(
    app: object, scope: dict[str, object], receive: object, send: object, requests: int
) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        await app(dict(scope), receive, send)  # type: ignore[operator]
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    measure_server(args.rounds)
    measure_edge(args.requests)


if __name__ == "__main__":
    main()
