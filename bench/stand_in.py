"""A stand-in lrkeeper for bench.client: answers after a fixed delay, spending next to no CPU.

``python -m bench.stand_in --port P --delay-ms D``

It answers ``PUT /v1/runs/{id}`` with a run at step 0 and ``POST .../steps`` with a
step answer (the lr halved each step), each after ``D`` ms of sleeping — what a
trainer sees of a service on another machine: a round trip, and none of the
service's CPU on its own cores. Keep-alive HTTP/1.1 on asyncio, no dependencies;
only what RemoteLRScheduler sends is understood.
"""

import argparse
import asyncio
import json
import re

_STEP = re.compile(rb'"step":\s*(\d+)')


def run_body(run_id: str, groups: list[dict[str, object]]) -> dict[str, object]:
    return {
        "run_id": run_id,
        "status": "running",
        "step": 0,
        "lr": [group["lr"] for group in groups],
        "scheduler": {"type": "CosineAnnealingLR", "params": {"T_max": 100}},
        "param_groups": groups,
        "state": {},
        "metadata": {},
    }


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            await asyncio.sleep(delay)
            if method == "PUT":
                groups = json.loads(body)["param_groups"]
                answer = run_body(path.rsplit("/", 1)[1], groups)
            else:
                match = _STEP.search(body)
                step = int(match.group(1)) if match else 0
                answer = {"step": step, "lr": [0.01 / (1 + step)], "replayed": False, "events": []}
            payload = json.dumps(answer).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main(port: int, delay: float) -> None:
    server = await asyncio.start_server(
        lambda reader, writer: serve_connection(reader, writer, delay), "127.0.0.1", port
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.port, arguments.delay_ms / 1000))
