"""Fixtures of the run's unit tests: the in-memory store and a real client on a fake Hostwinds.

A module using ``client`` defines its own ``hostwinds`` fixture: the fleet it is about.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx

from cost_sync.hostwinds.client import HostwindsClient
from cost_sync.store.memory import MemoryStore
from tests.fakes import API_KEY, URL, FakeHostwinds


@pytest.fixture
def store() -> MemoryStore:
    """Rows naming the ten instances, never priced."""
    memory = MemoryStore()
    for n in range(1, 11):
        memory.add_row(str(n))
    return memory


@pytest_asyncio.fixture
async def client(hostwinds: FakeHostwinds) -> AsyncIterator[HostwindsClient]:
    """A real client whose HTTP goes to the fake."""

    async def no_sleep(_: float) -> None:
        return None

    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(URL).mock(side_effect=hostwinds)
        async with httpx.AsyncClient() as http:
            yield HostwindsClient(
                http, API_KEY, url=URL, requests_per_second=None, attempts=2, sleep=no_sleep
            )


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve a name or open a connection fails the test (schemas must be offline)."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the test tried to use the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
