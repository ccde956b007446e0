"""Whether a request comes from this machine: what protected mode (no tokens) lets in.

The peer is ``scope["client"]`` as uvicorn leaves it: its ProxyHeadersMiddleware
has already replaced a trusted proxy's address (``--forwarded-allow-ips``, by
default 127.0.0.1 and ::1) with the client named in ``X-Forwarded-For``. A proxy
on this machine relaying a remote client must not make that client local, so a
loopback peer is a loopback client only if every address its ``X-Forwarded-For``
and RFC 7239 ``Forwarded: for=`` headers name is loopback too (uvicorn reads
no ``Forwarded`` at all). Anything that cannot be read as an address — a unix
socket's missing peer, ``for=unknown``, an obfuscated ``for=_hidden``, a garbled
header — counts as remote: the answer must fail closed.
"""

import functools
import ipaddress

from starlette.types import Scope

_FORWARDED = b"forwarded"
_X_FORWARDED_FOR = b"x-forwarded-for"


def is_loopback_client(scope: Scope) -> bool:
    """True for a request from 127.0.0.0/8 or ::1 that no proxy relayed from elsewhere."""
    client = scope.get("client")
    if client is None or not is_loopback_address(client[0]):
        return False
    for name, value in scope["headers"]:
        if name == _X_FORWARDED_FOR:
            hops = value.decode("latin-1").split(",")
        elif name == _FORWARDED:
            hops = forwarded_for(value.decode("latin-1"))
        else:
            continue
        if not all(is_loopback_address(_host_of(hop)) for hop in hops):
            return False
    return True


def forwarded_for(header: str) -> list[str]:
    """The ``for=`` values of an RFC 7239 ``Forwarded`` header, quotes removed.

    An element without ``for=`` yields an empty string, which is no address: a hop
    the header does not name cannot be shown to be local.
    """
    nodes = []
    for element in header.split(","):
        node = ""
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.lower() == "for":
                node = value.strip().strip('"')
        nodes.append(node)
    return nodes


def _host_of(node: str) -> str:
    """``[::1]:4711`` → ``::1``, ``127.0.0.1:80`` → ``127.0.0.1``; anything else as it is."""
    node = node.strip()
    if node.startswith("["):
        return node[1 : node.find("]")] if "]" in node else node
    if node.count(":") == 1:
        return node.partition(":")[0]
    return node


@functools.lru_cache(maxsize=1024)
def is_loopback_address(host: str) -> bool:
    """127.0.0.0/8, ::1, and 127.x as an IPv4-mapped IPv6 address (a dual-stack socket)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # "testclient", "unknown", "_hidden", "" : not an address, so not local
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
