"""Fixtures for the framework integrations: one live ``lrkeeper serve`` per module, on SQLite.

What these tests prove is about the frameworks (what they call, in which order,
what they save), not the storage, which tests/client covers on both backends; one
backend keeps the real frameworks' start-up cost paid once per module.
"""

import re
import uuid
from collections.abc import Iterator

import pytest

from client import LRKeeper, RetryPolicy
from tests.client.conftest import TEST_DEADLINE_SECONDS
from tests.conftest import LiveServer, ServerPool


@pytest.fixture(scope="module")
def lr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    pool = ServerPool(tmp_path_factory.mktemp("integrations"))
    try:
        yield pool("sqlite")
    finally:
        pool.close()


@pytest.fixture
def keeper(lr_server: LiveServer) -> Iterator[LRKeeper]:
    with LRKeeper(lr_server.base_url, retry=RetryPolicy(deadline=TEST_DEADLINE_SECONDS)) as api:
        yield api


@pytest.fixture
def run_id(request: pytest.FixtureRequest) -> str:
    """A run id no other test uses, readable in the server's history."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:80]
    return f"{readable}-{uuid.uuid4().hex[:8]}"
