"""Fixtures for the framework integrations, on tests/conftest.py's ``sqlite_server``.

What these tests prove is about the frameworks (what they call, in which order,
what they save), not the storage, which tests/client covers on both backends.
"""

import re
import uuid
from collections.abc import Iterator

import pytest

from client import LRKeeper, RetryPolicy
from tests.client.conftest import TEST_DEADLINE_SECONDS
from tests.conftest import LiveServer


@pytest.fixture
def keeper(sqlite_server: LiveServer) -> Iterator[LRKeeper]:
    with LRKeeper(sqlite_server.base_url, retry=RetryPolicy(deadline=TEST_DEADLINE_SECONDS)) as api:
        yield api


@pytest.fixture
def run_id(request: pytest.FixtureRequest) -> str:
    """A run id no other test uses, readable in the server's history."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:80]
    return f"{readable}-{uuid.uuid4().hex[:8]}"
