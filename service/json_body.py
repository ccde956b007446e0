"""Reading a JSON request body: its media type, then its depth, then UTF-8, then the parse.

Everything that reads a body recurses once per level of nesting: Python's json
decoder (a body 5,000 levels deep is a ``RecursionError`` there), then
service.limits' measure of metadata, then the float codec (metadata 600 deep was
a 500 in ``encode_floats``). So the depth is bounded first, on the raw bytes,
before anything recurses; every later walk may then recurse freely, since
``LRKEEPER_MAX_JSON_DEPTH`` is at most ``MAX_JSON_DEPTH_CEILING``.

The depth scan costs two ``bytes.count`` calls for any body with no more ``[``
and ``{`` than the limit, which is every body a client sends in practice (a
step report has two). Only a body with more openers is scanned for real: the
strings are cut out, the brackets kept, innermost pairs removed a few times, and
the rest measured run by run, all in C-speed loops (bench/json_depth.py: 0.5-0.8x
a ``json.loads`` of the same body; ~8 ms for 1 MiB of unclosed ``[``, which
``json.loads`` gives up on at once).

One character is refused in any string of a body, key or value: U+0000, which
PostgreSQL's ``text`` and ``jsonb`` cannot store (a 500 from the database before).
It is refused on SQLite too, so a run means the same on both; the search is one
``in`` over the bytes, and only a body that holds the escape is walked to name the
field (a 422, like any field at fault).

Malformed JSON, bytes that are not UTF-8 and too deep a nesting are one problem,
``InvalidJson`` (400), whose detail says which. A body sent as anything but
``application/json`` (or ``application/<something>+json``) is a 415: FastAPI
would otherwise hand the raw bytes to pydantic and answer a 422 about a "valid
dictionary" the client never sent.

:class:`JsonBodyRoute` puts this in front of a route with a body (FastAPI's
documented way to change how a route reads its request); FastAPI then finds the
body already parsed.
"""

import json
import re
from collections.abc import Callable, Coroutine
from itertools import accumulate
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from service.limits import current_payload_limits
from service.problems import InvalidJson, InvalidRequest, UnsupportedMediaType

# A JSON string, escapes included. Outside strings, valid JSON has no quote, so the
# leftmost match is always a whole string; in anything else the count only grows.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_RUN = re.compile(rb"\[+|\]+")
# U+0000 as JSON writes it, after an even number of backslashes (``\\u0000`` is text).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_NUL = "\x00"
# Each round removes every innermost pair, so a level; a few cut the runs left to count.
_PAIR_ROUNDS = 4


def nesting_depth(body: bytes) -> int:
    """Levels of arrays and objects in ``body``: exact for JSON; for anything else, never less
    than a parser descends before it finds the body broken.

    Brackets inside strings do not count; an opener never closed counts as a level.
    """
    brackets = _STRING.sub(b"", body).translate(_AS_SQUARE, _NOT_A_BRACKET)
    rounds = 0
    while brackets and rounds < _PAIR_ROUNDS:
        # Every deepest point is an opener right before its closer: each round is one level.
        reduced = brackets.replace(b"[]", b"")
        if len(reduced) == len(brackets):
            break
        brackets, rounds = reduced, rounds + 1
    if not brackets:
        return rounds
    lengths = [len(run) for run in _RUN.findall(brackets)]
    first_closer = 1 if brackets[0] == ord("]") else 0
    # Runs alternate; closers count down. A body starting with a closer has depth 0 there.
    lengths[1 - first_closer :: 2] = [-length for length in lengths[1 - first_closer :: 2]]
    return max(0, max(accumulate(lengths))) + rounds


def nested_deeper_than(body: bytes, max_depth: int) -> bool:
    """Whether ``body`` holds more than ``max_depth`` levels; two ``count`` calls when it cannot."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    return nesting_depth(body) > max_depth


def parse_json_body(body: bytes, max_depth: int) -> Any:
    """The JSON value in ``body``, or ``InvalidJson`` saying what is wrong with it.

    The bare tokens ``NaN``, ``Infinity`` and ``-Infinity`` are accepted (API.md:
    Python's ``json`` writes them); the encoding is UTF-8, as RFC 8259 requires.
    """
    if nested_deeper_than(body, max_depth):
        raise InvalidJson(
            f"the request body is nested deeper than LRKEEPER_MAX_JSON_DEPTH ({max_depth})",
            limit="max_json_depth",
            max=max_depth,
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidJson(
            f"the request body is not UTF-8: byte 0x{body[error.start]:02x} "
            f"at position {error.start}"
        ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidJson(f"the request body is not valid JSON: {error}") from None
    except ValueError as error:
        # An integer of more than 4,300 digits (Python's int_max_str_digits).
        raise InvalidJson(f"the request body is not valid JSON: {error}") from None
    if b"\\u0000" in body and _NUL_ESCAPE.search(body):
        loc = ["body", *_path_to_nul(value)]
        message = "a string may not hold U+0000 (the databases cannot store it)"
        where = ".".join(str(part) for part in loc)
        raise InvalidRequest(f"{where}: {message}", errors=[{"loc": loc, "msg": message}])
    return value


def _path_to_nul(value: Any) -> list[str | int]:
    """Where the first string holding U+0000 is (a key: the path to it, the key last).

    Recursive: the body has passed the depth check, so this is at most that deep.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if _NUL in key:
                return [key]
            inner = _path_to_nul(item)
            if inner or (isinstance(item, str) and _NUL in item):
                return [key, *inner]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            inner = _path_to_nul(item)
            if inner or (isinstance(item, str) and _NUL in item):
                return [index, *inner]
    return []


def require_json_media_type(content_type: str | None) -> None:
    """Refuse a body not declared as JSON, naming what was declared."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    declared = f"Content-Type {media_type}" if media_type else "no Content-Type"
    raise UnsupportedMediaType(
        f"the request body must be application/json; it came with {declared}"
    )


class JsonBodyRequest(Request):
    """A request whose ``json()`` is :func:`parse_json_body`, bounded by the app's limits."""

    async def json(self) -> Any:
        if not hasattr(self, "_parsed_body"):
            max_depth = current_payload_limits.get().max_json_depth
            self._parsed_body = parse_json_body(await self.body(), max_depth)
        return self._parsed_body


class JsonBodyRoute(APIRoute):
    """A route that reads its JSON body with :class:`JsonBodyRequest` before FastAPI does.

    Read here, outside FastAPI's own parse: FastAPI turns any exception there other
    than its own into a bare 400 ("There was an error parsing the body"), which
    would lose the problem raised. Routes without a body are left as they are.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def read_json_then_handle(request: Request) -> Response:
            json_request = JsonBodyRequest(request.scope, request.receive)
            # An empty body is left to FastAPI, which names the missing field (422).
            if await json_request.body():
                require_json_media_type(json_request.headers.get("content-type"))
                await json_request.json()
            return await handler(json_request)

        return read_json_then_handle
