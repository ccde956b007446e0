"""Fixtures for the client's tests: an ``LRKeeper`` on the live server, unique run ids.

The live server (tests/conftest.py) is the real ``lrkeeper serve`` on SQLite and
on PostgreSQL. The fixture is not called ``client``: that name is the package
under test (and tests/conftest.py's plain httpx fixture).
"""

import re
import uuid
from collections.abc import Iterator

import pytest

from client import LRKeeper, RetryPolicy
from tests.conftest import LiveServer

# Long enough for a loaded two-core machine, short enough that a broken server fails fast.
TEST_DEADLINE_SECONDS = 60.0


@pytest.fixture
def keeper(live_server: LiveServer) -> Iterator[LRKeeper]:
    with LRKeeper(live_server.base_url, retry=RetryPolicy(deadline=TEST_DEADLINE_SECONDS)) as api:
        yield api


@pytest.fixture
def run_id(request: pytest.FixtureRequest) -> str:
    """A run id no other test uses, readable in the server's history."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:80]
    return f"{readable}-{uuid.uuid4().hex[:8]}"
