"""HEAD wherever GET is, and a 405's ``Allow`` naming every method of the path.

Starlette answers 405 from the first route whose path matches, with that route's
methods only: ``DELETE /v1/runs/x`` said ``Allow: PUT`` though GET and PATCH
live on the same path in other routes. The full list is worked out here, on the
405's own path, so a request that matches a route never pays for it.

FastAPI's routes take exactly the methods they are declared with, where
Starlette's own ``Route`` adds HEAD to every GET; ``answer_head_where_get`` adds
it back once, at app creation. uvicorn sends a HEAD answer's headers without its
body, so the route's code serves both.
"""

from collections.abc import Iterable

from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

# Every route answers OPTIONS with 405 today; a client still learns the methods from Allow.
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def answer_head_where_get(routes: Iterable[BaseRoute]) -> None:
    """Let every GET route take HEAD too (RFC 9110: a server that has GET should have HEAD)."""
    for route in routes:
        if isinstance(route, Route) and route.methods and "GET" in route.methods:
            route.methods.add("HEAD")


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """``Allow`` for a 405: the methods of every route whose path matches ``scope``'s."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.methods and route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods
    ordered = [method for method in _METHOD_ORDER if method in methods]
    return ", ".join(ordered + sorted(methods.difference(_METHOD_ORDER)))
