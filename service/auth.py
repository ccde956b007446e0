"""Access control for the /v1 routes: the one place it lives.

``require_read`` guards reading endpoints (POST /v1/preview included) and
``require_write`` every other write. For now both let every request through;
bearer tokens (``LRKEEPER_TOKENS``) and protected mode arrive in a later change
without touching a single route, since the routers already depend on these.
"""

from fastapi import Request


async def require_read(request: Request) -> None:
    """Allow the request to read; access control is not enforced yet."""


async def require_write(request: Request) -> None:
    """Allow the request to write; access control is not enforced yet."""
